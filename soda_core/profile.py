"""The sensitivity profile: what OFS measures and what DCS and UAS plan from.

Shapes, with T sampling steps, L layers, M modules per layer, K reuse distances and R recompute ratios:
  * ``cache_error[t, l, m, k-1]`` = E_c(t, l, m, k) = 1 - cos(D[t-k, l, m], D[t, l, m]): serve step t with the module
    output computed k steps earlier (NaN where t - k < 0);
  * ``prune_error[t, l, m, k-1, j]`` = E_p(t, l, m, k, r_j): recompute the top ``r_j`` share of image tokens at step t,
    take every other token from step t - k;
  both averaged over the calibration samples (batch rows, CFG branches, seeds). An infinite E_p is a legal marker
  for "never recompute this module partially" (see ``without_pruning``).

A profile is stored as one ``.safetensors`` file: the tensors above plus the FLOP model, and JSON metadata (layout,
sigmas, model family, sampler, measured-on shapes, pack version).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .flops import FlopModel
from .layout import ModelLayout


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

    def __post_init__(self) -> None:
        t, layers, m = self.steps, self.layout.num_layers, self.layout.num_modules
        problems = []
        if self.sigmas.shape != (t + 1,):
            problems.append(f"sigmas has shape {tuple(self.sigmas.shape)}, expected ({t + 1},)")
        if self.cache_error.shape[1:3] != (layers, m):
            problems.append(f"cache_error has shape {tuple(self.cache_error.shape)}, expected ({t}, {layers}, {m}, K)")
        expected_prune = (*self.cache_error.shape, self.prune_ratios.numel())
        if self.prune_error.numel() and tuple(self.prune_error.shape) != expected_prune:
            problems.append(f"prune_error has shape {tuple(self.prune_error.shape)}, expected {expected_prune}")
        ratios = self.prune_ratios
        if ratios.numel() and not (
            bool((ratios > 0).all() and (ratios < 1).all()) and bool((ratios.diff() > 0).all())
        ):
            problems.append(f"prune_ratios must increase strictly inside (0, 1), got {ratios.tolist()}")
        if bool((self.flops.fixed < 0).any() or (self.flops.per_ratio < 0).any()):
            problems.append("FLOP counts must not be negative")
        if self.flops.full.shape != (layers, m):
            problems.append(f"flops.full has shape {tuple(self.flops.full.shape)}, expected ({layers}, {m})")
        if problems:
            raise ValueError("Inconsistent SODA profile: " + "; ".join(problems) + ".")

    @property
    def steps(self) -> int:
        return int(self.cache_error.shape[0])

    @property
    def max_distance(self) -> int:
        return int(self.cache_error.shape[3])

    @property
    def has_prune_error(self) -> bool:
        return self.prune_error.numel() > 0

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {
            "sigmas": self.sigmas.double().contiguous(),
            "cache_error": self.cache_error.float().contiguous(),
            "prune_error": self.prune_error.float().contiguous(),
            "prune_ratios": self.prune_ratios.float().contiguous(),
            **{k: v.contiguous() for k, v in self.flops.to_tensors().items()},
        }
        metadata = {
            "soda.format_version": str(FORMAT_VERSION),
            "soda.layout": json.dumps(self.layout.to_json()),
            "soda.meta": json.dumps(self.meta, sort_keys=True),
        }
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> SensitivityProfile:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        version = metadata.get("soda.format_version")
        if version != str(FORMAT_VERSION):
            raise ValueError(
                f"{path} is not a SODA profile of format {FORMAT_VERSION} (found format {version!r}). "
                "Re-create it with the Profile Sensitivity node of this pack version."
            )
        return cls(
            layout=ModelLayout.from_json(json.loads(metadata["soda.layout"])),
            sigmas=tensors["sigmas"].double(),
            cache_error=tensors["cache_error"].float(),
            prune_error=tensors["prune_error"].float(),
            prune_ratios=tensors["prune_ratios"].float(),
            flops=FlopModel.from_tensors(tensors),
            meta=json.loads(metadata.get("soda.meta", "{}")),
        )

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
        if steps < 1:
            raise ValueError(f"A sampling run needs at least 2 sigmas to plan over, got {new_sigmas.tolist()}.")
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
        return replace(self, sigmas=new_sigmas, cache_error=cache, prune_error=prune, meta=meta)

    @staticmethod
    def _read(table: torch.Tensor, u: float, d: float) -> torch.Tensor:
        """Bilinear read of ``table[t, l, m, k-1, ...]`` at fractional step ``u`` and distance ``d``."""
        steps, k_max = table.shape[0], table.shape[3]
        t0 = min(int(u), steps - 1)
        t1 = min(t0 + 1, steps - 1)
        wt = u - t0

        def at_distance(t: int) -> torch.Tensor:
            if d <= 1.0:
                return d * _nan_to_zero(table[t, :, :, 0])
            k0 = min(int(d), k_max)
            k1 = min(k0 + 1, k_max)
            wk = min(d - k0, 1.0) if k1 != k0 else 0.0
            return (1 - wk) * _nan_to_zero(table[t, :, :, k0 - 1]) + wk * _nan_to_zero(table[t, :, :, k1 - 1])

        return (1 - wt) * at_distance(t0) + wt * at_distance(t1)


def _nan_to_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.0)


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
