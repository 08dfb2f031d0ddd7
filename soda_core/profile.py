"""The sensitivity profile: what OFS measures and what DCS and UAS plan from.

Shapes, with T sampling steps, L layers, M modules per layer, K reuse distances and R recompute ratios:
  * ``cache_error[t, l, m, k-1]`` = E_c(t, l, m, k) = 1 - cos(D[t-k, l, m], D[t, l, m]): serve step t with the module
    output computed k steps earlier (NaN where t - k < 0);
  * ``prune_error[t, l, m, k-1, j]`` = E_p(t, l, m, k, r_j): recompute the top ``r_j`` share of image tokens at step t,
    take every other token from step t - k;
  both averaged over the calibration samples (batch rows, CFG branches, seeds). An infinite E_p is a legal marker
  for "never recompute this module partially" (see ``without_pruning``);
  * ``forecast_error[i, t, l, m, k-1, p-1]`` (3, T, L, M, K, K): the error of predictor ``compensation.MEASURED[i]``
    (taylor1, taylor2, goc) at distance k from an anchor that is p steps after the anchor before it, and
    ``forecast_weight[t, l, m, k-1, p-1]`` GOC's fitted coefficient there (``compensation_fit``); NaN where not
    measured, both empty in profiles without them (older files, resampled profiles);
  * ``time``: the ``timing.TimeModel`` measured on the profiling device, which planning for a wall-time speed-up
    needs (None in files written before it existed, or when the run was too short to time).

A profile is stored as one ``.safetensors`` file: the tensors above plus the FLOP model, and JSON metadata (layout,
sigmas, model family, sampler, measured-on shapes, pack version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .flops import FlopModel
from .layout import ModelLayout
from .profile_checks import check_profile, sigma_problems
from .timing import TimeModel


FORMAT_VERSION = 1


@dataclass(frozen=True)
class SensitivityProfile:
    layout: ModelLayout
    sigmas: torch.Tensor  # (T+1,) float64, the profiled run's sigmas (last = end of sampling)
    cache_error: torch.Tensor  # (T, L, M, K) float32
    prune_error: torch.Tensor  # (T, L, M, K, R) float32
    prune_ratios: torch.Tensor  # (R,) float32, increasing, in (0, 1)
    flops: FlopModel
    meta: dict[str, Any] = field(default_factory=dict)
    forecast_error: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (3, T, L, M, K, K) or empty
    forecast_weight: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (T, L, M, K, K) or empty
    time: TimeModel | None = None  # measured seconds on the profiling device (``timing``); None in older files

    def __post_init__(self) -> None:
        check_profile(self)  # raises ProfileProblems (a ValueError) listing every rule the values break

    @property
    def steps(self) -> int:
        return int(self.cache_error.shape[0])

    @property
    def max_distance(self) -> int:
        return int(self.cache_error.shape[3])

    @property
    def has_prune_error(self) -> bool:
        return self.prune_error.numel() > 0

    @property
    def has_forecasts(self) -> bool:
        """True when the predictors of ``compensation`` were measured (errors and GOC's weights)."""
        return self.forecast_error.numel() > 0 and self.forecast_weight.numel() > 0

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """Write the profile as ``.safetensors`` (tensors, JSON metadata and a SHA-256 of both); see ``profile_io``."""
        from .profile_io import save_profile

        save_profile(self, path)

    @classmethod
    def load(cls, path: str | Path) -> SensitivityProfile:
        """Read a profile file, trusting nothing in it: any defect is a ``ValueError`` naming the file and the key."""
        from .profile_io import load_profile

        return load_profile(path)

    def without_pruning(self, module: str) -> SensitivityProfile:
        """A copy in which partial recompute of ``module`` never pays off (E_p = inf), so UAS reuses it whole."""
        if module not in self.layout.modules or not self.has_prune_error:
            return self
        prune = self.prune_error.clone()
        prune[:, :, self.layout.modules.index(module)] = float("inf")
        return replace(self, prune_error=prune, meta={**self.meta, f"no_pruning_{module}": True})

    # ------------------------------------------------------- other sigma grids

    def matches(self, sigmas: torch.Tensor) -> bool:
        """True when ``sigmas`` is the sigma grid this profile was measured on."""
        return sigmas.shape == self.sigmas.shape and bool(
            torch.allclose(sigmas.double().cpu(), self.sigmas, rtol=1e-5, atol=1e-7)
        )

    def resample(self, sigmas: torch.Tensor) -> SensitivityProfile:
        """The profile mapped onto another run's sigma grid (other step count, scheduler or denoise).

        Step ``t'`` of the new grid sits at the fractional profile step ``u = u(sigma'_t')`` (linear in sigma
        between the profiled steps, clamped to the profiled range); a reuse distance ``k'`` becomes the profiled
        distance ``d = u(t') - u(t' - k')``. Errors are read bilinearly in (u, d); below d = 1 they fall linearly
        to 0 at d = 0, beyond the largest profiled distance the value at that distance is kept (an
        underestimate, so the planner is told through ``meta["resampled"]``). This is an approximation the paper
        does not make (it recalibrates per sampler and step count); a profile measured on the run's own grid is
        always preferred and used as is.
        """
        if self.matches(sigmas):
            return self
        new_sigmas = sigmas.double().cpu()
        steps = new_sigmas.numel() - 1
        if new_sigmas.dim() != 1 or steps < 1:
            raise ValueError(f"A sampling run needs at least 2 sigmas to plan over, got {new_sigmas.tolist()}.")
        problems = sigma_problems(new_sigmas)
        if problems:
            raise ValueError(
                f"This run's sigmas cannot be planned for: {problems[0]}. Fix: use another scheduler or step count "
                "(each step must lower the noise level)."
            )
        u = _fractional_index(self.sigmas[:-1], new_sigmas[:-1])  # (T',)
        k_max = self.max_distance
        cache = torch.full((steps, *self.cache_error.shape[1:3], k_max), float("nan"))
        prune = torch.full((steps, *self.prune_error.shape[1:3], k_max, self.prune_ratios.numel()), float("nan"))
        for t in range(steps):
            for k in range(1, min(k_max, t) + 1):
                d = float(u[t] - u[t - k])
                cache[t, ..., k - 1] = self._read(self.cache_error, float(u[t]), d)
                if self.has_prune_error:
                    prune[t, ..., k - 1, :] = self._read(self.prune_error, float(u[t]), d)
        if not self.has_prune_error:
            prune = self.prune_error
        meta = {**self.meta, "resampled": {"from_steps": self.steps, "to_steps": steps}}
        empty = torch.zeros(0)  # the predictors' errors depend on two anchor distances: not mapped, measured only
        return replace(
            self,
            sigmas=new_sigmas,
            cache_error=cache,
            prune_error=prune,
            meta=meta,
            forecast_error=empty,
            forecast_weight=empty,
        )

    @staticmethod
    def _read(table: torch.Tensor, u: float, d: float) -> torch.Tensor:
        """Bilinear read of ``table[t, l, m, k-1, ...]`` at fractional step ``u`` and distance ``d``."""
        steps, k_max = table.shape[0], table.shape[3]
        t0 = min(int(u), steps - 1)
        t1 = min(t0 + 1, steps - 1)
        wt = u - t0

        def at_distance(t: int) -> torch.Tensor:
            if d <= 1.0:
                return _mix(torch.zeros_like(table[t, :, :, 0]), _nan_to_zero(table[t, :, :, 0]), d)
            k0 = min(int(d), k_max)
            k1 = min(k0 + 1, k_max)
            wk = min(d - k0, 1.0) if k1 != k0 else 0.0
            return _mix(_nan_to_zero(table[t, :, :, k0 - 1]), _nan_to_zero(table[t, :, :, k1 - 1]), wk)

        return _mix(at_distance(t0), at_distance(t1), wt)


def _mix(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """``(1 - w)·a + w·b`` that keeps an infinite E_p ("never prune") infinite: a weight of 0 drops its term."""
    if w <= 0.0:
        return a
    if w >= 1.0:
        return b
    return (1 - w) * a + w * b


def _nan_to_zero(x: torch.Tensor) -> torch.Tensor:
    """NaN (no value: t < k) as 0; infinities stay (torch's default would turn +inf into the largest float)."""
    return torch.nan_to_num(x, nan=0.0, posinf=math.inf, neginf=-math.inf)


def _fractional_index(grid: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Fractional position of each value in a monotonically decreasing ``grid`` (clamped to its ends)."""
    g = grid.flip(0)  # increasing
    pos = torch.searchsorted(g, values.clamp(float(g[0]), float(g[-1])))
    pos = pos.clamp(1, g.numel() - 1) if g.numel() > 1 else torch.zeros_like(pos)
    if g.numel() == 1:
        return torch.zeros_like(values)
    lo, hi = g[pos - 1], g[pos]
    frac = torch.where(hi > lo, (values.clamp(float(g[0]), float(g[-1])) - lo) / (hi - lo), torch.zeros_like(lo))
    increasing_index = (pos - 1).double() + frac
    return (g.numel() - 1) - increasing_index
