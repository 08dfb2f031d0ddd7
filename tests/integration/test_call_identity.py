"""Two different computations never share a module cache: SkipLayerGuidance's extra cond-only call per step (which
skips some blocks) and a sampler's second model call per step (Heun) each get their own cache.

Bounds checked, on the same schedule:

* Heun: SODA ends as close to Heun at full compute as SODA alone is to Euler at full compute (relative L2 at most
  1.5x, plus 1 %).
* SkipLayerGuidance at scale s and cfg 1 outputs ``(1 + s) cond - s skipped``: an error e in each call's prediction,
  independent between the two, becomes ``sqrt((1 + s)^2 + s^2) e`` (5 e at s = 3). SODA + SLG stays within that
  factor of SODA alone. With one cache for both calls (the defect this test holds) it was 7x on this model.
"""

from __future__ import annotations

import pytest

from flux_helpers import REFERENCE_MODEL


pytestmark = pytest.mark.integration

STEPS = 12
CFG = 1.0  # no uncond call: SLG's extra call has the same rows as the model's own (as with Flux-dev)


@pytest.fixture(scope="module")
def planned(comfy):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.nodes.reference_model import load_reference_model
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig
    from comfyui_soda.soda_core.profiler import ProfileConfig

    patcher = load_reference_model(REFERENCE_MODEL)
    settings = SamplingSettings(seed=5, steps=STEPS, cfg=CFG, sampler_name="euler", scheduler="simple")
    positive, latent = _digits(patcher)
    profile, _ = profile_model(patcher, positive, positive, latent, settings, ProfileConfig(max_distance=4))
    return patcher, plan_schedule(profile, PlanConfig(target=2.0), prune_attention=False)


def _digits(patcher):
    from comfyui_soda.nodes.reference_model import SODAReferenceClassEncode

    return SODAReferenceClassEncode.execute(patcher, "0-9").result


def sample(model, steps=STEPS, cfg=CFG, sampler="euler"):
    import comfy.sample

    positive, latent = _digits(model)
    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    return comfy.sample.sample(
        model, noise, steps, cfg, sampler, "simple", positive, positive, latent["samples"], seed=0, disable_pbar=True
    )


def _soda(model, soda_plan):
    from comfyui_soda.nodes.soda import SODAModelPatch

    return SODAModelPatch.execute(model, soda_plan).result[0]


SLG_SCALE = 3.0
SLG_AMPLIFICATION = ((1 + SLG_SCALE) ** 2 + SLG_SCALE**2) ** 0.5  # 5.0


def _slg(model):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    node = SkipLayerGuidanceDiT.execute(model, SLG_SCALE, 0.0, 1.0, double_layers="1", single_layers="1, 2")
    return node.result[0]


def _error(out, reference):
    return float((out - reference).norm() / reference.norm())


def _report(model):
    return model.model_options["transformer_options"]["soda"].reports[-1]


def test_soda_alone_is_the_baseline(planned):
    patcher, soda_plan = planned
    alone = _error(sample(_soda(patcher, soda_plan), steps=STEPS, cfg=CFG), sample(patcher, steps=STEPS, cfg=CFG))
    assert 0.0 < alone < 0.2


@pytest.mark.parametrize("order", ["slg_then_soda", "soda_then_slg"])
def test_skip_layer_guidance_gets_its_own_cache(planned, order):
    patcher, soda_plan = planned
    reference = sample(_slg(patcher), steps=STEPS, cfg=CFG)
    full = sample(patcher, steps=STEPS, cfg=CFG)
    model = _soda(_slg(patcher), soda_plan) if order == "slg_then_soda" else _slg(_soda(patcher, soda_plan))
    out = sample(model, steps=STEPS, cfg=CFG)
    report = _report(model)
    only_soda = _soda(patcher, soda_plan)
    alone = _error(sample(only_soda, steps=STEPS, cfg=CFG), full)
    assert report.model_calls == _report(only_soda).model_calls + STEPS  # plus SLG's cond-only call per step
    assert report.flops_ratio > 1.6  # SLG's calls are accelerated too, from their own cache
    assert _error(out, reference) <= SLG_AMPLIFICATION * alone, (_error(out, reference), alone)


def test_a_second_model_call_per_step_gets_its_own_cache(planned):
    """Heun calls the model twice per step (at sigma_t and at sigma_t+1): each call of a step reads the cache the
    same call of the anchor step filled."""
    patcher, soda_plan = planned
    reference = sample(patcher, steps=STEPS, cfg=CFG, sampler="heun")
    model = _soda(patcher, soda_plan)
    out = sample(model, steps=STEPS, cfg=CFG, sampler="heun")
    alone = _error(sample(_soda(patcher, soda_plan), steps=STEPS, cfg=CFG), sample(patcher, steps=STEPS, cfg=CFG))
    report = _report(model)
    # Heun's second call of step t is at sigma_t+1, so it belongs to step t+1: the first anchor (step 0) has no such
    # call, and the first reuse step after it computes that call fully once per block (then serves it from its cache)
    blocks = len(model.model_options["transformer_options"]["soda"].served.layers)
    assert report.cache_misses <= blocks and report.flops_ratio > 1.6
    assert _error(out, reference) <= 1.5 * alone + 0.01, (_error(out, reference), alone)


def test_calls_that_compute_differently_have_different_identities(comfy):
    from comfyui_soda.nodes.patching import computation_identity

    def skip(args, extra):
        return args

    plain = computation_identity({"patches_replace": {}})
    skipped = computation_identity({"patches_replace": {"dit": {("double_block", 1): skip}}})
    assert plain != skipped
    assert skipped == computation_identity({"patches_replace": {"dit": {("double_block", 1): skip}}})
