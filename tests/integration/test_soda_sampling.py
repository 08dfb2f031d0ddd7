"""Profile -> plan -> patch -> sample through ComfyUI: FLOPs promised are FLOPs saved, and they are counted right."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from comfyui_soda.soda_core.schedule import Schedule
from flux_helpers import conditioning, sample, tiny_flux


pytestmark = pytest.mark.integration

STEPS = 12


@pytest.fixture(scope="module")
def profiled(comfy):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    patcher = tiny_flux(hidden_size=128, depth=2, depth_single_blocks=4)
    settings = SamplingSettings(seed=0, steps=STEPS, cfg=1.0, sampler_name="euler", scheduler="simple")
    profile, latent = profile_model(
        patcher,
        conditioning(patcher, 1),
        conditioning(patcher, 2, words=3),
        {"samples": torch.zeros(1, 16, 16, 16)},
        settings,
        ProfileConfig(max_distance=4),
    )
    return patcher, profile, latent["samples"]


def _patched(patcher, soda_plan):
    from comfyui_soda.nodes.soda import SODAModelPatch

    return SODAModelPatch.execute(patcher, soda_plan).result[0]


def _plan(profile, target, prune_attention=False, **kw):
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig

    return plan_schedule(profile, PlanConfig(target=target, **kw), prune_attention=prune_attention)


def _hook(model):
    return model.model_options["transformer_options"]["soda"]


@pytest.mark.parametrize("pruning", [False, True])
def test_sampling_at_2x_saves_the_flops_it_promised(profiled, pruning):
    patcher, profile, reference = profiled
    soda_plan = _plan(profile, 2.0, pruning=pruning)
    model = _patched(patcher, soda_plan)
    out = sample(model, steps=STEPS)
    report = _hook(model).reports[-1]
    assert soda_plan.schedule.predicted_flops_ratio >= 2.0
    assert report.flops_ratio == pytest.approx(soda_plan.schedule.predicted_flops_ratio, rel=0.03)
    assert report.cache_misses == 0
    assert torch.isfinite(out).all() and not torch.equal(out, reference)
    if pruning:
        assert report.partial_modules > 0


def test_counted_flops_match_flop_counter_mode(profiled):
    patcher, profile, _ = profiled
    for soda_plan in (_plan(profile, 1.0), _plan(profile, 2.0, pruning=True)):
        model = _patched(patcher, soda_plan)
        with FlopCounterMode(display=False) as counter:
            sample(model, steps=STEPS)
        counted = _hook(model).reports[-1].flops
        assert counted == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_dp_schedule_beats_uniform_interval_at_equal_flops(profiled):
    """DCS anchors vs evenly spaced anchors at the same FLOPs: DCS ends closer to full compute."""
    from comfyui_soda.soda_core.api import FixedSchedule
    from comfyui_soda.soda_core.planner import schedule_flops

    patcher, profile, reference = profiled
    uniform = Schedule.uniform(profile.layout, profile.sigmas, 2)
    uniform_ratio = STEPS * profile.flops.step_full / schedule_flops(profile.flops, uniform.anchors, uniform.recompute)
    dp = _plan(profile, uniform_ratio * (1 - 1e-6), pruning=False)
    assert len(dp.schedule.anchors) == len(uniform.anchors)
    errors, ratios = {}, {}
    for name, soda_plan in {"dp": dp, "uniform": FixedSchedule(uniform, profile)}.items():
        model = _patched(patcher, soda_plan)
        out = sample(model, steps=STEPS)
        errors[name] = float((out - reference).norm() / reference.norm())
        ratios[name] = _hook(model).reports[-1].flops_ratio
    assert ratios["dp"] >= ratios["uniform"] * (1 - 1e-6)
    assert errors["dp"] < errors["uniform"], (errors, dp.schedule.anchors)


def test_full_compute_plan_is_bit_exact(profiled):
    patcher, profile, reference = profiled
    soda_plan = _plan(profile, 1.0)
    assert soda_plan.schedule.anchors == tuple(range(STEPS))
    assert torch.equal(sample(_patched(patcher, soda_plan), steps=STEPS), reference)


def test_other_step_count_and_denoise_are_replanned(profiled):
    patcher, profile, _ = profiled
    model = _patched(patcher, _plan(profile, 2.0))
    out = sample(model, steps=8, denoise=0.7, sampler="dpmpp_2m", scheduler="karras")
    report = _hook(model).reports[-1]
    assert torch.isfinite(out).all()
    assert report.steps == 8 and report.flops_ratio > 1.3


def test_another_sampler_or_grid_is_said_on_the_sampler_node(profiled, caplog):
    """Profiles are measured per sampler and grid: a run that differs is told so in the text ComfyUI shows on the
    sampler node (logged here, no server), not only at INFO level in the console."""
    import logging

    patcher, profile, _ = profiled
    model = _patched(patcher, _plan(profile, 2.0))
    with caplog.at_level(logging.INFO, logger="comfyui_soda"):
        sample(model, steps=STEPS, sampler="dpmpp_2m")
        sample(model, steps=8)
    messages = [r.getMessage() for r in caplog.records]
    assert any("measured with the euler sampler, this run uses dpmpp_2m" in m for m in messages)
    assert any("re-planned for this 8-step run from the 12-step profile" in m for m in messages)
    assert any("FLOPs, measured" in m and "steps full" in m for m in messages)


def test_layout_mismatch_is_refused(profiled):
    patcher, profile, _ = profiled
    other = tiny_flux(depth_single_blocks=2)
    with pytest.raises(ValueError, match="Profile this model"):
        _patched(other, _plan(profile, 2.0))


@pytest.mark.parametrize("negative_words, calls_per_step", [(6, 1), (3, 2)])
def test_batch_and_cfg_keep_one_cache_per_stream(profiled, negative_words, calls_per_step):
    """Batch 2 with real CFG. Same-length prompts: cond and uncond go through the model in one batched call;
    different lengths: in two calls, each with its own cache. Either way the schedule's FLOPs are kept and no reuse
    step misses its cache."""
    patcher, profile, _ = profiled
    soda_plan = _plan(profile, 2.0)
    model = _patched(patcher, soda_plan)
    pair = sample(model, steps=STEPS, cfg=3.0, batch=2, negative_words=negative_words)
    report = _hook(model).reports[-1]
    assert report.model_calls == calls_per_step * STEPS
    assert report.cache_misses == 0 and report.partial_modules > 0
    assert report.flops_ratio == pytest.approx(soda_plan.schedule.predicted_flops_ratio, rel=0.03)
    assert torch.isfinite(pair).all() and not torch.equal(pair[0], pair[1])


def test_ksampler_advanced_and_sampler_custom_advanced_use_the_patch(profiled):
    """The patched MODEL works in ComfyUI's other sampler nodes: each run goes through SODA's OUTER_SAMPLE hook,
    saves FLOPs, and a KSamplerAdvanced run over the whole schedule equals plain sampling with the same patch."""
    from comfy_extras.nodes_custom_sampler import (
        BasicScheduler,
        CFGGuider,
        KSamplerSelect,
        RandomNoise,
        SamplerCustomAdvanced,
    )

    import nodes as comfy_nodes

    patcher, profile, _ = profiled
    model = _patched(patcher, _plan(profile, 2.0))
    positive, negative = conditioning(patcher, 1), conditioning(patcher, 2, words=3)
    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    reports = _hook(model).reports

    (advanced,) = comfy_nodes.KSamplerAdvanced().sample(
        model, "enable", 0, STEPS, 1.0, "euler", "simple", positive, negative, latent, 0, 10000, "disable"
    )
    assert reports[-1].flops_ratio > 1.8 and reports[-1].cache_misses == 0
    assert torch.equal(advanced["samples"], sample(model, steps=STEPS))

    guider = CFGGuider.execute(model, positive, negative, 1.0).result[0]
    sigmas = BasicScheduler.execute(model, "simple", STEPS, 1.0).result[0]
    sampler = KSamplerSelect.execute("euler").result[0]
    out = SamplerCustomAdvanced.execute(RandomNoise.execute(0).result[0], guider, sampler, sigmas, latent).result[0]
    assert reports[-1].flops_ratio > 1.8 and reports[-1].steps == STEPS
    assert torch.isfinite(out["samples"]).all()
