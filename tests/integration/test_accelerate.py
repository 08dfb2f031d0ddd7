"""SODA Accelerate, the one-node path, on the trained reference model: the first run of a setting is its profiling
run (the full-compute image, bit for bit), later runs with any prompt or seed are accelerated from the stored
profile; another step count is re-planned, another sampler or a LoRA gets its own profile, a damaged profile is
reported and measured again (never used), an interrupted profiling run stores nothing."""

from __future__ import annotations

import logging

import pytest
import torch

from flux_helpers import REFERENCE_MODEL


pytestmark = pytest.mark.integration

STEPS = 12


@pytest.fixture
def models_dir(comfy, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def reference(comfy):
    from comfyui_soda.nodes.reference_model import load_reference_model

    return load_reference_model(REFERENCE_MODEL)


def _accelerate(model, speedup=2.0, **inputs):
    from comfyui_soda.nodes.accelerate import SODAAccelerate

    return SODAAccelerate.execute(model, speedup, **inputs).result[0]


def _sample(model, labels="0-9", seed=0, steps=STEPS, sampler="euler", callback=None):
    import comfy.sample

    from comfyui_soda.nodes.reference_model import SODAReferenceClassEncode

    positive, latent = SODAReferenceClassEncode.execute(model, labels).result
    noise = comfy.sample.prepare_noise(latent["samples"], seed)
    return comfy.sample.sample(
        model,
        noise,
        steps,
        1.0,
        sampler,
        "simple",
        positive,
        positive,
        latent["samples"],
        seed=seed,
        callback=callback,
        disable_pbar=True,
    )


def _report(model):
    return model.model_options["transformer_options"]["soda"].reports[-1]


def _profiles(models_dir):
    return sorted((models_dir / "soda_profiles" / "auto").glob("*/*.safetensors"))


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("SODA: ")]


def test_first_run_profiles_at_full_compute_and_later_runs_are_accelerated(reference, models_dir, caplog):
    model = _accelerate(reference)
    with caplog.at_level(logging.INFO, logger="comfyui_soda"):
        first = _sample(model)
    assert torch.equal(first, _sample(reference))  # the profiling run is the full-compute image
    assert len(_profiles(models_dir)) == 1
    assert any("profiling this run at full compute; next runs 2x" in m for m in _messages(caplog))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyui_soda"):
        second = _sample(model, labels="3 1 4 1 5 9 2 6 5 3", seed=7)  # another prompt and seed: same setting
    report = _report(model)
    assert report.flops_ratio == pytest.approx(2.0, rel=0.05) and report.cache_misses == 0
    assert torch.isfinite(second).all() and not torch.equal(second, _sample(reference, "3 1 4 1 5 9 2 6 5 3", 7))
    assert len(_profiles(models_dir)) == 1
    done = [m for m in _messages(caplog) if "FLOPs, measured" in m]
    assert done and f"of {STEPS} steps full" in done[-1]


def test_other_steps_are_replanned_another_sampler_profiles_again(reference, models_dir, caplog):
    model = _accelerate(reference)
    _sample(model)  # profiles euler, 12 steps
    with caplog.at_level(logging.INFO, logger="comfyui_soda"):
        _sample(model, steps=8)
    assert _report(model).flops_ratio > 1.3 and len(_profiles(models_dir)) == 1
    assert any("re-planned from the 12-step profile" in m for m in _messages(caplog))
    other = _sample(model, sampler="dpmpp_2m")
    assert torch.equal(other, _sample(reference, sampler="dpmpp_2m")) and len(_profiles(models_dir)) == 2


def test_a_lora_applied_before_the_node_gets_its_own_profile(reference, models_dir):
    _sample(_accelerate(reference))
    lora = reference.clone()
    weight = lora.get_model_object("diffusion_model").double_blocks[0].img_mlp[0].weight
    lora.add_patches({"diffusion_model.double_blocks.0.img_mlp.0.weight": (0.01 * torch.ones_like(weight),)}, 1.0)
    model = _accelerate(lora)
    assert torch.equal(_sample(model), _sample(lora))  # profiled, not accelerated with the other profile
    assert len(_profiles(models_dir)) == 2


def test_a_damaged_profile_is_reported_and_measured_again(reference, models_dir, caplog):
    model = _accelerate(reference)
    _sample(model)
    (path,) = _profiles(models_dir)
    path.write_bytes(path.read_bytes()[:300])
    with caplog.at_level(logging.INFO, logger="comfyui_soda"):
        again = _sample(model)
    assert torch.equal(again, _sample(reference))  # never used: this run profiled again
    assert any("cannot be used" in m and path.name in m for m in _messages(caplog))
    from comfyui_soda.soda_core.profile import SensitivityProfile

    assert SensitivityProfile.load(path).steps == STEPS  # replaced by a good one


def test_an_interrupted_profiling_run_stores_nothing(reference, models_dir):
    import comfy.model_management

    model = _accelerate(reference)

    def interrupt(step, x0, x, steps):
        if step == 3:
            raise comfy.model_management.InterruptProcessingException()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        _sample(model, callback=interrupt)
    assert _profiles(models_dir) == []
    assert torch.equal(_sample(model), _sample(reference))  # the next run profiles
    assert len(_profiles(models_dir)) == 1


def test_a_new_memory_bound_alone_uses_the_stored_profile(reference, models_dir):
    _sample(_accelerate(reference))  # profiles
    model = _accelerate(reference, memory_limit_mb=8192.0)  # only the bound differs: the same setting
    accelerated = _sample(model, seed=3)
    assert len(_profiles(models_dir)) == 1 and _report(model).flops_ratio == pytest.approx(2.0, rel=0.05)
    assert not torch.equal(accelerated, _sample(reference, seed=3))


def test_the_run_reports_kept_on_a_patched_model_are_bounded(reference, models_dir):
    from comfyui_soda.nodes.patching import REPORTS_KEPT

    model = _accelerate(reference)
    for seed in range(REPORTS_KEPT + 2):  # the first run profiles; every later one reports
        _sample(model, labels="3", seed=seed)  # one row: the cheapest run
    reports = model.model_options["transformer_options"]["soda"].reports
    assert len(reports) == REPORTS_KEPT
