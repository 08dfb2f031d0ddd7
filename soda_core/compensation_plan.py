"""What the planner reads for compensation: per (step, layer, module, distance k, previous interval p) cell, the
error of serving it and the predictor that does (``compensation.PREDICTORS`` codes), from a profile.

    none     E_c everywhere, code 0 (SODA as published)
    taylor1, taylor2, goc
             the predictor's measured error and code wherever it was measured (p >= 1 and k + p <= K; GOC also
             where its weight is not 0, i.e. not an inflection); elsewhere plain reuse. A profile without the
             predictors' tables (older file, or mapped to another grid) gives taylor1 / taylor2 everywhere p >= 1 at
             the E_c cost (not measured), and GOC nowhere (nothing fitted).
    auto     per cell the least error among plain reuse and the measured predictors
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .compensation import GOC, MEASURED, NONE, PREDICTORS
from .profile import SensitivityProfile


@dataclass(frozen=True)
class CellTable:
    errors: torch.Tensor  # (T, L, M, K, P) float64, P = longest interval + 1 (p = 0: no anchor before)
    codes: torch.Tensor  # (T, L, M, K, P) int8
    weights: torch.Tensor  # (T, L, M, K, P) float32 GOC's coefficient (0 elsewhere)
    notes: tuple[str, ...] = ()

    def step_costs(self) -> torch.Tensor:
        """``E[t, k-1, p] = Σ_{l,m}`` errors: (T, K, P)."""
        return self.errors.sum(dim=(1, 2))

    def at(self, steps: torch.Tensor, distances: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(errors, codes, weights) of reuse steps (n,) at distances and previous intervals (n,): each (n, L, M)."""
        k = distances - 1
        return (
            self.errors[steps, :, :, k, previous],
            self.codes[steps, :, :, k, previous],
            self.weights[steps, :, :, k, previous],
        )


def _padded(table: torch.Tensor, previous: int) -> torch.Tensor:
    """(..., K, K) indexed [k-1, p-1] -> (..., K, P) indexed [k-1, p], NaN at p = 0 and beyond the table."""
    out = torch.full((*table.shape[:-1], previous), math.nan, dtype=torch.float64)
    width = min(table.shape[-1], previous - 1)
    out[..., 1 : width + 1] = table[..., :width].double()
    return out


def cell_table(profile: SensitivityProfile, mode: str, longest: int) -> CellTable:
    """The cells' errors, predictors and weights for ``mode`` on ``profile``, previous intervals up to ``longest``."""
    previous = longest + 1
    plain = torch.nan_to_num(profile.cache_error.double())[..., None].expand(*profile.cache_error.shape, previous)
    errors, codes = plain.clone(), torch.zeros(plain.shape, dtype=torch.int8)
    weights = torch.zeros(plain.shape, dtype=torch.float32)
    if mode == "none":
        return CellTable(errors, codes, weights)
    if not profile.has_forecasts:
        if mode in ("goc", "auto"):
            note = f"compensation {mode} off: the profile has no predictor errors (re-profile on this grid for them)"
            return CellTable(errors, codes, weights, (note,))
        codes[..., 1:] = PREDICTORS.index(mode)
        return CellTable(errors, codes, weights, (f"compensation {mode}: not profiled, priced as plain reuse",))
    measured = {name: _padded(profile.forecast_error[i], previous) for i, name in enumerate(MEASURED)}
    goc_weight = _padded(profile.forecast_weight, previous)
    usable = {name: table.isfinite() for name, table in measured.items()}
    usable["goc"] &= goc_weight.isfinite() & (goc_weight != 0)
    candidates = ["none", *MEASURED] if mode == "auto" else ["none", mode]
    stacked = torch.stack(
        [plain if n == "none" else torch.where(usable[n], measured[n], math.inf) for n in candidates]
    )  # (C, T, L, M, K, P)
    if mode == "auto":
        best, index = stacked.min(dim=0)  # ties: the first, plain reuse
    else:
        index = usable[mode].long()
        best = torch.where(usable[mode], stacked[1], plain)
    chosen = torch.tensor([PREDICTORS.index(n) for n in candidates], dtype=torch.int8)[index]
    goc_cells = chosen == GOC
    weights = torch.where(goc_cells, torch.nan_to_num(goc_weight), 0.0).float()
    return CellTable(best, torch.where(best.isfinite(), chosen, NONE).to(torch.int8), weights)


def previous_intervals(anchors: tuple[int, ...], steps: torch.Tensor) -> torch.Tensor:
    """For reuse steps (n,): the distance between the last two anchors before each (0: only one), (n,) long."""
    known = torch.tensor(anchors, dtype=torch.long)
    last = torch.searchsorted(known, steps, right=True) - 1  # (n,) index of the last anchor <= t
    before = (last - 1).clamp(min=0)
    return torch.where(last >= 1, known[last] - known[before], 0)
