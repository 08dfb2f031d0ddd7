"""UAS: the per-module recompute decision on reuse steps (SODA §4), vectorised over steps, distances and modules.

On a reuse step ``t`` at distance ``k`` from its anchor, module ``(l, m)`` recomputes the share

    r = min(clip(λ·E_c(t, l, m, k) + β, 0, 1), r_max)        (r < r_min: reuse the whole output, r = 0)

of its image tokens, but only where the timing gate holds, ``E_p(t, l, m, k, r) < E_c(t, l, m, k)``; elsewhere it
reuses its whole cached output. ``E_p`` is read piecewise-linearly through the knots

    (0, E_c), (r_1, E_p[..., 0]), ..., (r_R, E_p[..., R-1]), (1, 0)

i.e. recomputing no token is plain reuse and recomputing every token is exact. A recompute costs
``fixed[l, m] + r·per_ratio[l, m]`` FLOPs (``FlopModel.partial``).

The β search evaluates the gate thousands of times, so it is precomputed as *toggles*: the ratios in
``[r_min, r_max]`` where the gate switches (it is off below ``r_min``). At ratio ``r`` the gate is on iff an odd
number of toggles are ``<= r``; for the usual ``E_p`` that falls with ``r`` there is one toggle per entry. The
recompute FLOPs of a (step, distance) cell are then piecewise-linear in β, and ``FlopCurve`` holds them exactly, so
the β bisections of all anchor counts run together on one small tensor per cell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .profile import SensitivityProfile


@dataclass(frozen=True)
class UasEntries:
    """The UAS inputs of ``n`` (step, distance) cells of a ``UasTable``, each with its ``L·M`` modules, in float64."""

    cells: torch.Tensor  # (n,) long: table row t·K + k - 1
    lam_ec: torch.Tensor  # (n, LM) λ·E_c
    cache_error: torch.Tensor  # (n, LM) E_c
    toggles: torch.Tensor  # (n, LM, P) ratios where the gate switches, +inf pads


@dataclass(frozen=True)
class FlopCurve:
    """Recompute FLOPs of every cell as an exact piecewise-linear function of β (see ``flop_curve``):

    F_c(β) = Σ_{l,m} pruned_flops = A[c, i] + β·B[c, i],   i = number of the cell's breakpoints <= β
    """

    points: torch.Tensor  # (T·K, W) breakpoints per cell, sorted, +inf pads
    offset: torch.Tensor  # (T·K, W+1) A
    slope: torch.Tensor  # (T·K, W+1) B

    def at(self, cells: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """``F_c(β)`` of cells ``cells`` (S,) at ``beta`` (S,), by a binary search per cell."""
        width = self.points.shape[1]
        points = self.points.reshape(-1)
        low, high = torch.zeros_like(cells), torch.full_like(cells, width)  # count of breakpoints <= β in [low, high]
        for _ in range(width.bit_length()):
            middle = (low + high) // 2
            below = points[cells * width + middle.clamp(max=width - 1)] <= beta  # (S,)
            low, high = torch.where(below & (low < high), middle + 1, low), torch.where(below, high, middle)
        index = cells * (width + 1) + low
        return self.offset.reshape(-1)[index] + beta * self.slope.reshape(-1)[index]


@dataclass(frozen=True)
class UasTable:
    """UAS inputs of every (step, distance) cell, row ``t·K + k - 1``; rows with ``t < k`` are zero and never used."""

    all: UasEntries  # (T·K, LM, ...)
    knot_values: torch.Tensor  # (T·K, LM, R+2) E_p at the knots
    knots: torch.Tensor  # (R+2,) 0, the profile's prune ratios, 1
    fixed: torch.Tensor  # (LM,) FLOPs of a partial recompute that do not shrink with r
    per_ratio: torch.Tensor  # (LM,) FLOPs per unit of r
    distances: int  # K
    ratio_min: float
    ratio_max: float
    curve: FlopCurve

    def gather(self, steps: torch.Tensor, distances: torch.Tensor) -> UasEntries:
        """The entries of reuse steps ``steps`` (n,) at ``distances`` (n,) from their anchors."""
        rows = steps * self.distances + distances - 1  # (n,)
        return UasEntries(rows, self.all.lam_ec[rows], self.all.cache_error[rows], self.all.toggles[rows])

    @property
    def bracket(self) -> tuple[float, float]:
        """β range: at the low end every ``λ·E_c + β <= 0`` (no recompute), at the high end every one ``>= r_max``."""
        return -float(self.all.lam_ec.max()), self.ratio_max - float(self.all.lam_ec.min())


def build_uas_table(profile: SensitivityProfile, lam: float, ratio_min: float, ratio_max: float) -> UasTable:
    """Re-lay the profile as ``(T·K, L·M)`` rows, replace the unused NaNs (``t < k``) by 0 and find the toggles.

    An infinite ``E_p`` (``SensitivityProfile.without_pruning``) turns that module's partial recompute off.
    """
    steps, layers, modules, distances = profile.cache_error.shape
    rows, lm = steps * distances, layers * modules
    ec = torch.nan_to_num(profile.cache_error.double()).permute(0, 3, 1, 2).reshape(rows, lm)  # (T·K, LM)
    ep = torch.nan_to_num(profile.prune_error.double(), nan=0.0, posinf=math.inf).permute(0, 3, 1, 2, 4)
    values = knot_values(ec, ep.reshape(*ec.shape, -1))  # (T·K, LM, R+2)
    knots = torch.cat([torch.zeros(1), profile.prune_ratios.double().cpu(), torch.ones(1)]).double()  # (R+2,)
    never = values.isinf().any(dim=-1, keepdim=True)  # (T·K, LM, 1)
    toggles = gate_toggles(values.masked_fill(never, 0.0), knots, ratio_min, ratio_max).masked_fill(never, math.inf)
    entries = UasEntries(torch.arange(rows), lam * ec, ec, toggles)
    fixed, per_ratio = profile.flops.fixed.double().reshape(-1), profile.flops.per_ratio.double().reshape(-1)
    curve = flop_curve(entries, fixed, per_ratio, ratio_max)
    return UasTable(entries, values, knots, fixed, per_ratio, distances, ratio_min, ratio_max, curve)


def knot_values(cache_error: torch.Tensor, prune_error: torch.Tensor) -> torch.Tensor:
    """``E_p`` at the knots ``0, r_1..r_R, 1``: (...), (..., R) -> (..., R+2) = [E_c, E_p[..., 0..R-1], 0]."""
    return torch.cat([cache_error[..., None], prune_error, torch.zeros_like(cache_error)[..., None]], dim=-1)


def _interpolate(values: torch.Tensor, rows: torch.Tensor, knots: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear read of knot rows ``values[rows]`` ((N, R+2), rows (...)) at ``ratio`` (...) in [0, 1]."""
    seg = torch.bucketize(ratio, knots, right=True).clamp_(1, knots.numel() - 1)  # (...) knot right of ratio
    start = rows * knots.numel() + seg
    flat = values.reshape(-1)
    v0, v1 = flat[start - 1], flat[start]
    weight = (ratio - knots[seg - 1]) / (knots[seg] - knots[seg - 1])
    return v0 + weight * (v1 - v0)


