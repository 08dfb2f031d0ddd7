"""Wall-time planning through ComfyUI: the profiling run times the real blocks (``timing_probe``) without changing
what it samples or measures, the profile file keeps the times, and a plan for wall time uses them."""

from __future__ import annotations

import pytest
import torch

from flux_helpers import profile_tiny, sample, tiny_flux


pytestmark = pytest.mark.integration


def _profile(patcher, steps=6, **config):
    return profile_tiny(patcher, steps, **{"sketch_dim": 0, **config})


def test_profiling_times_the_blocks_and_plans_in_wall_time(comfy, tmp_path):
    from comfyui_soda.soda_core.planner import PlanConfig, plan
    from comfyui_soda.soda_core.profile import SensitivityProfile

    patcher = tiny_flux()
    profile, latent = _profile(patcher, steps=8)
    untimed, untimed_latent = _profile(patcher, steps=8, time_repeats=0)
    # timing runs on copies, before the real calls: the run and its tables are the untimed run's, bit for bit
    assert torch.equal(latent["samples"], untimed_latent["samples"])
    assert torch.equal(latent["samples"], sample(patcher, steps=8))
    assert torch.equal(profile.cache_error.nan_to_num(), untimed.cache_error.nan_to_num())
    assert untimed.time is None

    time = profile.time
    assert time is not None and time.full.shape == (4, 2) and time.block.shape == (4,)
    assert bool((time.block > 0).all()) and time.base >= 0.0
    # (no assertion on which configuration is faster: a tiny model's calls take about a millisecond, noise)
    # layers of one kind (2 double, 2 single blocks of the same shapes) share the times of its timed call
    assert torch.equal(time.full[0], time.full[1]) and torch.equal(time.full[2], time.full[3])
    # the single blocks' fused attention never recomputes selected tokens: no line, never cheaper than full
    assert float(time.partial_limit()[2, 0]) == 0.0

    path = tmp_path / "timed.safetensors"
    profile.save(path)
    loaded = SensitivityProfile.load(path)
    assert loaded.time is not None and torch.equal(loaded.time.full, time.full) and loaded.time.base == time.base

    # a tiny model's step is mostly fixed cost (the sampler, embedders): aim between 1x and the wall-time reach
    # of 2 recording full steps in 8 (intervals of at most 5), as the measured times price it
    cost = time.cost_model(profile.flops)
    reach = 8 * cost.step_full / (2 * (cost.step_full + cost.record) + 6 * cost.base)
    target = 1.0 + 0.5 * (reach - 1.0)
    if reach <= 1.0 + 1e-3:  # a loaded machine can time a reuse call as slow as a full one: then nothing is in reach
        with pytest.raises(ValueError, match="wall-time speed-up .* is out of reach"):
            plan(loaded, PlanConfig(target=1.01, speedup_in="wall"))
        return
    flops_plan = plan(loaded, PlanConfig(target=1.5))
    wall_plan = plan(loaded, PlanConfig(target=target, speedup_in="wall"))
    assert wall_plan.predicted_wall_ratio is not None and wall_plan.predicted_wall_ratio >= target * (1 - 1e-5)
    assert flops_plan.predicted_wall_ratio is None
    assert "wall" in wall_plan.summary() and "FLOPs" in wall_plan.summary()
    limits = time.partial_limit().expand_as(wall_plan.recompute)  # (T, L, M)
    partial = (wall_plan.recompute > 0) & (wall_plan.recompute < 1)
    # never a partial recompute that takes as long as computing the module in full
    assert bool((wall_plan.recompute.double()[partial] < limits[partial]).all())
    with pytest.raises(ValueError, match="wall-time speed-up .* is out of reach"):
        plan(loaded, PlanConfig(target=20.0, speedup_in="wall"))
    with pytest.raises(ValueError, match="speedup_in='wall'.*Fix: profile again"):
        plan(untimed, PlanConfig(target=1.5, speedup_in="wall"))


def test_a_wall_plan_samples_through_the_model_patch(comfy):
    from comfyui_soda.nodes.model_patch import SODAModelPatch
    from comfyui_soda.nodes.soda import SODAPlanSchedule

    patcher = tiny_flux()
    profile, _ = _profile(patcher, steps=8)
    out = SODAPlanSchedule.execute(profile, 1.02, 1, True, speedup_in="wall")
    soda_plan = out.result[0]
    assert soda_plan.config.speedup_in == "wall" and soda_plan.schedule.predicted_wall_ratio is not None
    patched = SODAModelPatch.execute(patcher, soda_plan).result[0]
    result = sample(patched, steps=8)
    assert result.shape == (1, 16, 16, 16) and bool(result.isfinite().all())
