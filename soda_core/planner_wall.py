"""Planning for a wall-time speed-up (``PlanConfig.speedup_in = "wall"``): the same DCS + UAS search, priced in the
seconds the profiling run measured (``timing.TimeModel``) instead of FLOPs.

The profile's ``FlopModel`` is swapped for the time model's ``cost_model`` (seconds per model call in the same
form: base, full, fixed + r·per_ratio, record), so the target, the DP's budget and the UAS ratios are in seconds:
a reuse step costs its measured per-step time, a partial recompute its measured fixed cost plus its per-ratio
slope, both above reuse.

A partial recompute is never planned where it takes as long as computing the module in full
(``TimeModel.partial_limit``: the ratio where the measured line crosses the module's full time). UAS caps all
ratios with one ``ratio_max``, so every cap ``c`` at which some module's limit lies is a candidate: modules whose
limit is at most ``c`` are never partially recomputed (E_p = inf), the others recompute at most ``c``. Each
candidate is planned and the least predicted error wins (ties: more full steps), as the planner chooses among
anchor counts.

The schedule keeps both figures: ``predicted_wall_ratio`` (the time model's) and ``predicted_flops_ratio`` (the
profile's FLOP model's).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .planner import PlanConfig, plan
from .pricing import schedule_flops
from .profile import SensitivityProfile
from .schedule import Schedule


MAX_CAPS = 6  # ratio caps tried (each is one plan; distinct limits beyond this are thinned evenly)
CAP_MARGIN = 1e-6  # a cap stays this share below a module's limit, so its partial recompute is strictly cheaper
NO_TIMES = (
    "PlanConfig.speedup_in='wall' prices schedules with the block times measured while profiling, but this profile "
    "has none (an older version of the pack wrote it, it was profiled with time_repeats=0, or its run had a single "
    "step). Fix: profile again with Profile Sensitivity (SODA), or let SODA Accelerate profile the setting again, "
    "or plan with speedup_in='flops'."
)


def plan_wall(profile: SensitivityProfile, config: PlanConfig) -> Schedule:
    """``plan`` with ``config.target`` a wall-time speed-up predicted by ``profile.time`` (see the module)."""
    time = profile.time
    if time is None:
        raise ValueError(NO_TIMES)
    priced = dataclasses.replace(profile, flops=time.cost_model(profile.flops))
    flat = dataclasses.replace(config, speedup_in="flops")
    limits = time.partial_limit()  # (L, M)
    prunable = _prunable(profile)
    best: tuple[Schedule, float, int] | None = None
    failure: ValueError | None = None
    for cap in ratio_caps(limits, prunable, config) if prunable.any() and config.pruning else [config.ratio_max]:
        slower = prunable & ~(limits > cap)  # modules whose partial recompute at <= cap would not be cheaper
        candidate = _masked(priced, slower)
        sub = dataclasses.replace(flat, ratio_max=cap, ratio_min=min(config.ratio_min, cap))
        try:
            schedule = plan(candidate, sub)
        except ValueError as error:
            failure = failure or error
            continue
        key = (schedule.predicted_error, -len(schedule.anchors))
        if best is None or key < (best[0].predicted_error, -len(best[0].anchors)):
            best = (schedule, cap, int(slower.sum()))
    if best is None:
        assert failure is not None
        message = str(failure).replace("FLOPs speed-up", "wall-time speed-up (the profile's measured block times)")
        raise ValueError(message) from None
    return _both_figures(profile, config, *best)


def ratio_caps(limits: torch.Tensor, prunable: torch.Tensor, config: PlanConfig) -> list[float]:
    """The ratio caps to plan with: ``ratio_max``, and just below every module limit between ``ratio_min`` and
    ``ratio_max`` (at most ``MAX_CAPS``, thinned evenly)."""
    values = sorted({float(v) for v in limits[prunable].tolist()})
    caps = sorted({v * (1 - CAP_MARGIN) for v in values if config.ratio_min < v * (1 - CAP_MARGIN) < config.ratio_max})
    caps.append(config.ratio_max)
    if len(caps) > MAX_CAPS:
        caps = [caps[round(i * (len(caps) - 1) / (MAX_CAPS - 1))] for i in range(MAX_CAPS)]
    return sorted(set(caps))


def _prunable(profile: SensitivityProfile) -> torch.Tensor:
    """(L, M) modules the profile lets recompute selected tokens somewhere (a finite E_p)."""
    if not profile.has_prune_error:
        return torch.zeros(profile.layout.num_layers, profile.layout.num_modules, dtype=torch.bool)
    finite = torch.isfinite(profile.prune_error.permute(1, 2, 0, 3, 4).flatten(2))  # (L, M, T·K·R)
    return finite.any(dim=-1)


def _masked(profile: SensitivityProfile, never: torch.Tensor) -> SensitivityProfile:
    """``profile`` with E_p = inf (never recompute selected tokens) on the modules ``never`` (L, M) marks."""
    if not bool(never.any()):
        return profile
    prune = profile.prune_error.clone()
    prune[:, never] = math.inf
    return dataclasses.replace(profile, prune_error=prune)


def _both_figures(
    profile: SensitivityProfile, config: PlanConfig, schedule: Schedule, cap: float, slower: int
) -> Schedule:
    """The schedule planned in seconds, with its FLOPs ratio from the profile's FLOP model and both in the notes."""
    steps = schedule.steps
    wall = schedule.predicted_flops_ratio
    flops = (
        1.0
        if len(schedule.anchors) == steps
        else steps * profile.flops.step_full / schedule_flops(profile.flops, schedule.anchors, schedule.recompute)
    )
    note = f"priced in wall time (block times measured while profiling): {wall:.2f}x wall, {flops:.2f}x FLOPs"
    if cap < config.ratio_max:
        note += f"; recompute shares capped at {cap:.3f}"
    if slower:
        note += f"; {slower} module(s) never partially recomputed (no faster than computing them in full)"
    return dataclasses.replace(
        schedule,
        predicted_flops_ratio=flops,
        predicted_wall_ratio=wall,
        notes=(*schedule.notes, note),
        config={**dataclasses.asdict(config), "beta": schedule.config.get("beta"), "ratio_cap": cap},
    )
