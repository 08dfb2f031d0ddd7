"""Compensation on reuse steps on the trained reference model, through ComfyUI's sampling (``comfy.sample.sample``):
``none`` is today's SODA bit for bit, ``auto`` ends at least as close to full compute as ``none`` at 2x and 3x,
and both nodes take the input (bad values refused naming the choices)."""

from __future__ import annotations

import pytest
import torch

from flux_helpers import REFERENCE_MODEL


pytestmark = pytest.mark.integration

STEPS = 20
SEEDS = (0, 1)
LABELS = "0-9"


@pytest.fixture(scope="module")
def reference(comfy):
    from comfyui_soda.nodes.reference_model import load_reference_model

    return load_reference_model(REFERENCE_MODEL)


def _inputs(model, seed):
    import comfy.sample

    from comfyui_soda.nodes.reference_model import SODAReferenceClassEncode

    positive, latent = SODAReferenceClassEncode.execute(model, LABELS).result
    return positive, latent["samples"], comfy.sample.prepare_noise(latent["samples"], seed)


def _sample(model, seed=0):
    import comfy.sample

    positive, latent, noise = _inputs(model, seed)
    return comfy.sample.sample(
        model, noise, STEPS, 1.0, "euler", "simple", positive, positive, latent, seed=seed, disable_pbar=True
    )


@pytest.fixture(scope="module")
def profiled(reference):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    positive, latent, _ = _inputs(reference, 0)
    settings = SamplingSettings(seed=10_000, steps=STEPS, cfg=1.0, sampler_name="euler", scheduler="simple")
    profile, _ = profile_model(reference, positive, positive, {"samples": latent}, settings, ProfileConfig())
    full = {seed: _sample(reference, seed) for seed in SEEDS}
    return profile, full


def _plan(profile, target, **config):
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig

    return plan_schedule(profile, PlanConfig(target=target, **config), prune_attention=False)


def _patched(model, soda_plan, **inputs):
    from comfyui_soda.nodes.model_patch import SODAModelPatch

    return SODAModelPatch.execute(model, soda_plan, **inputs).result[0]


def _report(model):
    return model.model_options["transformer_options"]["soda"].reports[-1]


def _psnr(reference, full, outputs):
    from benchmarks.measure import fidelity

    seeds = sorted(outputs)
    latent_format = reference.model.latent_format
    return fidelity(latent_format, torch.cat([full[s] for s in seeds]), torch.cat([outputs[s] for s in seeds]))["psnr"]


def test_none_is_todays_soda_bit_for_bit(reference, profiled):
    profile, _ = profiled
    soda_plan = _plan(profile, 2.0)
    today = _sample(_patched(reference, soda_plan))
    none = _sample(_patched(reference, soda_plan, compensation="none"))
    taylor = _sample(_patched(reference, soda_plan, compensation="taylor1"))
    assert torch.equal(today, none)
    assert not torch.equal(today, taylor)  # the option reaches the run: the test can tell the two apart


@pytest.mark.parametrize("target", [2.0, 3.0])
def test_auto_is_finite_and_at_least_as_close_to_full_compute_as_none(reference, profiled, target):
    profile, full = profiled
    psnr = {}
    for mode in ("none", "auto"):
        model = _patched(reference, _plan(profile, target), compensation=mode)
        outputs = {seed: _sample(model, seed) for seed in SEEDS}
        report = _report(model)
        assert all(torch.isfinite(o).all() for o in outputs.values())
        assert report.flops_ratio == pytest.approx(target, rel=0.1) and report.cache_misses == 0
        assert (report.compensation_bytes > 0) == (mode == "auto")
        psnr[mode] = _psnr(reference, full, outputs)
    assert psnr["auto"] >= psnr["none"], psnr
    assert psnr["auto"] > 25.0, psnr  # bounded error: the digits stay the digits


def test_accelerate_takes_the_input_and_says_the_memory(reference, tmp_path, monkeypatch):
    import folder_paths

    from comfyui_soda.nodes.accelerate import SODAAccelerate

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    plain = _sample(reference)
    model = SODAAccelerate.execute(reference, 2.0, compensation="auto").result[0]
    first = _sample(model)
    assert torch.equal(first, plain)  # the profiling run is full compute
    second = _sample(model)
    report = _report(model)
    assert torch.isfinite(second).all() and report.flops_ratio >= 1.9 and report.compensation_bytes > 0
    assert "compensation kept" in report.summary()


@pytest.mark.parametrize("node", ["patch", "accelerate"])
def test_a_bad_compensation_is_refused_naming_the_choices(reference, profiled, node):
    from comfyui_soda.nodes.accelerate import SODAAccelerate

    with pytest.raises(ValueError, match=r"compensation.*'taylor'.*none.*auto"):
        if node == "patch":
            _patched(reference, _plan(profiled[0], 2.0), compensation="taylor")
        else:
            SODAAccelerate.execute(reference, 2.0, compensation="taylor")


def test_a_fixed_schedule_takes_taylor_and_refuses_goc(reference, profiled):
    from comfyui_soda.soda_core.api import FixedSchedule
    from comfyui_soda.soda_core.schedule import Schedule

    profile, _ = profiled
    fixed = FixedSchedule(Schedule.uniform(profile.layout, profile.sigmas, 3), profile)
    out = _sample(_patched(reference, fixed, compensation="taylor1"))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="goc.*planned from a profile.*Fix"):
        _patched(reference, fixed, compensation="goc")
