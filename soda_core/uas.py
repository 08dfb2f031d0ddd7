"""UAS: the per-module recompute decision on reuse steps (SODA §4), vectorised over steps, distances and modules.

On a reuse step ``t`` at distance ``k`` from its anchor, module ``(l, m)`` recomputes the share

    r = min(clip(λ·E_c(t, l, m, k) + β, 0, 1), r_max)        (r < r_min: reuse the whole output, r = 0)

of its image tokens, but only where the timing gate holds, ``E_p(t, l, m, k, r) < E_c(t, l, m, k)``; elsewhere it
reuses its whole cached output. ``E_p`` is read piecewise-linearly through the knots

    (0, E_c), (r_1, E_p[..., 0]), ..., (r_R, E_p[..., R-1]), (1, 0)

i.e. recomputing no token is plain reuse and recomputing every token is exact. Tables are laid out ``(T, K, L·M)``
so that the entries of one (step, distance) cell are contiguous.

The β search evaluates the gate thousands of times, so it is precomputed as *toggles*: the ratios in
``[r_min, r_max]`` where the gate switches (it is off below ``r_min``). At ratio ``r`` the gate is on iff an odd
number of toggles are ``<= r``; for the usual ``E_p`` that falls with ``r`` there is one toggle per entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class UasEntries:
    """The UAS inputs of ``n`` (step, distance) cells, each with its ``L·M`` modules, in float64."""

    lam_ec: torch.Tensor  # (n, LM)   λ·E_c
    cache_error: torch.Tensor  # (n, LM)   E_c
    prune_error: torch.Tensor  # (n, LM, R)  E_p on the ratio grid
    toggles: torch.Tensor  # (n, LM, P)  ratios where the gate switches, +inf pads


@dataclass(frozen=True)
class UasTable:
    """UAS inputs for every (step, distance) cell of a profile; entries with ``t < k`` are zero and never used."""

    entries: UasEntries  # leading dims (T, K) instead of (n,)
    knots: torch.Tensor  # (R+2,) 0, the profile's prune ratios, 1
    ratio_min: float
    ratio_max: float

    def gather(self, steps: torch.Tensor, distances: torch.Tensor) -> UasEntries:
        """The entries of reuse steps ``steps`` (n,) at ``distances`` (n,) from their anchors."""
        e, k = self.entries, distances - 1
        return UasEntries(e.lam_ec[steps, k], e.cache_error[steps, k], e.prune_error[steps, k], e.toggles[steps, k])

    @property
    def lam_ec_range(self) -> tuple[float, float]:
        return float(self.entries.lam_ec.min()), float(self.entries.lam_ec.max())


def build_uas_table(
    cache_error: torch.Tensor,  # (T, L, M, K)
    prune_error: torch.Tensor,  # (T, L, M, K, R)
    prune_ratios: torch.Tensor,  # (R,)
    lam: float,
    ratio_min: float,
    ratio_max: float,
) -> UasTable:
    """Re-lay the profile as ``(T, K, L·M)`` cells, replace the unused NaNs (``t < k``) by 0 and find the toggles."""
    steps, layers, modules, distances = cache_error.shape
    ec = torch.nan_to_num(cache_error.double()).permute(0, 3, 1, 2).reshape(steps, distances, layers * modules)
    ep = torch.nan_to_num(prune_error.double()).permute(0, 3, 1, 2, 4).reshape(*ec.shape, -1)  # (T, K, LM, R)
    knots = torch.cat([torch.zeros(1), prune_ratios.double().cpu(), torch.ones(1)]).double()  # (R+2,)
    toggles = gate_toggles(ec, ep, knots, ratio_min, ratio_max)
    return UasTable(UasEntries(lam * ec, ec, ep, toggles), knots, ratio_min, ratio_max)


def _knot_values(cache_error: torch.Tensor, prune_error: torch.Tensor) -> torch.Tensor:
    """``E_p`` at the knots ``0, r_1..r_R, 1``: (..., R+2) = [E_c, E_p[..., 0..R-1], 0]."""
    return torch.cat([cache_error[..., None], prune_error, torch.zeros_like(cache_error)[..., None]], dim=-1)


def prune_error_at(
    cache_error: torch.Tensor,  # (...)
    prune_error: torch.Tensor,  # (..., R)
    knots: torch.Tensor,  # (R+2,)
    ratio: torch.Tensor,  # (...) in [0, 1]
) -> torch.Tensor:
    """``E_p(r)``: linear between the knots (0, E_c), (r_j, E_p[..., j]), (1, 0)."""
    values = _knot_values(cache_error, prune_error)  # (..., R+2)
    seg = torch.bucketize(ratio, knots, right=True).clamp(1, knots.numel() - 1)  # (...) knot right of ratio
    left, right = knots[seg - 1], knots[seg]
    weight = (ratio - left) / (right - left)
    v0 = values.gather(-1, (seg - 1)[..., None]).squeeze(-1)
    v1 = values.gather(-1, seg[..., None]).squeeze(-1)
    return v0 + weight * (v1 - v0)


def _interp_weights(knots: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``W`` (len(knots), len(points)) with ``f(points) = f(knots) @ W`` for the piecewise-linear ``f``."""
    seg = torch.searchsorted(knots, points, right=True).clamp(1, knots.numel() - 1)  # (Q,)
    weight = (points - knots[seg - 1]) / (knots[seg] - knots[seg - 1])
    columns = torch.arange(points.numel())
    weights = torch.zeros(knots.numel(), points.numel(), dtype=knots.dtype)
    weights[seg - 1, columns] = 1 - weight
    weights[seg, columns] = weight
    return weights


