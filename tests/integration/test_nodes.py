"""The SODA nodes called as ComfyUI calls them (V3 ``execute``), on a tiny Flux model."""

from __future__ import annotations

import pytest
import torch

from flux_helpers import conditioning, sample, tiny_flux


pytestmark = pytest.mark.integration

STEPS = 8


@pytest.fixture(scope="module")
def profiled(comfy):
    from comfyui_soda.nodes.soda import SODAProfileSensitivity

    patcher = tiny_flux()
    out = SODAProfileSensitivity.execute(
        patcher,
        conditioning(patcher, 1),
        conditioning(patcher, 2, words=3),
        {"samples": torch.zeros(1, 16, 16, 16)},
        seed=0,
        steps=STEPS,
        cfg=1.0,
        sampler_name="euler",
        scheduler="simple",
        denoise=1.0,
        operations="cache and prune",
        granularity="module",
        max_distance=4,
    )
    profile, heatmap, latent = out.result
    return patcher, profile, heatmap, latent


def test_profile_node_outputs(profiled):
    patcher, profile, heatmap, latent = profiled
    assert profile.steps == STEPS and profile.has_prune_error
    assert heatmap.ndim == 4 and heatmap.shape[0] == 1 and heatmap.shape[-1] == 3
    assert heatmap.shape[1] >= 300 and heatmap.shape[2] >= 600
    assert float(heatmap.std()) > 0.05  # not a blank canvas
    assert torch.equal(latent["samples"], sample(patcher, steps=STEPS))


def test_plan_node_plot_shows_the_schedule(profiled):
    from comfyui_soda.nodes.plots import schedule_plot
    from comfyui_soda.nodes.soda import SODAPlanSchedule

    _, profile, _, _ = profiled
    soda_plan, image, summary = SODAPlanSchedule.execute(profile, 2.0, 1, True).result
    assert "full steps" in summary and f"{soda_plan.schedule.predicted_flops_ratio:.2f}x" in summary
    assert image.shape[0] == 1 and float(image.std()) > 0.05
    _, drawn = schedule_plot(soda_plan.schedule, profile)
    assert drawn["anchors"] == soda_plan.schedule.anchors
    reuse = ~soda_plan.schedule.anchor_mask
    expected = soda_plan.schedule.recompute.mean(dim=(1, 2))[reuse].numpy()
    assert (drawn["recompute"][reuse.numpy()] == expected).all()


def test_patch_node_leaves_the_input_model_untouched(profiled):
    from comfyui_soda.nodes.soda import SODAModelPatch, SODAPlanSchedule

    patcher, profile, _, latent = profiled
    soda_plan = SODAPlanSchedule.execute(profile, 2.0, 1, True).result[0]
    before = (repr(patcher.model_options), dict(patcher.patches))
    patched = SODAModelPatch.execute(patcher, soda_plan).result[0]
    assert patched is not patcher and "soda" in patched.model_options["transformer_options"]
    assert (repr(patcher.model_options), dict(patcher.patches)) == before
    assert torch.equal(sample(patcher, steps=STEPS), latent["samples"])
    assert not torch.equal(sample(patched, steps=STEPS), latent["samples"])


def test_save_and_load_profile_round_trip(profiled, tmp_path, monkeypatch):
    import folder_paths

    from comfyui_soda.nodes import profile_files
    from comfyui_soda.nodes.profile_files import SODALoadProfile, SODASaveProfile

    _, profile, _, _ = profiled
    monkeypatch.setitem(
        folder_paths.folder_names_and_paths, profile_files.SODA_PROFILES, ([str(tmp_path)], {".safetensors"})
    )
    first = SODASaveProfile.execute(profile, "tiny/flux").result[0]
    second = SODASaveProfile.execute(profile, "tiny/flux").result[0]
    assert first != second and first.endswith("_00001_.safetensors") and second.endswith("_00002_.safetensors")
    loaded = SODALoadProfile.execute("tiny/flux_00001_.safetensors").result[0]
    assert loaded.layout == profile.layout and loaded.meta == profile.meta
    assert torch.equal(loaded.cache_error.nan_to_num(-1), profile.cache_error.nan_to_num(-1))
    assert torch.equal(loaded.prune_error.nan_to_num(-1), profile.prune_error.nan_to_num(-1))
    assert torch.equal(loaded.flops.full, profile.flops.full)
    with pytest.raises(ValueError, match="not found"):
        SODALoadProfile.execute("missing.safetensors")


def test_shipped_profile_serves_the_embedded_model(comfy):
    """The profile in profiles/ is listed by Load SODA Profile and plans for the embedded reference model."""
    import folder_paths

    from comfyui_soda.nodes.profile_files import SODA_PROFILES, SODALoadProfile
    from comfyui_soda.nodes.reference_model import DEFAULT_MODEL, SODALoadReferenceModel
    from comfyui_soda.nodes.soda import SODAModelPatch, SODAPlanSchedule

    name = "soda_reference_digits_euler_simple_20.safetensors"
    assert name in folder_paths.get_filename_list(SODA_PROFILES)
    profile = SODALoadProfile.execute(name).result[0]
    assert profile.steps == 20 and profile.meta["calibration_runs"] == 2
    assert profile.meta["latent_shape"] == [100, 16, 16, 16]
    model = SODALoadReferenceModel.execute(DEFAULT_MODEL).result[0]
    soda_plan = SODAPlanSchedule.execute(profile, 2.0, 1, True).result[0]
    patched = SODAModelPatch.execute(model, soda_plan).result[0]
    assert patched.model_options["transformer_options"]["soda"] is not None
