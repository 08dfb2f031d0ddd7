"""Wall time of a SODA run on the profiling device: the ``TimeModel`` the planner prices schedules with when it plans
for a wall-time speed-up (``PlanConfig.speedup_in = "wall"``).

FLOPs say little about wall time where a step has fixed costs (embedders, the sampler, Python) or where a partial
recompute's gathers and scatters cost more than its matrix products (CPUs, small batches). So the profiling run
also times the real blocks on its own inputs (``timing_probe``) and keeps, per model call:

  * ``block[l]``: a plain full call of block ``l`` (what an anchor pays);
  * ``reuse[l]``: a call of block ``l`` that reuses every module (modulation, cache reads: what a reuse step pays);
  * ``full[l, m]``: computing module ``m`` in full while the rest of the block is reused, over ``reuse[l]``;
  * ``fixed[l, m] + r·per_ratio[l, m]``: a partial recompute of the share ``r`` of its image tokens, over
    ``reuse[l]`` (a line fitted through a few ratios);
  * ``record[l]``: what a recording full call costs over a plain one (filling the cache);
  * ``base``: everything else a model call costs (unserved blocks, embedders, final layer, the sampler's work).

``cost_model`` turns these into a ``FlopModel`` whose unit is seconds, so the DP and UAS price schedules in time
with the same code that prices them in FLOPs: an anchor costs ``base + Σ block``, a reuse step
``base + Σ reuse``, a partial recompute ``fixed + r·per_ratio`` on top. ``partial_limit`` is the ratio above which a
partial recompute of a module costs as much as computing it in full; the wall planner never goes there.

Times are seconds of one model call of the profiled run (its batch and resolution); only their ratios matter to
the planner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .flops import FlopModel


Tensor = torch.Tensor
TIME_KEYS = ("time.full", "time.fixed", "time.per_ratio", "time.layers", "time.scalars")


@dataclass(frozen=True)
class TimeModel:
    """Measured seconds of one model call's parts (see the module docstring); (L, M) and (L,) float64 tensors."""

    full: Tensor  # (L, M) a module computed in full, the rest of the block reused, over reuse
    fixed: Tensor  # (L, M) a partial recompute: fixed + r * per_ratio over reuse
    per_ratio: Tensor  # (L, M)
    reuse: Tensor  # (L,) a block call reusing every module
    block: Tensor  # (L,) a plain full block call
    record: Tensor  # (L,) a recording full call over a plain one
    base: float  # a model call outside the served blocks

    @property
    def step_full(self) -> float:
        """Seconds of a full-compute model call (no recording)."""
        return self.base + float(self.block.sum())

    def cost_model(self, flops: FlopModel) -> FlopModel:
        """This model as a ``FlopModel`` in seconds (modules ``flops`` has no FLOPs for stay absent: 0).

        ``base`` is a reuse step (``base + Σ reuse``); each layer's ``block - reuse`` is spread over its modules in
        the proportion of their measured ``full``, so an anchor costs exactly ``base + Σ block``."""
        present = flops.full > 0  # (L, M)
        full = torch.where(present, self.full.double().clamp(min=0.0), 0.0)
        extra = (self.block - self.reuse).double().clamp(min=0.0)  # (L,)
        total = full.sum(dim=1, keepdim=True)  # (L, 1)
        even = present.double() / present.double().sum(dim=1, keepdim=True).clamp(min=1.0)
        share = torch.where(total > 0, full / total.clamp(min=1e-30), even)
        fixed = torch.where(present, self.fixed.double().clamp(min=0.0), 0.0)
        per_ratio = torch.where(present, self.per_ratio.double().clamp(min=0.0), 0.0)
        reuse = float(self.reuse.double().clamp(min=0.0).sum())
        return FlopModel(share * extra[:, None], fixed, per_ratio, self.base + reuse, float(self.record.sum()))

    def describe(self, flops: FlopModel) -> str:
        """One line for the log: a full and a reuse step in seconds and as shares, wall against FLOPs."""
        cost = self.cost_model(flops)
        wall_share = cost.base / cost.step_full if cost.step_full > 0 else math.nan
        flops_share = flops.base / flops.step_full if flops.step_full > 0 else math.nan
        return (
            f"a full model call {cost.step_full:.4g} s, a reuse call {cost.base:.4g} s ({wall_share:.3f} of full in "
            f"wall time, {flops_share:.3f} in FLOPs; {self.base:.4g} s outside the served blocks)"
        )

    def partial_limit(self) -> Tensor:
        """(L, M) the recompute ratio at which a partial recompute costs as much as computing the module in full
        (0: never cheaper; inf: always cheaper)."""
        room = self.full.double() - self.fixed.double()
        per = self.per_ratio.double()
        limit = torch.where(per > 0, room / per.clamp(min=1e-30), torch.where(room > 0, math.inf, 0.0))
        return limit.clamp(min=0.0)

    def to_tensors(self) -> dict[str, Tensor]:
        return {
            "time.full": self.full.double(),
            "time.fixed": self.fixed.double(),
            "time.per_ratio": self.per_ratio.double(),
            "time.layers": torch.stack([self.reuse, self.block, self.record]).double(),
            "time.scalars": torch.tensor([self.base], dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> TimeModel:
        layers, scalars = tensors["time.layers"].double(), tensors["time.scalars"].double()
        if layers.dim() != 2 or layers.shape[0] != 3 or scalars.shape != (1,):
            raise ValueError(
                f"time.layers has shape {tuple(layers.shape)} and time.scalars {tuple(scalars.shape)}, expected "
                "(3, L) (reuse, block, record seconds per layer) and (1,) (base seconds)"
            )
        reuse, block, record = layers.unbind(0)
        full, fixed = tensors["time.full"].double(), tensors["time.fixed"].double()
        return cls(full, fixed, tensors["time.per_ratio"].double(), reuse, block, record, float(scalars[0]))

    def problems(self, layers: int, modules: int) -> list[str]:
        """What is wrong with this model for a layout of ``layers`` x ``modules`` (empty: nothing)."""
        found = []
        for key, table, shape in (
            ("time.full", self.full, (layers, modules)),
            ("time.fixed", self.fixed, (layers, modules)),
            ("time.per_ratio", self.per_ratio, (layers, modules)),
            ("time.layers", torch.stack([self.reuse, self.block, self.record]), (3, layers)),
        ):
            if tuple(table.shape) != shape:
                found.append(f"{key} has shape {tuple(table.shape)}, expected {shape} (the profile's layout)")
            elif not bool((table.isfinite() & (table >= 0)).all()):
                found.append(f"{key} must be finite seconds >= 0, got {table.tolist()}")
        if not math.isfinite(self.base) or self.base < 0:
            found.append(f"time.scalars (base seconds) must be finite and >= 0, got {self.base!r}")
        elif not found and not self.step_full > 0:
            found.append("the time model's full-compute call takes 0 seconds, expected a measured positive time")
        return found


def fit_line(ratios: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``seconds ≈ fixed + r·per_ratio`` through measured ``(r, seconds)``; both clamped to >= 0
    (noise can tilt a line fitted through two or three timings)."""
    if len(ratios) != len(seconds) or len(ratios) < 2:
        raise ValueError(f"fit_line needs 2 or more (ratio, seconds) pairs, got {len(ratios)} and {len(seconds)}.")
    n = len(ratios)
    mean_r, mean_s = sum(ratios) / n, sum(seconds) / n
    spread = sum((r - mean_r) ** 2 for r in ratios)
    if spread <= 0:
        raise ValueError(f"fit_line needs at least two different ratios, got {list(ratios)}.")
    per = max(sum((r - mean_r) * (s - mean_s) for r, s in zip(ratios, seconds, strict=True)) / spread, 0.0)
    fixed = mean_s - per * mean_r
    if fixed < 0:  # keep the line through the mean, anchored at 0
        fixed, per = 0.0, max(mean_s / mean_r, 0.0) if mean_r > 0 else per
    return fixed, per


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no timings: expected at least one measured call.")
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
