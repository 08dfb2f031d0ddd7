"""Wan 2.2 A14B as ComfyUI's two-expert workflow runs it: a high-noise expert samples the first steps and a
low-noise expert the rest (KSamplerAdvanced start/end steps, noise added once), each SODA-patched with its own
plan. Each expert's run covers only its segment of the sigmas, so each plan is mapped onto that segment."""

from __future__ import annotations

import pytest
import tiny_families as tiny
import torch


pytestmark = pytest.mark.integration

STEPS, SWITCH = 8, 4
EXPERT = next(f for f in tiny.FAMILIES if f.name == "wan22_i2v_a14b")


@pytest.fixture(scope="module")
def experts(comfy):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    settings = SamplingSettings(seed=0, steps=STEPS, cfg=1.0, sampler_name="euler", scheduler="simple")
    models, profiles = [], []
    for seed in (0, 1):  # high noise, low noise
        model = tiny.build(EXPERT, seed=seed)
        profile, _ = profile_model(
            model,
            tiny.conditioning(EXPERT, 1),
            tiny.conditioning(EXPERT, 2),
            {"samples": torch.zeros(1, *EXPERT.latent)},
            settings,
            ProfileConfig(max_distance=3),
        )
        models.append(model)
        profiles.append(profile)
    return models, profiles


def _chain(high, low):
    """The two-expert sampling: noise added once, the high-noise expert leaves the rest of the noise in."""
    import comfy.sample

    latent = torch.zeros(1, *EXPERT.latent)
    noise = comfy.sample.prepare_noise(latent, 0)
    positive, negative = tiny.conditioning(EXPERT, 1), tiny.conditioning(EXPERT, 2)
    common = {"seed": 0, "disable_pbar": True}
    mid = comfy.sample.sample(
        high, noise, STEPS, 1.0, "euler", "simple", positive, negative, latent, last_step=SWITCH, **common
    )
    return comfy.sample.sample(
        low,
        torch.zeros_like(noise),
        STEPS,
        1.0,
        "euler",
        "simple",
        positive,
        negative,
        mid,
        disable_noise=True,
        start_step=SWITCH,
        force_full_denoise=True,
        **common,
    )


def _patched(model, profile, target):
    from comfyui_soda.nodes.soda import SODAModelPatch
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig

    soda_plan = plan_schedule(profile, PlanConfig(target=target, pruning=True), prune_attention=True)
    return SODAModelPatch.execute(model, soda_plan).result[0]


def _report(model):
    return model.model_options["transformer_options"]["soda"].reports[-1]


def test_full_compute_plans_leave_the_two_expert_chain_bit_exact(experts):
    (high, low), (p_high, p_low) = experts
    reference = _chain(high, low)
    assert torch.equal(_chain(_patched(high, p_high, 1.0), _patched(low, p_low, 1.0)), reference)


def test_each_expert_accelerates_its_own_segment(experts):
    (high, low), (p_high, p_low) = experts
    reference = _chain(high, low)
    fast_high, fast_low = _patched(high, p_high, 1.5), _patched(low, p_low, 1.5)
    out = _chain(fast_high, fast_low)
    for model in (fast_high, fast_low):
        report = _report(model)
        assert report.steps == SWITCH and report.cache_misses == 0 and report.flops_ratio > 1.2, report.summary()
    assert torch.isfinite(out).all() and not torch.equal(out, reference)
    assert float((out - reference).norm() / reference.norm()) < 0.5
