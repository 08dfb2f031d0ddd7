"""DCS (SODA §3): the anchor steps (full compute, cache refresh) by dynamic programming, and the uniform spacing
the paper's ablation compares it with.

    E[t, k] = Σ_{l,m} E_c(t, l, m, k)                      cost of serving step t from the anchor k steps back
    C(s, n) = Σ_{k=1}^{n-1} E[s+k, k]   (steps >= T dropped)  cost of an interval: anchor s, then n-1 reuse steps
    F[T][0] = 0,  F[s][j] = min_{n=1..N} C(s, n) + F[min(s+n, T)][j-1],  answer F[0][N_a]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def step_costs(cache_error: torch.Tensor) -> torch.Tensor:
    """``E[t, k-1] = Σ_{l,m} E_c(t, l, m, k)``: (T, L, M, K) -> (T, K) float64 (the unused NaNs of t < k become 0)."""
    return torch.nan_to_num(cache_error.double()).sum(dim=(1, 2))


def interval_costs(step_cost: torch.Tensor, max_interval: int) -> torch.Tensor:
    """``C[s, n-1] = Σ_{k=1}^{n-1} E[s+k, k-1]`` over steps ``s+k < T``: (T, K) -> (T, N), ``N = max_interval``."""
    steps, distances = step_cost.shape
    _require(
        1 <= max_interval <= distances + 1,
        f"max_interval={max_interval} needs reuse distances up to {max_interval - 1}, but the step costs have "
        f"{distances}. Fix: use max_interval between 1 and {distances + 1}.",
    )
    starts = torch.arange(steps)
    cost = torch.zeros(steps, max_interval, dtype=torch.float64)
    for k in range(1, max_interval):
        t = starts + k  # (T,)
        term = torch.where(t < steps, step_cost.double()[t.clamp(max=steps - 1), k - 1], 0.0)  # (T,)
        cost[:, k] = cost[:, k - 1] + term
    return cost


def dp_table(interval_cost: torch.Tensor, max_anchors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``F[s, j]``, the least cost of covering steps ``s..T-1`` with ``j`` intervals (inf: impossible), and
    ``choice[s, j]``, the interval length attaining it (ties: the shorter). (T, N) -> two (T+1, max_anchors+1)."""
    steps, longest = interval_cost.shape
    best = torch.full((steps + 1, max_anchors + 1), math.inf, dtype=torch.float64)
    best[steps, 0] = 0.0
    choice = torch.zeros(steps + 1, max_anchors + 1, dtype=torch.long)
    after = (torch.arange(steps)[:, None] + torch.arange(1, longest + 1)).clamp(max=steps)  # (T, N) next start
    for j in range(1, max_anchors + 1):
        total = interval_cost + best[after, j - 1]  # (T, N)
        value, index = total.min(dim=1)  # first minimum, i.e. the shortest interval on ties
        best[:steps, j] = value
        choice[:steps, j] = index + 1
    return best, choice


def backtrack(choice: Sequence[Sequence[int]], n_anchors: int) -> tuple[int, ...]:
    """Anchor steps of the optimum with ``n_anchors`` intervals, from ``dp_table``'s ``choice`` (as nested lists)."""
    steps = len(choice) - 1
    anchors, start = [], 0
    for j in range(n_anchors, 0, -1):
        anchors.append(start)
        start = min(start + choice[start][j], steps)
    return tuple(anchors)


def dp_anchors(step_cost: torch.Tensor, n_anchors: int, max_interval: int) -> tuple[float, tuple[int, ...]]:
    """DCS: the ``n_anchors`` anchors minimising ``Σ C(s, n)`` over intervals of at most ``max_interval`` steps.

    ``step_cost`` is ``E`` (T, K); returns ``(F[0][n_anchors], anchors)`` in O(T·n_anchors·max_interval).
    """
    steps = step_cost.shape[0]
    fewest = math.ceil(steps / max_interval) if max_interval >= 1 else steps + 1
    _require(
        _is_int(n_anchors) and fewest <= n_anchors <= steps,
        f"n_anchors={n_anchors!r} is infeasible for {steps} steps with intervals of at most {max_interval} steps: "
        f"the valid range is {fewest}..{steps}. Fix: pick a count in that range or allow longer intervals.",
    )
    best, choice = dp_table(interval_costs(step_cost, max_interval), n_anchors)
    return float(best[0, n_anchors]), backtrack(choice.tolist(), n_anchors)


