"""What Plan sends and what a run samples with say the same thing: a fixed schedule is never re-planned, a re-plan
recipe plans each new sigma grid once (one log line), keeps a bounded memo, and every summary describes its own
schedule."""

from __future__ import annotations

import logging

import pytest
import torch

from comfyui_soda.soda_core import api
from comfyui_soda.soda_core.api import (
    FixedSchedule,
    ReplanRecipe,
    describe_plan,
    plan_schedule,
    schedule_for,
)
from comfyui_soda.soda_core.flops import FlopModel
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
from comfyui_soda.soda_core.planner import PlanConfig
from comfyui_soda.soda_core.profile import SensitivityProfile
from comfyui_soda.soda_core.schedule import Schedule


LAYOUT = ModelLayout(tuple(BlockRef("double_block", i) for i in range(3)), ("attn", "mlp"))


def profile_of(steps: int = 20, k: int = 6) -> SensitivityProfile:
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, steps)[:, None, None, None]
    cache = (0.02 + 0.2 * (1 - t) ** 4) * torch.arange(1, k + 1) * (1 + 0.1 * torch.rand(steps, 3, 2, k, generator=g))
    prune = cache[..., None] * (1 - torch.linspace(0.1, 0.9, 9)) ** 1.5
    for d in range(1, k + 1):
        cache[:d, ..., d - 1] = float("nan")
        prune[:d, ..., d - 1, :] = float("nan")
    full = torch.ones(3, 2, dtype=torch.float64)
    flops = FlopModel(full, 0.1 * full, 0.9 * full, 0.1, 0.0)
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    meta = {"sampler": "euler", "scheduler": "simple", "steps": steps}
    return SensitivityProfile(
        LAYOUT, sigmas, cache.clamp(max=2), prune.clamp(max=2), torch.linspace(0.1, 0.9, 9), flops, meta
    )


def grid(steps: int, top: float = 1.0) -> torch.Tensor:
    return torch.linspace(top, 0, steps + 1, dtype=torch.float64)


def replan_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == api.__name__ and "re-planning" in r.getMessage()]


def test_plan_is_a_recipe_and_its_own_grid_is_served_as_planned(caplog):
    recipe = plan_schedule(profile_of(), PlanConfig(target=2.0), prune_attention=False)
    assert isinstance(recipe, ReplanRecipe)
    with caplog.at_level(logging.INFO, logger=api.__name__):
        assert schedule_for(recipe, grid(20)) is recipe.schedule
    assert replan_lines(caplog) == [] and not recipe.memo


def test_a_fixed_schedule_is_never_replanned(caplog):
    profile = profile_of()
    fixed = FixedSchedule(Schedule.uniform(LAYOUT, profile.sigmas, 2), profile)
    assert schedule_for(fixed, grid(20)) is fixed.schedule
    with pytest.raises(ValueError, match=r"fixed to the 20-step run.*samples 5 steps.*never re-planned.*Fix"):
        schedule_for(fixed, grid(5))


def test_each_new_grid_is_planned_once_with_one_log_line(caplog):
    recipe = plan_schedule(profile_of(), PlanConfig(target=2.0), prune_attention=False)
    with caplog.at_level(logging.INFO, logger=api.__name__):
        first = schedule_for(recipe, grid(10))
        again = schedule_for(recipe, grid(10).clone())
        other = schedule_for(recipe, grid(10, top=0.8))
    assert first is again and first.steps == 10 and other.steps == 10 and other is not first
    lines = replan_lines(caplog)
    assert len(lines) == 2 and "10-step run" in lines[0] and "the profile has 20 steps" in lines[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == api.__name__)


def test_the_memo_of_replanned_schedules_is_bounded(caplog):
    recipe = plan_schedule(profile_of(), PlanConfig(target=1.5), prune_attention=False)
    for steps in range(6, 6 + api.REPLAN_MEMO + 4):
        schedule_for(recipe, grid(steps))
    assert len(recipe.memo) == api.REPLAN_MEMO
    caplog.clear()  # count only the lines of the two runs below
    with caplog.at_level(logging.INFO, logger=api.__name__):
        schedule_for(recipe, grid(6 + api.REPLAN_MEMO + 3))  # the newest: kept
        schedule_for(recipe, grid(6))  # the oldest: dropped, planned (and logged) again
    assert len(replan_lines(caplog)) == 1 and len(recipe.memo) == api.REPLAN_MEMO


def test_summaries_describe_their_own_schedule():
    recipe = plan_schedule(profile_of(), PlanConfig(target=2.0), prune_attention=False)
    short = schedule_for(recipe, grid(5))
    lines = short.summary().splitlines()
    reused = short.steps - len(short.anchors)
    assert lines[0] == "steps: 5"
    assert lines[1] == f"full steps: {len(short.anchors)} (steps {', '.join(str(a) for a in short.anchors)})"
    assert lines[2].startswith(f"reused steps: {reused}")
    assert lines[3] == f"predicted speedup: {short.predicted_flops_ratio:.2f}x (transformer FLOPs)"
    assert all(len(line) <= 100 for line in lines), lines
    assert not any("of 20" in line for line in lines[:4])
    plan_text = describe_plan(recipe).splitlines()
    assert plan_text[0] == "Planned for the profile's 20 steps (euler/simple)."
    assert plan_text[1] == "steps: 20" and "re-planned from the profile when it starts" in plan_text[-1]


def test_a_run_on_sigmas_that_do_not_decrease_is_refused_before_sampling():
    recipe = plan_schedule(profile_of(), PlanConfig(target=2.0), prune_attention=False)
    with pytest.raises(ValueError, match=r"sigmas cannot be planned for.*decrease strictly.*Fix"):
        schedule_for(recipe, torch.tensor([1.0, 0.5, 0.5, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sigmas cannot be planned for.*finite"):
        schedule_for(recipe, torch.tensor([float("nan"), 0.0], dtype=torch.float64))


def test_out_of_reach_target_on_a_tiny_profile_says_to_profile_with_the_sampled_steps():
    with pytest.raises(ValueError, match=r"on the profile's 1 steps.*profile with the step count you sample with"):
        plan_schedule(profile_of(steps=1, k=1), PlanConfig(target=2.0), prune_attention=False)
