"""What a SODA run reports (steps, full steps, FLOPs, wall time, cache use; the nodes' summaries and the log line),
and the step lookup that maps a model call's sigma onto the run's grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def step_of_sigma(sigmas: Sequence[float], sigma: float) -> int:
    """Index of the sampling step whose interval [sigma_{i+1}, sigma_i] holds ``sigma``; ``sigmas`` is the run's
    decreasing grid (T+1 values, plain floats so the lookup touches no tensor).

    Samplers that call the model between two sigmas (Heun, DPM-2) get the step that interval belongs to; a call at
    exactly sigma_i belongs to step i.
    """
    threshold = sigma - 1e-5 * max(1.0, abs(sigma))
    step = 0
    for i, value in enumerate(sigmas[:-1]):
        if value < threshold:
            break
        step = i
    return step


@dataclass
class RunReport:
    """What a run did, for the log line and the nodes' summaries."""

    steps: int = 0
    full_steps: int = 0
    model_calls: int = 0
    flops: float = 0.0
    full_flops: float = 0.0
    seconds: float = 0.0
    reused_modules: int = 0
    partial_modules: int = 0
    full_modules: int = 0
    cache_misses: int = 0
    notes: list[str] = field(default_factory=list)
    anchors: tuple[int, ...] = ()
    step_seconds: list[float] = field(default_factory=list)  # wall time from each step's first model call on
    compensation_bytes: int = 0  # peak memory of the older anchors' outputs compensation keeps (beyond the cache)

    @property
    def flops_ratio(self) -> float:
        return self.full_flops / self.flops if self.flops else 1.0

    def measured_speedup(self) -> float:
        """Wall-time speed-up against this run's own full steps: ``steps x (mean time of a full step) / time of all
        steps`` (a full step that fills the cache costs a little more than an unpatched one: a lower bound)."""
        timed = [self.step_seconds[a] for a in self.anchors if a < len(self.step_seconds) and self.step_seconds[a] > 0]
        total = sum(self.step_seconds)
        if not timed or total <= 0:
            return 1.0
        return self.steps * (sum(timed) / len(timed)) / total

    def summary(self) -> str:
        return (
            f"{self.model_calls} model calls over {self.steps} steps ({self.full_steps} full) in {self.seconds:.1f} s; "
            f"transformer FLOPs {self.flops / 1e9:.2f} G of {self.full_flops / 1e9:.2f} G full "
            f"({self.flops_ratio:.2f}x); modules full/partial/reused: "
            f"{self.full_modules}/{self.partial_modules}/{self.reused_modules}"
            + (f"; {self.cache_misses} cache misses computed fully" if self.cache_misses else "")
            + (
                f"; compensation kept {self.compensation_bytes / 2**20:.2f} MB of older anchor outputs"
                if self.compensation_bytes
                else ""
            )
        )