def uniform_anchors(steps: int, n_anchors: int) -> tuple[int, ...]:
    """``n_anchors`` anchors spread evenly over ``steps`` steps, ``floor(i·T / N_a)``: a fixed interval wherever
    ``N_a`` divides ``T`` (the "fixed-interval" schedule of the paper's ablation), else intervals differing by 1."""
    _require(
        1 <= n_anchors <= steps,
        f"n_anchors={n_anchors} is infeasible for {steps} steps: the valid range is 1..{steps}.",
    )
    return tuple(i * steps // n_anchors for i in range(n_anchors))


# --------------------------------------------------------------------------------- with compensation (two anchors)
#
# A forecast on a reuse step reads the last two anchors, so its cost depends on the previous interval's length p
# too (p = 0: the first interval, no anchor before it). The DP carries p in its state:
#     E[t, k, p]                                      step cost at distance k, previous interval p
#     C(s, n, p) = Σ_{k=1}^{n-1} E[s+k, k, p]
#     F[T][0][p] = 0,  F[s][j][p] = min_n C(s, n, p) + F[min(s+n, T)][j-1][n],  answer F[0][N_a][0]
# in O(T·N_a·N²).


def interval_costs_after(step_cost: torch.Tensor, max_interval: int) -> torch.Tensor:
    """``C[s, n-1, p] = Σ_{k=1}^{n-1} E[s+k, k-1, p]``: (T, K, P) -> (T, N, P), ``N = max_interval``."""
    steps, distances, previous = step_cost.shape
    _require(
        1 <= max_interval <= distances + 1 and previous >= max_interval + 1,
        f"max_interval={max_interval} needs reuse distances up to {max_interval - 1} and previous intervals up to "
        f"{max_interval}, but the step costs have {distances} and {previous - 1}.",
    )
    starts = torch.arange(steps)
    cost = torch.zeros(steps, max_interval, previous, dtype=torch.float64)
    for k in range(1, max_interval):
        t = starts + k  # (T,)
        term = torch.where((t < steps)[:, None], step_cost.double()[t.clamp(max=steps - 1), k - 1], 0.0)  # (T, P)
        cost[:, k] = cost[:, k - 1] + term
    return cost


def dp_table_after(interval_cost: torch.Tensor, max_anchors: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``F[s, j, p]`` and ``choice[s, j, p]`` (ties: the shorter interval): (T, N, P) -> two (T+1, J+1, P)."""
    steps, longest, previous = interval_cost.shape
    best = torch.full((steps + 1, max_anchors + 1, previous), math.inf, dtype=torch.float64)
    best[steps, 0] = 0.0
    choice = torch.zeros(steps + 1, max_anchors + 1, previous, dtype=torch.long)
    after = (torch.arange(steps)[:, None] + torch.arange(1, longest + 1)).clamp(max=steps)  # (T, N) next start
    lengths = torch.arange(1, longest + 1).expand(steps, longest)  # (T, N): the next state's p
    for j in range(1, max_anchors + 1):
        following = best[:, j - 1][after, lengths]  # (T, N)
        value, index = (interval_cost + following[..., None]).min(dim=1)  # (T, P)
        best[:steps, j] = value
        choice[:steps, j] = index + 1
    return best, choice


def backtrack_after(choice: Sequence[Sequence[Sequence[int]]], n_anchors: int) -> tuple[int, ...]:
    """Anchor steps of the optimum with ``n_anchors`` intervals from ``dp_table_after``'s ``choice`` (nested lists)."""
    steps = len(choice) - 1
    anchors, start, previous = [], 0, 0
    for j in range(n_anchors, 0, -1):
        anchors.append(start)
        length = choice[start][j][previous]
        start, previous = min(start + length, steps), length
    return tuple(anchors)