def prune_error_at(
    cache_error: torch.Tensor,  # (...)
    prune_error: torch.Tensor,  # (..., R)
    knots: torch.Tensor,  # (R+2,)
    ratio: torch.Tensor,  # (...) in [0, 1]
) -> torch.Tensor:
    """``E_p(r)``: linear between the knots (0, E_c), (r_j, E_p[..., j]), (1, 0)."""
    values = knot_values(cache_error.double(), prune_error.double()).reshape(-1, knots.numel())
    rows = torch.arange(values.shape[0]).reshape(cache_error.shape)
    return _interpolate(values, rows, knots, ratio.double())


def _interp_weights(knots: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``W`` (len(knots), len(points)) with ``f(points) = f(knots) @ W`` for the piecewise-linear ``f``."""
    seg = torch.searchsorted(knots, points, right=True).clamp(1, knots.numel() - 1)  # (Q,)
    weight = (points - knots[seg - 1]) / (knots[seg] - knots[seg - 1])
    columns = torch.arange(points.numel())
    weights = torch.zeros(knots.numel(), points.numel(), dtype=knots.dtype)
    weights[seg - 1, columns] = 1 - weight
    weights[seg, columns] = weight
    return weights


def gate_toggles(values: torch.Tensor, knots: torch.Tensor, ratio_min: float, ratio_max: float) -> torch.Tensor:
    """Ratios in ``[r_min, r_max]`` where the gate ``d(r) = E_p(r) - E_c < 0`` switches, (..., R+2) -> (..., P).

    ``d`` is linear between the points ``q = {r_min} ∪ (knots inside) ∪ {r_max}``: the gate turns on at ``r_min``
    if ``d(r_min) < 0``, and switches at ``q_i + (q_{i+1} - q_i)·d_i / (d_i - d_{i+1})`` in every segment whose
    ends disagree. Toggles are sorted, +inf padded, and the columns no entry uses are dropped.
    """
    inside = knots[(knots > ratio_min) & (knots < ratio_max)]
    ends = [ratio_min] if ratio_min == ratio_max else [ratio_min, ratio_max]
    points = torch.cat([knots.new_tensor(ends[:1]), inside, knots.new_tensor(ends[1:])])  # (Q,) increasing
    d = (values - values[..., :1]) @ _interp_weights(knots, points)  # (..., Q)
    on = d < 0
    inf = torch.tensor(float("inf"), dtype=d.dtype)
    first = torch.where(on[..., 0], points[0], inf)  # (...)
    d0, d1 = d[..., :-1], d[..., 1:]
    crossing = points[:-1] + (points[1:] - points[:-1]) * d0 / (d0 - d1)  # (..., Q-1), NaN where d0 == d1
    switched = torch.where(on[..., 1:] != on[..., :-1], crossing, inf)
    toggles = torch.cat([first[..., None], switched], dim=-1).sort(dim=-1).values  # (..., Q), +inf last
    used = max(int(torch.isfinite(toggles).sum(dim=-1).max()), 1) if toggles.numel() else 1
    return toggles[..., :used]


def gate_on(toggles: torch.Tensor, level: torch.Tensor | float) -> torch.Tensor:
    """Gate state at ``level`` (...) or a scalar: an odd number of ``toggles`` (..., P) at or below it."""
    below = toggles <= (level[..., None] if isinstance(level, torch.Tensor) else level)  # (..., P)
    return below[..., 0] if toggles.shape[-1] == 1 else below.sum(dim=-1) % 2 == 1


def switch_points(entries: UasEntries) -> torch.Tensor:
    """The β values where each gate switches, ``toggle - λ·E_c`` (n, LM, P): the gate is on at β iff
    ``gate_on(switch_points, β)``. Every β decision reads the gate from here, so all of them agree to the bit."""
    return entries.toggles - entries.lam_ec[..., None]


def pruned_flops(table: UasTable, entries: UasEntries, beta: float) -> torch.Tensor:
    """FLOPs of each partial recompute at ``β``, (n, LM): ``fixed + r·per_ratio`` where the gate is on, else 0."""
    cost = table.fixed + (entries.lam_ec + beta).clamp(0.0, table.ratio_max) * table.per_ratio
    return torch.where(gate_on(switch_points(entries), beta), cost, 0.0)


def flop_curve(entries: UasEntries, fixed: torch.Tensor, per_ratio: torch.Tensor, ratio_max: float) -> FlopCurve:
    """``pruned_flops`` summed per cell as breakpoints and prefix sums. With ``x = λ·E_c``, ``a = fixed + x·per``:

        pruned_flops(β) = on(β)·(a + β·per) - on_end·[β >= r_max - x]·((x - r_max)·per + β·per)

    (``on_end``: the gate after its last toggle, all toggles being <= r_max). Each gate switch ``toggle - x`` adds
    ``±(a, per)`` to ``(A, B)``, each saturation ``r_max - x`` adds ``((r_max - x)·per, -per)``.
    """
    x = entries.lam_ec[..., None]  # (N, LM, 1)
    switch = switch_points(entries)  # (N, LM, P)
    finite = torch.isfinite(switch)
    sign = torch.where(finite, 1.0 - 2.0 * (torch.arange(switch.shape[-1]) % 2), 0.0)  # on, off, on, ...
    per = per_ratio[:, None].expand_as(x)  # (N, LM, 1)
    on_end = finite.sum(dim=-1, keepdim=True) % 2 == 1  # (N, LM, 1)
    points = torch.cat([switch, torch.where(on_end, ratio_max - x, math.inf)], dim=-1).flatten(1)  # (N, W)
    d_offset = torch.cat([sign * (fixed[:, None] + x * per), torch.where(on_end, (ratio_max - x) * per, 0.0)], -1)
    d_slope = torch.cat([sign * per, torch.where(on_end, -per, 0.0)], dim=-1)
    points, order = points.sort(dim=-1)
    zero = torch.zeros(points.shape[0], 1, dtype=points.dtype)
    offset = torch.cat([zero, d_offset.flatten(1).gather(1, order).cumsum(dim=1)], dim=1)  # (N, W+1)
    slope = torch.cat([zero, d_slope.flatten(1).gather(1, order).cumsum(dim=1)], dim=1)
    return FlopCurve(points, offset, slope)


def bisect_largest(
    accept: Callable[[torch.Tensor], torch.Tensor], low: float, high: float, count: int, steps: int
) -> torch.Tensor:
    """For ``count`` problems in lockstep, the largest β in ``[low, high]`` that ``accept`` (β (C,) -> bool (C,))
    takes, to ``(high - low) / 2**steps``; ``low`` is taken as accepted."""
    low_, high_ = torch.full((count,), low, dtype=torch.float64), torch.full((count,), high, dtype=torch.float64)
    top = accept(high_)
    for _ in range(0 if bool(top.all()) else steps):
        middle = 0.5 * (low_ + high_)
        ok = accept(middle)
        low_, high_ = torch.where(ok, middle, low_), torch.where(ok, high_, middle)
    return torch.where(top, high, low_)


def decide(table: UasTable, entries: UasEntries, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The UAS decision at ``β``: recompute ratio (n, LM) (0 = reuse) and the error each module then incurs.

    Ratios are rounded to float32 (what a ``Schedule`` stores) before ``E_p`` is read, and the gate is re-checked on
    the interpolated ``E_p``, so a toggle's rounding can only turn a partial recompute off, never on.
    """
    ratio = (entries.lam_ec + beta).clamp(0.0, table.ratio_max).float().double()  # (n, LM)
    modules = entries.lam_ec.shape[1]
    rows = entries.cells[:, None] * modules + torch.arange(modules)  # (n, LM) rows of the flattened knot values
    prune = _interpolate(table.knot_values, rows, table.knots, ratio)  # (n, LM)
    on = gate_on(switch_points(entries), beta) & (prune < entries.cache_error)
    return torch.where(on, ratio, 0.0), torch.where(on, prune, entries.cache_error)


def cell_tables(table: UasTable, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (step, distance) cell at ``β``: summed UAS error ``Σ_{l,m} min(E_c, E_p(r))`` and recompute FLOPs, (T, K)."""
    _, error = decide(table, table.all, beta)  # (T·K, LM)
    flops = table.curve.at(table.all.cells, torch.full(table.all.cells.shape, beta, dtype=torch.float64))  # (T·K,)
    return error.sum(dim=-1).view(-1, table.distances), flops.view(-1, table.distances)
