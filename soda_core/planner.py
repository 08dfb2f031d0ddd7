"""DCS + UAS planning (SODA §3-4): from a sensitivity profile and a speed target to a ``Schedule``.

DCS (``dcs.py``) picks the anchor steps by dynamic programming over (start step, anchors left), or spreads them
evenly (``PlanConfig.anchors="uniform"``, the paper's fixed-interval ablation); UAS (``uas.py``) then spends the
FLOPs the anchors leave under the budget on partial recomputes, through the offset β. N_a and β are chosen together: the pair with the least predicted error

    Σ_{reuse (t,l,m)} E_p(t, l, m, k, r) where partially recomputed, else E_c(t, l, m, k)

among those whose FLOPs ratio ``T·step_full / Σ_t FLOPs(t)`` meets the target (ties: more anchors). For each N_a, β
is the largest value (bisection) whose ratio still meets the target.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .compensation import check_mode
from .compensation_plan import CellTable, cell_table, previous_intervals
from .dcs import (
    backtrack,
    backtrack_after,
    dp_table,
    dp_table_after,
    interval_costs,
    interval_costs_after,
    step_costs,
    uniform_anchors,
)
from .flops import FlopModel
from .pricing import anchor_flops, reuse_steps, schedule_flops
from .profile import SensitivityProfile
from .profile_checks import absent_modules, error_problems, flop_problems, ratio_problems
from .schedule import Schedule
from .uas import UasTable, bisect_largest, build_uas_table, cell_tables, decide


__all__ = ["PlanConfig", "anchor_flops", "plan", "reuse_steps", "schedule_flops"]
BISECTION_STEPS = 40
FLOPS_MARGIN = 1e-6  # the β search keeps this FLOPs headroom so the float32 ratios a Schedule stores stay in budget
JOINT_CANDIDATES = 2  # joint_cost re-plans the anchors of this many of the best anchor counts
JOINT_STEPS = 20  # β halvings of a joint re-plan (each one runs the DP); 2**-20 of the bracket is plenty
ANCHOR_PLACEMENTS = ("dp", "uniform")
SPEEDUP_UNITS = ("flops", "wall")


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class PlanConfig:
    """What to plan for: the speed target and the DCS / UAS knobs (SODA §3-4).

    ``target`` is the transformer-FLOPs speed-up; ``min_full_steps`` the least number of anchors; ``max_interval``
    the longest interval (one anchor + n-1 reuse steps; default and cap: the profile's largest distance + 1);
    ``pruning`` enables UAS partial recomputes with ``r = clip(lam·E_c + β, 0, 1)``, ``r < ratio_min`` meaning
    reuse and ``r`` capped at ``ratio_max``; ``joint_cost`` lets the DP price a reuse module at its UAS error
    ``min(E_c, E_p(r))`` instead of ``E_c`` (beyond the paper); ``anchors`` places the full steps by the DP
    (``"dp"``, SODA's DCS) or evenly (``"uniform"``, the paper's fixed-interval ablation); ``compensation`` serves
    whole-module reuse cells by a forecast (``compensation.MODES``; the DP then prices each cell at the chosen
    predictor's profiled error, ``compensation_plan``), partially recomputed cells stay plain; ``speedup_in``
    says what ``target`` speeds up: ``"flops"`` transformer FLOPs, ``"wall"`` the wall time the profile's measured
    ``timing.TimeModel`` predicts (``planner_wall``).
    """

    target: float = 2.0
    min_full_steps: int = 1
    max_interval: int | None = None
    pruning: bool = True
    lam: float = 1.0
    ratio_min: float = 0.05
    ratio_max: float = 0.9
    joint_cost: bool = False
    anchors: str = "dp"
    compensation: str = "none"
    speedup_in: str = "flops"

    def __post_init__(self) -> None:
        check_mode(self.compensation, "PlanConfig.compensation")
        _require(
            self.speedup_in in SPEEDUP_UNITS,
            f"PlanConfig.speedup_in must be one of {SPEEDUP_UNITS} (what the target speeds up), got "
            f"{self.speedup_in!r}. Fix: pass speedup_in='flops' (transformer FLOPs) or 'wall' (measured time).",
        )
        _require(
            not (self.joint_cost and self.compensation != "none"),
            "PlanConfig.joint_cost prices reuse cells at their UAS error without compensation, so it cannot be "
            f"combined with compensation={self.compensation!r}. Fix: drop joint_cost or use compensation='none'.",
        )
        _require(
            _is_real(self.target) and self.target >= 1.0,
            f"PlanConfig.target must be a finite number >= 1.0 (transformer-FLOPs speed-up; 1.0 = full compute), "
            f"got {self.target!r}. Fix: pass e.g. target=2.0.",
        )
        _require(
            _is_int(self.min_full_steps) and self.min_full_steps >= 1,
            f"PlanConfig.min_full_steps must be an int >= 1 (step 0 is always a full step), got "
            f"{self.min_full_steps!r}. Fix: pass e.g. min_full_steps=1.",
        )
        _require(
            self.max_interval is None or (_is_int(self.max_interval) and self.max_interval >= 1),
            f"PlanConfig.max_interval must be None (the profile's largest distance + 1) or an int >= 1, got "
            f"{self.max_interval!r}. Fix: pass None or e.g. max_interval=4.",
        )
        for name in ("pruning", "joint_cost"):
            value = getattr(self, name)
            _require(isinstance(value, bool), f"PlanConfig.{name} must be True or False, got {value!r}.")
        _require(
            _is_real(self.lam) and self.lam >= 0.0,
            f"PlanConfig.lam must be a finite number >= 0 (λ in r = clip(λ·E_c + β, 0, 1)), got {self.lam!r}. "
            "Fix: pass e.g. lam=1.0.",
        )
        _require(
            _is_real(self.ratio_min) and _is_real(self.ratio_max) and 0.0 < self.ratio_min <= self.ratio_max <= 1.0,
            f"PlanConfig needs 0 < ratio_min <= ratio_max <= 1 (shares of image tokens recomputed), got ratio_min="
            f"{self.ratio_min!r}, ratio_max={self.ratio_max!r}. Fix: pass e.g. ratio_min=0.05, ratio_max=0.9.",
        )
        _require(
            self.anchors in ANCHOR_PLACEMENTS,
            f"PlanConfig.anchors must be one of {ANCHOR_PLACEMENTS} (how full steps are placed), got "
            f"{self.anchors!r}. Fix: pass anchors='dp' (SODA) or 'uniform'.",
        )
        _require(
            not (self.joint_cost and self.anchors != "dp"),
            "PlanConfig.joint_cost re-runs the DP on UAS costs, so it needs anchors='dp'. Fix: drop one of the two.",
        )


@dataclass(frozen=True)
class _Search:
    flops: FlopModel
    steps: int
    modules: int  # L·M
    longest: int
    target: float
    step_cost: torch.Tensor  # (T, K)
    uas: UasTable | None  # None: no token pruning
    cells: CellTable | None = None  # compensation: the cells' errors by previous interval
    after: torch.Tensor | None = None  # (T, K, P) their step costs

    def ratio(self, total_flops: float) -> float:
        return self.steps * self.flops.step_full / total_flops

    def meets(self, total_flops: float) -> bool:
        return self.ratio(total_flops) >= self.target

    @property
    def flops_limit(self) -> float:
        return self.steps * self.flops.step_full / self.target * (1.0 - FLOPS_MARGIN)


@dataclass(frozen=True)
class _Candidate:
    error: float
    anchors: tuple[int, ...]
    beta: float | None
    steps: torch.Tensor  # (n,) reuse steps
    ratios: torch.Tensor  # (n, LM) recompute ratios on them
    joint: bool = False

    def key(self) -> tuple[float, int]:
        return self.error, -len(self.anchors)


def _at_beta(search: _Search, anchors: tuple[int, ...], beta: float | None) -> _Candidate:
    """The UAS decision and predicted error of ``anchors`` at ``β`` (None: reuse whole modules)."""
    steps, distances = reuse_steps(anchors, search.steps)
    previous = previous_intervals(anchors, steps)
    if search.uas is None or beta is None or steps.numel() == 0:
        if search.after is not None:
            error = float(search.after[steps, distances - 1, previous].sum())
        else:
            error = float(search.step_cost[steps, distances - 1].sum())
        return _Candidate(error, anchors, None, steps, torch.zeros(steps.numel(), search.modules))
    ratios, error_per_module = decide(search.uas, search.uas.gather(steps, distances), beta)
    if search.cells is not None:  # whole-module reuse is served by the cell's predictor, partial recompute only
        reused, codes, _ = search.cells.at(steps, distances, previous)  # where it beats the forecast (fewer FLOPs)
        reused, forecast = reused.reshape(steps.numel(), -1), codes.reshape(steps.numel(), -1) > 0  # (n, LM)
        ratios = torch.where(forecast & (reused <= error_per_module), 0.0, ratios)
        error_per_module = torch.where(ratios > 0, error_per_module, reused)
    return _Candidate(float(error_per_module.sum()), anchors, beta, steps, ratios)


def _tuned(search: _Search, anchor_sets: list[tuple[int, ...]]) -> list[_Candidate]:
    """Every anchor set with the largest β whose FLOPs still meet the target, all bisections in lockstep."""
    uas = search.uas
    if uas is None:
        return [_at_beta(search, anchors, None) for anchors in anchor_sets]
    reuse = [reuse_steps(anchors, search.steps) for anchors in anchor_sets]
    cells = torch.cat([steps * uas.distances + distances - 1 for steps, distances in reuse])  # (S,)
    owner = torch.repeat_interleave(torch.tensor([steps.numel() for steps, _ in reuse]))  # (S,) its anchor set
    limit = [search.flops_limit - anchor_flops(search.flops, anchors, search.steps) for anchors in anchor_sets]
    budget = torch.tensor(limit, dtype=torch.float64)  # (C,) FLOPs left for partial recomputes

    def accept(beta: torch.Tensor) -> torch.Tensor:
        flops = torch.zeros_like(budget).index_add_(0, owner, uas.curve.at(cells, beta[owner]))  # (C,)
        return flops <= budget

    betas = bisect_largest(accept, *uas.bracket, count=len(anchor_sets), steps=BISECTION_STEPS)
    return [_at_beta(search, anchors, beta) for anchors, beta in zip(anchor_sets, betas.tolist())]


def _joint(search: _Search, start: tuple[int, ...]) -> _Candidate:
    """``len(start)`` anchors planned on UAS costs: bisection on β, each try re-running the DP on the cells' error
    ``Σ_{l,m} min(E_c, E_p(r))`` at that β and pricing the FLOPs of the anchors it returns."""
    assert search.uas is not None
    uas, n_anchors = search.uas, len(start)
    planned = {uas.bracket[0]: start}  # at the low end nothing is recomputed: the caching-only anchors

    def accept(beta: float) -> bool:
        error, flops = cell_tables(uas, beta)  # (T, K) each
        _, choice = dp_table(interval_costs(error, search.longest), n_anchors)
        planned[beta] = anchors = backtrack(choice.tolist(), n_anchors)
        steps, distances = reuse_steps(anchors, search.steps)
        total = anchor_flops(search.flops, anchors, search.steps) + float(flops[steps, distances - 1].sum())
        return total <= search.flops_limit

    beta = float(bisect_largest(lambda b: torch.tensor([accept(float(b[0]))]), *uas.bracket, 1, JOINT_STEPS)[0])
    return dataclasses.replace(_at_beta(search, planned[beta], beta), joint=True)


def _prepare(profile: SensitivityProfile, config: PlanConfig, longest: int, notes: list[str]) -> _Search:
    uas = None
    if config.pruning and profile.has_prune_error:
        uas = build_uas_table(profile, config.lam, config.ratio_min, config.ratio_max)
    elif config.pruning:
        notes.append("token pruning off: the profile has no prune_error (profile with prune ratios to enable it)")
    modules = profile.layout.num_layers * profile.layout.num_modules
    return _Search(profile.flops, profile.steps, modules, longest, config.target, step_costs(profile.cache_error), uas)


def _check_profile(profile: SensitivityProfile, pruning: bool) -> None:
    """The profile's invariants (``profile_checks``) again: its tensors are mutable and may have changed since."""
    steps, distances = profile.steps, profile.max_distance
    _require(
        steps >= 1 and distances >= 1,
        f"The profile has {steps} steps and {distances} reuse distances; planning needs at least 1 of each. "
        "Fix: re-run the Profile Sensitivity node.",
    )
    absent, modules = absent_modules(profile), profile.layout.modules
    problems = error_problems("cache_error", profile.cache_error, absent, modules, allow_inf=False)
    if pruning:
        problems += ratio_problems(profile.prune_ratios) + flop_problems(profile)
        problems += error_problems("prune_error", profile.prune_error, absent, modules, allow_inf=True)
    _require(
        not problems,
        f"The profile cannot be planned from: {'; '.join(problems)}. Fix: re-run the Profile Sensitivity node.",
    )


def _longest_interval(config: PlanConfig, distances: int, notes: list[str]) -> int:
    if config.max_interval is not None and config.max_interval > distances + 1:
        notes.append(
            f"max_interval {config.max_interval} capped to {distances + 1}: the profile has distances <= {distances}"
        )
    return min(config.max_interval or distances + 1, distances + 1)


def plan(profile: SensitivityProfile, config: PlanConfig) -> Schedule:
    """SODA's schedule for ``profile``'s sampling run: DCS anchors and UAS recompute ratios meeting ``config.target``.

    For every anchor count ``N_a`` from ``ceil(T/N)`` (at least ``min_full_steps``) to ``T`` whose caching-only
    FLOPs ratio meets the target, the DP places the anchors and β takes the remaining budget; the ``(N_a, β)`` with
    the least predicted error wins (ties: more anchors). Raises ``ValueError`` when no ``N_a`` meets the target.
    """
    if config.speedup_in == "wall":
        from .planner_wall import plan_wall

        return plan_wall(profile, config)
    steps, notes = profile.steps, list[str]()
    _check_profile(profile, config.pruning and profile.has_prune_error)
    longest = _longest_interval(config, profile.max_distance, notes)
    _require(
        config.min_full_steps <= steps,
        f"min_full_steps={config.min_full_steps} exceeds the {steps} steps planned for: the valid range is "
        f"1..{steps}. Fix: lower min_full_steps, or profile and sample with more steps.",
    )
    resampled = profile.meta.get("resampled")
    if isinstance(resampled, dict):
        notes.append(
            f"profile resampled from {resampled.get('from_steps')} to {resampled.get('to_steps')} steps "
            "(approximate; a profile of this run's settings is exact)"
        )
    if config.target == 1.0:
        full = _Candidate(0.0, tuple(range(steps)), None, torch.zeros(0, dtype=torch.long), torch.zeros(0, 1))
        return _schedule(profile, config, full, ["full compute: target 1.0", *notes], longest)
    search = _prepare(profile, config, longest, notes)
    if config.compensation != "none":
        cells = cell_table(profile, config.compensation, longest)
        search = dataclasses.replace(search, cells=cells, after=cells.step_costs())
        notes.extend(cells.notes)
    fewest = max(math.ceil(steps / longest), config.min_full_steps)
    if config.anchors == "uniform":
        anchor_sets = [uniform_anchors(steps, n) for n in range(fewest, steps + 1)]
        notes.append("full steps spread evenly (fixed-interval ablation), not placed by the DP")
    elif search.after is not None:
        _, choice = dp_table_after(interval_costs_after(search.after, longest), steps)
        choices = choice.tolist()
        anchor_sets = [backtrack_after(choices, n) for n in range(fewest, steps + 1)]
    else:
        _, choice = dp_table(interval_costs(search.step_cost, longest), steps)
        choices = choice.tolist()
        anchor_sets = [backtrack(choices, n) for n in range(fewest, steps + 1)]
    totals = [anchor_flops(search.flops, anchors, steps) for anchors in anchor_sets]
    feasible = [anchors for anchors, total in zip(anchor_sets, totals) if search.meets(total)]
    if not feasible:
        best_ratio = max(search.ratio(total) for total in totals)
        grid = "this run's" if isinstance(resampled, dict) else "the profile's"
        few = (
            f" A {steps}-step profile leaves (almost) no step to reuse: profile with the step count you sample with."
            if steps < 4 and not isinstance(resampled, dict)
            else ""
        )
        raise ValueError(
            f"A {config.target:g}x FLOPs speed-up is out of reach on {grid} {steps} steps: with intervals of at most "
            f"{longest} steps and at least {config.min_full_steps} full steps the highest ratio is {best_ratio:.3f}x. "
            f"Fix: lower the target to at most {math.floor(best_ratio * 1000) / 1000:.3f}, or allow longer intervals "
            f"(max_interval up to {profile.max_distance + 1}; a profile with more reuse distances allows more).{few}"
        )
    candidates = sorted(_tuned(search, feasible), key=_Candidate.key)
    best = candidates[0]
    if config.joint_cost and search.uas is not None:
        for candidate in candidates[:JOINT_CANDIDATES]:
            joint = _joint(search, candidate.anchors)
            best = joint if joint.key() < best.key() else best
    return _schedule(profile, config, best, notes, longest, search.cells)


def _schedule(
    profile: SensitivityProfile,
    config: PlanConfig,
    best: _Candidate,
    notes: list[str],
    longest: int,
    cells: CellTable | None = None,
) -> Schedule:
    steps, layout = profile.steps, profile.layout
    recompute = torch.ones(steps, layout.num_layers, layout.num_modules)  # (T, L, M)
    codes, weights = torch.zeros(0, dtype=torch.int8), torch.zeros(0)
    if best.steps.numel():
        recompute[best.steps] = best.ratios.float().reshape(-1, layout.num_layers, layout.num_modules)
    if cells is not None:
        codes, weights = torch.zeros(recompute.shape, dtype=torch.int8), torch.zeros(recompute.shape)
        reused, distances = reuse_steps(best.anchors, steps)
        _, chosen, weight = cells.at(reused, distances, previous_intervals(best.anchors, reused))
        whole = recompute[reused] == 0  # partially recomputed cells mix with the plain cached value
        codes[reused] = torch.where(whole, chosen, 0).to(torch.int8)
        weights[reused] = torch.where(whole, weight, 0.0)
    ratio = steps * profile.flops.step_full / schedule_flops(profile.flops, best.anchors, recompute)
    summary = f"intervals of at most {longest} steps"
    if best.beta is None:
        summary += "; no token pruning"
    else:
        summary += f"; UAS λ = {config.lam:g}, β = {best.beta:.4f}" + (" (joint DP costs)" if best.joint else "")
    if config.compensation != "none":
        summary += f"; compensation {config.compensation}"
    return Schedule(
        layout=layout,
        sigmas=profile.sigmas.double().cpu(),
        anchors=best.anchors,
        recompute=recompute,
        predicted_flops_ratio=1.0 if len(best.anchors) == steps else ratio,
        predicted_error=best.error,
        notes=(summary, *notes),
        config={**dataclasses.asdict(config), "beta": best.beta},
        compensation=codes,
        weights=weights,
    )