def gate_toggles(
    cache_error: torch.Tensor,  # (...)
    prune_error: torch.Tensor,  # (..., R)
    knots: torch.Tensor,  # (R+2,)
    ratio_min: float,
    ratio_max: float,
) -> torch.Tensor:
    """Ratios in ``[r_min, r_max]`` where the gate ``d(r) = E_p(r) - E_c < 0`` switches, (..., P), +inf padded.

    ``d`` is linear between the points ``q = {r_min} ∪ (knots inside) ∪ {r_max}``: the gate turns on at ``r_min``
    if ``d(r_min) < 0``, and switches at ``q_i + (q_{i+1} - q_i)·d_i / (d_i - d_{i+1})`` in every segment whose
    ends disagree. Columns no entry uses are dropped.
    """
    inside = knots[(knots > ratio_min) & (knots < ratio_max)]
    ends = [ratio_min] if ratio_min == ratio_max else [ratio_min, ratio_max]
    points = torch.cat([knots.new_tensor(ends[:1]), inside, knots.new_tensor(ends[1:])])  # (Q,) increasing
    gap = _knot_values(cache_error, prune_error) - cache_error[..., None]  # (..., R+2)
    d = gap @ _interp_weights(knots, points)  # (..., Q)
    on = d < 0
    inf = torch.tensor(float("inf"), dtype=d.dtype)
    first = torch.where(on[..., 0], points[0], inf)  # (...)
    d0, d1 = d[..., :-1], d[..., 1:]
    crossing = points[:-1] + (points[1:] - points[:-1]) * d0 / (d0 - d1)  # (..., Q-1), NaN where d0 == d1
    switched = torch.where(on[..., 1:] != on[..., :-1], crossing, inf)
    toggles = torch.cat([first[..., None], switched], dim=-1)  # (..., Q)
    used = torch.isfinite(toggles).reshape(-1, toggles.shape[-1]).any(dim=0)
    used[0] = True
    return toggles[..., used]


def gate_on(toggles: torch.Tensor, reach: torch.Tensor) -> torch.Tensor:
    """Gate state at ``reach = λ·E_c + β`` (...): an odd number of toggles (..., P) at or below it."""
    return (toggles <= reach[..., None]).sum(dim=-1) % 2 == 1


def pruned_flops(
    entries: UasEntries, beta: float, fixed: torch.Tensor, per_ratio: torch.Tensor, ratio_max: float
) -> float:
    """FLOPs of the partial recomputes at ``β``: ``Σ_gate-on fixed + r·per_ratio`` (gate from the toggles)."""
    reach = entries.lam_ec + beta  # (n, LM)
    ratio = reach.clamp(max=ratio_max)
    return float(torch.where(gate_on(entries.toggles, reach), fixed + ratio * per_ratio, 0.0).sum())


def decide(
    entries: UasEntries, beta: float, knots: torch.Tensor, ratio_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The UAS decision at ``β``: recompute ratio (n, LM) (0 = reuse) and the error each module then incurs.

    Ratios are rounded to float32 (what a ``Schedule`` stores) before ``E_p`` is read, and the gate is re-checked on
    the interpolated ``E_p`` so a toggle's rounding can only turn a partial recompute off, never on.
    """
    reach = entries.lam_ec + beta  # (n, LM)
    ratio = reach.clamp(0.0, ratio_max).float().double()
    prune = prune_error_at(entries.cache_error, entries.prune_error, knots, ratio)  # (n, LM)
    on = gate_on(entries.toggles, reach) & (prune < entries.cache_error)
    error = torch.where(on, prune, entries.cache_error)
    return torch.where(on, ratio, 0.0), error


def cell_tables(
    table: UasTable, beta: float, fixed: torch.Tensor, per_ratio: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (step, distance) cell at ``β``: summed UAS error ``Σ_{l,m} min(E_c, E_p(r))`` and recompute FLOPs, (T, K)."""
    e = table.entries
    flat = UasEntries(
        e.lam_ec.flatten(0, 1), e.cache_error.flatten(0, 1), e.prune_error.flatten(0, 1), e.toggles.flatten(0, 1)
    )
    _, error = decide(flat, beta, table.knots, table.ratio_max)  # (T·K, LM)
    reach = flat.lam_ec + beta
    flops = torch.where(gate_on(flat.toggles, reach), fixed + reach.clamp(0.0, table.ratio_max) * per_ratio, 0.0)
    shape = e.lam_ec.shape[:2]
    return error.sum(dim=-1).reshape(shape), flops.sum(dim=-1).reshape(shape)
