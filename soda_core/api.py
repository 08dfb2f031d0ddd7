"""The three SODA stages as the nodes call them: profile a run, plan a schedule, serve a run with it.

What Plan SODA Schedule sends to SODA Model Patch (socket ``SODA_PLAN``) is one of two things, never a mix:

  * ``FixedSchedule``: a schedule sampled exactly as it is, on the sigma grid it was made for; a run on other sigmas
    is refused, never re-planned behind the user's back (baselines, hand-made schedules);
  * ``ReplanRecipe``: the profile and the planning config, with the schedule planned on the profile's own grid; a
    run on other sigmas (step count, scheduler, denoise) gets a schedule planned on the profile mapped to them.

``schedule_for(plan, sigmas)`` is the one place that decides which schedule a run samples with.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch

from .compensation import PREDICTORS, check_mode
from .planner import PlanConfig, plan
from .pricing import reuse_steps
from .profile import SensitivityProfile
from .schedule import Schedule


logger = logging.getLogger(__name__)

REPLAN_MEMO = (
    8  # re-planned schedules kept per recipe (least recently used dropped): a cached patched model stays small
)


def same_grid(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two sigma grids are the same run's (up to float noise)."""
    return a.shape == b.shape and bool(torch.allclose(a.double().cpu(), b.double().cpu(), rtol=1e-5, atol=1e-7))


@dataclass(frozen=True)
class FixedSchedule:
    """A schedule that is sampled as it is, only on its own sigma grid. ``profile`` names the model it was measured
    on (layout, granularity, token score); it is never planned from."""

    schedule: Schedule
    profile: SensitivityProfile


@dataclass(frozen=True, eq=False)
class ReplanRecipe:
    """How to plan any run: ``config`` applied to ``profile`` (mapped to the run's sigmas where they differ).
    ``schedule`` is the plan on the profile's own grid; ``memo`` the last ``REPLAN_MEMO`` plans for other grids."""

    profile: SensitivityProfile
    config: PlanConfig
    schedule: Schedule
    memo: OrderedDict[tuple[float, ...], Schedule] = field(default_factory=OrderedDict, repr=False)


Plan: TypeAlias = FixedSchedule | ReplanRecipe


def attention_modules(modules: tuple[str, ...]) -> tuple[str, ...]:
    """The attention modules of a layout: by the records' naming rule, every module whose name contains "attn"
    (attn, attn1, attn2, self_attn, cross_attn; ``adapters/spec.py``)."""
    return tuple(m for m in modules if "attn" in m)


def plan_schedule(profile: SensitivityProfile, config: PlanConfig, prune_attention: bool) -> ReplanRecipe:
    """DCS + UAS on a profile. With ``prune_attention`` off, attention modules (``attention_modules``) are only
    ever computed or reused whole (ToCa's choice); MLPs may still be partially recomputed."""
    planning_profile = profile
    if not prune_attention:
        for module in attention_modules(profile.layout.modules):
            planning_profile = planning_profile.without_pruning(module)
    return ReplanRecipe(planning_profile, config, plan(planning_profile, config))


def with_compensation(soda_plan: Plan, mode: str) -> Plan:
    """``soda_plan`` serving its reuse steps with ``mode`` (``compensation.MODES``): ``none`` keeps the plan as it
    is; a recipe is re-planned with the mode (the same plan when it already has it); a fixed schedule gets taylor1 / taylor2 on every whole-module reuse cell
    (goc and auto need a profile-planned schedule: their weights and choices come from the profile)."""
    check_mode(mode)
    if mode == "none":  # the plan as it is (Plan SODA Schedule's plans serve plain reuse)
        return soda_plan
    if isinstance(soda_plan, ReplanRecipe):
        if soda_plan.config.compensation == mode:
            return soda_plan
        config = dataclasses.replace(soda_plan.config, compensation=mode)
        return ReplanRecipe(soda_plan.profile, config, plan(soda_plan.profile, config))
    if mode not in ("taylor1", "taylor2"):
        raise ValueError(
            f"compensation={mode!r} needs a schedule planned from a profile (its weights and per-cell choices are "
            "measured), but this schedule is fixed (a baseline or hand-made schedule). Fix: use compensation "
            "'taylor1' or 'taylor2' with it, or plan from the profile with Plan SODA Schedule."
        )
    schedule = soda_plan.schedule
    codes = torch.zeros(schedule.recompute.shape, dtype=torch.int8)
    reused, _ = reuse_steps(schedule.anchors, schedule.steps)
    codes[reused] = torch.where(schedule.recompute[reused] == 0, PREDICTORS.index(mode), 0).to(torch.int8)
    notes = (*schedule.notes, f"compensation {mode} on every reused module")
    compensated = dataclasses.replace(schedule, compensation=codes, weights=torch.zeros(codes.shape), notes=notes)
    return FixedSchedule(compensated, soda_plan.profile)


def schedule_for(soda_plan: Plan, sigmas: torch.Tensor) -> Schedule:
    """The schedule a run on ``sigmas`` samples with: the plan's own schedule on its grid; otherwise the recipe
    planned on the profile mapped to ``sigmas`` (one INFO line per new grid, kept for the next run on it), and for a
    fixed schedule a ``ValueError`` before sampling starts."""
    sigmas = sigmas.detach().double().cpu()
    if same_grid(soda_plan.schedule.sigmas, sigmas):
        return soda_plan.schedule
    if isinstance(soda_plan, FixedSchedule):
        raise ValueError(
            f"This SODA schedule is fixed to the {soda_plan.schedule.steps}-step run it was made for "
            f"(sigmas {_grid(soda_plan.schedule.sigmas)}), but this run samples {sigmas.numel() - 1} steps on "
            f"sigmas {_grid(sigmas)}; a fixed schedule is never re-planned. Fix: sample with the schedule's steps, "
            "scheduler and denoise, or plan from the profile with Plan SODA Schedule."
        )
    key = tuple(round(float(s), 8) for s in sigmas)
    memo = soda_plan.memo
    if key in memo:
        memo.move_to_end(key)
        return memo[key]
    logger.info(
        "SODA: re-planning for a %d-step run on sigmas %s (the profile has %d steps): planned on the profile mapped "
        "to this run's sigmas, an approximation; profile with this run's settings for exact sensitivities.",
        sigmas.numel() - 1,
        _grid(sigmas),
        soda_plan.profile.steps,
    )
    schedule = plan(soda_plan.profile.resample(sigmas), soda_plan.config)
    memo[key] = schedule
    while len(memo) > REPLAN_MEMO:
        memo.popitem(last=False)
    return schedule


def _grid(sigmas: torch.Tensor) -> str:
    return f"{float(sigmas[0]):.4g} -> {float(sigmas[-1]):.4g}"


def describe_plan(soda_plan: Plan) -> str:
    """The Plan node's summary: the schedule in user words, and what happens on other runs."""
    schedule = soda_plan.schedule
    meta = soda_plan.profile.meta
    settings = "/".join(str(meta[k]) for k in ("sampler", "scheduler") if k in meta)
    where = f"Planned for the profile's {schedule.steps} steps" + (f" ({settings})" if settings else "") + "."
    later = (
        "A run with other steps, scheduler or denoise is re-planned from the profile when it starts."
        if isinstance(soda_plan, ReplanRecipe)
        else "Fixed: a run on other sigmas is refused."
    )
    return "\n".join([where, schedule.summary(), later])


def describe_run(meta: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(meta.items()) if not isinstance(v, dict))
