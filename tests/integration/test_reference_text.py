"""SODA Reference Text Encode conditions any model whose configuration gives its text width (Flux with its pooled
vector, Flux.2 and Wan without one), and SODA Latent Preview Decode turns a video latent into its frames."""

import types

import pytest
import torch


pytestmark = pytest.mark.integration

WAN = {
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 128,
    "out_dim": 16,
    "num_heads": 1,
    "ffn_dim": 256,
    "num_layers": 1,
    "patch_size": [1, 2, 2],
    "freq_dim": 256,
    "window_size": [-1, -1],
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "in_dim": 16,
}


def _patcher(class_name, unet_config):  # type: ignore[no-untyped-def]
    import comfy.model_management
    import comfy.model_patcher

    from comfyui_soda.nodes.reference_model import build_diffusion_model
    from comfyui_soda.soda_core.weights import seed_parameters

    model = build_diffusion_model(class_name, unet_config)
    seed_parameters(model.diffusion_model, 0)
    return comfy.model_patcher.ModelPatcher(model, comfy.model_management.get_torch_device(), torch.device("cpu"))


def _encode(model, text):  # type: ignore[no-untyped-def]
    from comfyui_soda.nodes.reference_model import SODAReferenceTextEncode

    ((cond, extras),) = SODAReferenceTextEncode.execute(model=model, text=text).args[0]
    return cond, extras


def test_flux_keeps_its_context_and_pooled_widths(comfy) -> None:  # type: ignore[no-untyped-def]
    from comfyui_soda.nodes.reference_model import encode_text, load_reference_model
    from flux_helpers import REFERENCE_MODEL

    model = load_reference_model(REFERENCE_MODEL)
    config = model.model.model_config.unet_config
    cond, extras = _encode(model, "digit 3")
    expected, pooled = encode_text("digit 3", config["context_in_dim"], config["vec_in_dim"])
    assert torch.equal(cond, expected) and torch.equal(extras["pooled_output"], pooled)


def test_flux2_takes_no_pooled_output(comfy) -> None:  # type: ignore[no-untyped-def]
    from tiny_families.flux import FAMILIES

    (flux2,) = [family for family in FAMILIES if family.name == "flux2"]
    cond, extras = _encode(_patcher("Flux2", flux2.unet_config), "a red fox")
    assert cond.shape == (1, 3, flux2.unet_config["context_in_dim"]) and extras == {}


def test_wan_is_conditioned_at_its_class_default_text_width_and_samples(comfy) -> None:  # type: ignore[no-untyped-def]
    import comfy.sample

    model = _patcher("WAN21_T2V", WAN)
    assert "text_dim" not in model.model.model_config.unet_config  # ComfyUI's detection leaves it to the class
    cond, extras = _encode(model, "a red fox in snow")
    assert cond.shape == (1, 5, model.get_model_object("diffusion_model").text_embedding[0].in_features)
    assert extras == {}
    latent = torch.zeros(1, 16, 2, 8, 8)
    positive = [[cond, extras]]
    out = comfy.sample.sample(
        model, comfy.sample.prepare_noise(latent, 0), 2, 1.0, "euler", "simple", positive, positive, latent, seed=0
    )
    assert out.shape == latent.shape and torch.isfinite(out).all()


def test_a_model_without_a_text_width_is_refused_with_the_keys_looked_for(comfy) -> None:  # type: ignore[no-untyped-def]
    from comfyui_soda.nodes.reference_model import SODAReferenceTextEncode

    class Unknown(torch.nn.Module):
        def __init__(self, width: int = 8) -> None:
            super().__init__()

    model = types.SimpleNamespace(
        get_model_object=lambda name: Unknown(),
        model=types.SimpleNamespace(model_config=types.SimpleNamespace(unet_config={"width": 8})),
    )
    with pytest.raises(ValueError, match="context_in_dim, text_dim, joint_attention_dim"):
        SODAReferenceTextEncode.execute(model=model, text="a fox")


def test_a_video_latent_previews_as_its_frames_video_by_video(comfy) -> None:  # type: ignore[no-untyped-def]
    from comfyui_soda.nodes.reference_model import SODALatentToImage

    model = _patcher("WAN21_T2V", WAN)
    samples = torch.randn(2, 16, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    (frames,) = SODALatentToImage.execute(model=model, samples={"samples": samples}, upscale=2).args
    assert frames.shape == (6, 8, 10, 3) and 0.0 <= frames.min() and frames.max() <= 1.0
    for b in range(2):
        for t in range(3):
            one = {"samples": samples[b : b + 1, :, t : t + 1]}
            (single,) = SODALatentToImage.execute(model=model, samples=one, upscale=2).args
            # Up to float rounding: BLAS may sum a batch of 1 in another order than a batch of 6.
            torch.testing.assert_close(frames[3 * b + t], single[0], rtol=0.0, atol=1e-6)
