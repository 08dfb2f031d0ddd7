"""What profiling holds in memory, as one formula, and the check that refuses a run before it starts.

With L layers, M modules per layer, K = max_distance, T steps, R = number of prune ratios (0 without pruning),
rows = batch rows summed over all CFG streams, N tokens per row, C channels of the widest module output, d the sketch
dimension, W = C in exact mode (``sketch_dim=0``) or min(C, d) sketched, s = bytes per stored element (exact:
``itemsize``, the model's or 2 in half precision; sketched: 4, float32):

    ring         = min(K, T) * L * M * rows * N * W * s       the last K outputs (or sketches) of every module
    norms        = min(K, T) * L * M * rows * N * 8           their per-token squared norms, float64
    accumulators = T * L * M * K * (2 + R) * 8                sums of E_c, E_p and counts, float64
                 + T * L * M * (K + 1) * rows * 8             inner products per row (compensation_fit), per run
    projections  = V * C * d * 4 if sketched and C > d, else 0  one projection matrix per output width (V widths)
    working      = rows * N * C * 4 * 2 (exact)               float32 copies made while one output is compared
                   rows * N * (C + W) * 4 + rows * N * 8 (sketched)

``ring + norms + accumulators + projections`` is what the recorder holds between calls (``held_bytes`` of
``SensitivityRecorder`` counts exactly these tensors; tests compare both); ``working`` is an upper bound of what
one ``observe`` call allocates and frees again. With outputs of one width C the ring, norms and accumulators are
exact (V = 1); outputs of different widths per module (Flux's fused single blocks: attention output and MLP
activation) make the formula with the widest C and V = M an upper bound (what the pre-check uses).
The ring is kept on the host in half precision in exact mode when the model is on a GPU
(``half_precision_ring=None``); sketches, norms and the E_c/E_p sums stay on the output's device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .layout import ModelLayout
from .sketch import sketch_width


if TYPE_CHECKING:
    from .profiler import ProfileConfig

ACCUMULATOR_ITEMSIZE = 8  # float64
SKETCH_ITEMSIZE = 4  # float32
MB = 2**20


@dataclass(frozen=True)
class ProfilingMemory:
    """Bytes of each buffer profiling uses (see the module docstring for the formula)."""

    ring: int
    norms: int
    accumulators: int
    projections: int
    working: int

    @property
    def held(self) -> int:
        """What the recorder keeps between calls."""
        return self.ring + self.norms + self.accumulators + self.projections

    @property
    def total(self) -> int:
        return self.held + self.working

    def parts(self) -> dict[str, int]:
        return {
            "ring": self.ring,
            "norms": self.norms,
            "accumulators": self.accumulators,
            "projections": self.projections,
            "working": self.working,
        }

    def describe(self) -> str:
        return ", ".join(f"{name} {value / MB:.1f} MB" for name, value in self.parts().items())


def profiling_memory(
    layout: ModelLayout,
    config: ProfileConfig,
    rows: int,
    tokens: int,
    channels: int,
    itemsize: int,
    steps: int,
    widths: int = 1,
) -> ProfilingMemory:
    """Every buffer profiling a run of ``steps`` steps holds, by the formula of the module docstring."""
    sketched = config.sketch_dim > 0
    width = sketch_width(channels, config.sketch_dim)
    stored = SKETCH_ITEMSIZE if sketched else itemsize
    cells = layout.num_layers * layout.num_modules
    entries = min(config.max_distance, steps) * cells * rows * tokens  # token vectors the ring holds
    ratios = len(config.prune_ratios) if config.measure_pruning else 0
    if sketched:
        working = rows * tokens * ((channels + width) * SKETCH_ITEMSIZE + ACCUMULATOR_ITEMSIZE)
    else:
        working = 2 * rows * tokens * channels * SKETCH_ITEMSIZE
    return ProfilingMemory(
        ring=entries * width * stored,
        norms=entries * ACCUMULATOR_ITEMSIZE,
        accumulators=steps
        * cells
        * (config.max_distance * (2 + ratios) + (config.max_distance + 1) * rows)
        * ACCUMULATOR_ITEMSIZE,
        projections=widths * channels * config.sketch_dim * SKETCH_ITEMSIZE if width < channels else 0,
        working=working,
    )


def profiling_bytes(
    layout: ModelLayout,
    config: ProfileConfig,
    rows: int,
    tokens: int,
    channels: int,
    itemsize: int,
    steps: int,
    widths: int = 1,
) -> int:
    """Total bytes of :func:`profiling_memory` (held buffers plus the working copies of one call)."""
    return profiling_memory(layout, config, rows, tokens, channels, itemsize, steps, widths).total


def check_memory(
    layout: ModelLayout,
    config: ProfileConfig,
    rows: int,
    tokens: int,
    channels: int,
    itemsize: int,
    steps: int,
    widths: int = 1,
) -> ProfilingMemory:
    """Raise before profiling when its buffers would exceed ``config.memory_limit_mb``; returns what it will use."""
    need = profiling_memory(layout, config, rows, tokens, channels, itemsize, steps, widths)
    if need.total <= config.memory_limit_mb * MB:
        return need
    what = (
        f"sketched to {sketch_width(channels, config.sketch_dim)} numbers per token"
        if config.sketch_dim
        else f"kept whole ({channels} channels per token, sketch_dim=0)"
    )
    fixes = ["lower max_distance", "profile a smaller latent or batch"]
    fixes.insert(0, "lower sketch_dim" if config.sketch_dim else "sketch the outputs (e.g. sketch_dim=64)")
    raise ValueError(
        f"Profiling this run needs {need.total / MB:.0f} MB ({need.describe()}) for the last "
        f"{config.max_distance} outputs of {layout.num_layers} layers x {layout.num_modules} modules x {rows} rows "
        f"x {tokens} tokens, {what}, over {steps} steps; that is above memory_limit_mb={config.memory_limit_mb:.0f}. "
        f"Fix: raise memory_limit_mb to at least {need.total / MB + 1:.0f}, or {', or '.join(fixes)}."
    )
