"""Models SODA leaves alone (records without blocks, where serving the blocks would break them): profiling warns
why and is the model's own sampling, and a patched model samples exactly as the unpatched one."""

from __future__ import annotations

import logging

import pytest
import tiny_families as tiny
import torch
from tiny_families.video import UNSERVED


pytestmark = pytest.mark.integration

STEPS = 3


@pytest.mark.parametrize("family", UNSERVED, ids=lambda f: f.name)
def test_an_unserved_model_runs_as_comfyui_runs_it(comfy, family, caplog):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.nodes.soda import SODAModelPatch
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig
    from comfyui_soda.soda_core.profiler import ProfileConfig

    if not family.available():
        pytest.skip(f"this ComfyUI has no {family.model_class}")
    model = tiny.build(family)
    reference = tiny.sample(model, family, steps=STEPS)
    settings = SamplingSettings(seed=0, steps=STEPS, cfg=1.0, sampler_name="euler", scheduler="simple")
    with caplog.at_level(logging.WARNING, logger="comfyui_soda"):
        profile, out = profile_model(
            model,
            tiny.conditioning(family, 1),
            tiny.conditioning(family, 2),
            {"samples": torch.zeros(1, *family.latent)},
            settings,
            ProfileConfig(max_distance=2),
        )
    assert any("SODA does not serve" in r.getMessage() for r in caplog.records)
    assert profile.layout.num_layers == 0 and torch.equal(out["samples"], reference)
    patched = SODAModelPatch.execute(model, plan_schedule(profile, PlanConfig(target=1.0), False)).result[0]
    assert torch.equal(tiny.sample(patched, family, steps=STEPS), reference)
