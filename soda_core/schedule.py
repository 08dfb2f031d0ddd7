"""The plan SODA samples with: which steps compute fully (anchors) and, on the reuse steps in between, what share
of each module's image tokens is recomputed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from .layout import ModelLayout


@dataclass(frozen=True)
class Schedule:
    """A SODA schedule over one sampling run's steps.

    ``recompute[t, l, m]`` is 1 on anchor steps (full compute, cache refreshed), 0 where module ``m`` of layer ``l``
    reuses its cached output, and a value in (0, 1) where that share of the image tokens is recomputed and the rest
    comes from the cache. Text and reference tokens are always recomputed on partial steps.
    """

    layout: ModelLayout
    sigmas: torch.Tensor  # (T+1,) float64
    anchors: tuple[int, ...]
    recompute: torch.Tensor  # (T, L, M) float32
    predicted_flops_ratio: float = 1.0
    predicted_error: float = 0.0
    notes: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    # per cell on reuse steps: predictor code (compensation.PREDICTORS; 0 = plain reuse) and GOC's coefficient
    compensation: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int8))  # (T, L, M) or empty
    weights: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (T, L, M) float32 or empty
    predicted_wall_ratio: float | None = None  # planned for wall time: the profile's TimeModel's speed-up

    def __post_init__(self) -> None:
        steps = self.sigmas.numel() - 1
        problems = []
        if not self.anchors or self.anchors[0] != 0:
            problems.append(f"the first step must be an anchor, got anchors {list(self.anchors)}")
        if any(b <= a for a, b in zip(self.anchors, self.anchors[1:], strict=False)) or self.anchors[-1] >= steps:
            problems.append(f"anchors must increase within 0..{steps - 1}, got {list(self.anchors)}")
        if self.recompute.shape != (steps, self.layout.num_layers, self.layout.num_modules):
            problems.append(f"recompute has shape {tuple(self.recompute.shape)} for {steps} steps")
        elif not problems and not bool((self.recompute[list(self.anchors)] == 1).all()):
            problems.append("recompute must be 1 on every anchor step")
        if bool(((self.recompute < 0) | (self.recompute > 1)).any()):
            problems.append("recompute ratios must lie in [0, 1]")
        if self.compensation.numel() and (
            self.compensation.shape != self.recompute.shape or self.weights.shape != self.recompute.shape
        ):
            problems.append(
                f"compensation {tuple(self.compensation.shape)} and weights {tuple(self.weights.shape)} must have "
                f"the shape of recompute {tuple(self.recompute.shape)}"
            )
        elif self.compensation.numel() and bool(((self.compensation < 0) | (self.compensation > 3)).any()):
            problems.append("compensation codes must lie in 0..3 (none, taylor1, taylor2, goc)")
        if problems:
            raise ValueError("Invalid SODA schedule: " + "; ".join(problems) + ".")

    @classmethod
    def full_compute(cls, layout: ModelLayout, sigmas: torch.Tensor) -> Schedule:
        """Every step is an anchor: sampling is exactly the unpatched model's."""
        steps = sigmas.numel() - 1
        recompute = torch.ones(steps, layout.num_layers, layout.num_modules)
        return cls(layout, sigmas.double().cpu(), tuple(range(steps)), recompute, notes=("full compute",))

    @classmethod
    def uniform(cls, layout: ModelLayout, sigmas: torch.Tensor, interval: int) -> Schedule:
        """A full step every ``interval`` steps and pure reuse in between (FORA-style static caching)."""
        if interval < 1:
            raise ValueError(f"interval={interval}: expected a full step every 1 or more steps.")
        steps = sigmas.numel() - 1
        anchors = tuple(range(0, steps, interval))
        recompute = torch.zeros(steps, layout.num_layers, layout.num_modules)
        recompute[list(anchors)] = 1.0
        return cls(layout, sigmas.double().cpu(), anchors, recompute, notes=(f"uniform interval {interval}",))

    @property
    def steps(self) -> int:
        return self.sigmas.numel() - 1

    @property
    def anchor_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.steps, dtype=torch.bool)
        mask[list(self.anchors)] = True
        return mask

    @property
    def compensated(self) -> bool:
        """True when some reuse cell is served by a forecast (``compensation``), not by its cached value."""
        return bool(self.compensation.numel()) and bool((self.compensation > 0).any())

    def compensated_cells(self) -> dict[str, int]:
        """How many reuse cells each predictor serves."""
        from .compensation import PREDICTORS

        if not self.compensated:
            return {}
        reused = ~self.anchor_mask[:, None, None].expand_as(self.recompute)
        codes = self.compensation[reused]
        return {name: int((codes == i).sum()) for i, name in enumerate(PREDICTORS)}

    def plain_reuse_reasons(self, max_distance: int) -> dict[str, int]:
        """Why the reuse cells no forecast serves are plain reuse, from the anchors around each and the profile's
        longest reuse distance K ({} without compensation):

        ``first_interval``   only one anchor before the step: every forecast needs two
        ``beyond_window``    distance k to the last anchor plus the interval p before it exceeds K: the profiler
                             never held both anchors' outputs, so no forecast error was measured there
        ``measured_better``  plain reuse had the least measured error (or GOC's weight is 0: an inflection)
        """
        from .compensation_plan import previous_intervals

        if not self.compensated:
            return {}
        reused = (~self.anchor_mask).nonzero().flatten()  # (n,) reuse steps
        known = torch.tensor(self.anchors)
        k = reused - known[torch.searchsorted(known, reused, right=True) - 1]  # (n,) distance to the last anchor
        p = previous_intervals(self.anchors, reused)  # (n,) 0: one anchor before
        plain = (self.compensation[reused] == 0).flatten(1).sum(dim=1)  # (n,) plain cells per reuse step
        first, beyond = p == 0, (p > 0) & (k + p > max_distance)
        return {
            "first_interval": int(plain[first].sum()),
            "beyond_window": int(plain[beyond].sum()),
            "measured_better": int(plain[~first & ~beyond].sum()),
        }

    def distance(self, step: int) -> int:
        """Steps since the last anchor (0 on an anchor step)."""
        last = max(a for a in self.anchors if a <= step)
        return step - last

    def needs_cache_after(self, step: int) -> bool:
        """True when ``step`` is an anchor followed by at least one reuse step."""
        return step + 1 < self.steps and (step + 1) not in self.anchors

    def summary(self) -> str:
        """This schedule in short lines of user words: its steps, full and reused steps, predicted speed-up."""
        reused = ~self.anchor_mask
        partial = ((self.recompute > 0) & (self.recompute < 1)).flatten(1).any(dim=1) & reused  # (T,)
        lines = [
            f"steps: {self.steps}",
            f"full steps: {len(self.anchors)} (steps {', '.join(str(a) for a in self.anchors)})",
            f"reused steps: {int(reused.sum())}"
            + (f" (tokens partly recomputed on {int(partial.sum())} of them)" if bool(partial.any()) else ""),
            f"predicted speedup: {self.predicted_flops_ratio:.2f}x (transformer FLOPs)"
            if self.predicted_wall_ratio is None
            else f"predicted speedup: {self.predicted_wall_ratio:.2f}x wall time (measured block times), "
            f"{self.predicted_flops_ratio:.2f}x transformer FLOPs",
            f"predicted error: {self.predicted_error:.4f} (summed sensitivity)",
            *self.notes,
        ]
        cells = self.compensated_cells()
        if cells:
            lines.append("compensated reuse cells: " + ", ".join(f"{n} {c}" for n, c in cells.items() if c))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout.to_json(),
            "sigmas": self.sigmas.tolist(),
            "anchors": list(self.anchors),
            "recompute": self.recompute.tolist(),
            "predicted_flops_ratio": self.predicted_flops_ratio,
            "predicted_error": self.predicted_error,
            "notes": list(self.notes),
            "config": self.config,
            "compensation": self.compensation.tolist(),
            "weights": self.weights.tolist(),
            **({} if self.predicted_wall_ratio is None else {"predicted_wall_ratio": self.predicted_wall_ratio}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            layout=ModelLayout.from_json(data["layout"]),
            sigmas=torch.tensor(data["sigmas"], dtype=torch.float64),
            anchors=tuple(int(a) for a in data["anchors"]),
            recompute=torch.tensor(data["recompute"], dtype=torch.float32),
            predicted_flops_ratio=float(data["predicted_flops_ratio"]),
            predicted_error=float(data["predicted_error"]),
            notes=tuple(data.get("notes", ())),
            config=dict(data.get("config", {})),
            compensation=torch.tensor(data.get("compensation", []), dtype=torch.int8),
            weights=torch.tensor(data.get("weights", []), dtype=torch.float32),
            predicted_wall_ratio=None
            if data.get("predicted_wall_ratio") is None
            else float(data["predicted_wall_ratio"]),
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json())
