"""The embedded (trained) reference model and the reference/fidelity nodes, built with ComfyUI's own classes (CPU)."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILE = ROOT / "models" / "soda_reference_digits.safetensors"


@pytest.fixture(scope="module")
def ref(comfy):  # type: ignore[no-untyped-def]
    from comfyui_soda.nodes import reference_model

    return reference_model


@pytest.fixture(scope="module")
def fidelity(comfy):  # type: ignore[no-untyped-def]
    from comfyui_soda.nodes import fidelity

    return fidelity


@pytest.fixture(scope="module")
def patcher(ref):  # type: ignore[no-untyped-def]
    return ref.load_reference_model(MODEL_FILE)


def _encode(ref, patcher, text):  # type: ignore[no-untyped-def]
    return ref.SODAReferenceTextEncode.execute(model=patcher, text=text).args[0]


def test_file_is_small_and_self_describing() -> None:
    assert MODEL_FILE.stat().st_size <= 25 * 1000 * 1000
    with safe_open(str(MODEL_FILE), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["soda.model_family"] == "flux"
    assert metadata["soda.format_version"] == "1"
    config = json.loads(metadata["soda.unet_config"])
    assert (config["hidden_size"], config["num_heads"], config["depth"], config["depth_single_blocks"]) == (
        128,
        2,
        2,
        4,
    )
    assert json.loads(metadata["soda.classes"]) == [f"digit {c}" for c in range(10)]
    assert json.loads(metadata["soda.training"])["iterations"] >= 1000


def test_loads_as_comfy_flux_with_bit_exact_weights(comfy, patcher) -> None:  # type: ignore[no-untyped-def]
    import comfy.ldm.flux.model
    import comfy.model_patcher

    assert isinstance(patcher, comfy.model_patcher.ModelPatcher)
    assert isinstance(patcher.model.diffusion_model, comfy.ldm.flux.model.Flux)
    # the file's keys as the running ComfyUI converts them when it loads a checkpoint (0.33 renamed RMSNorm .scale)
    expected = patcher.model.model_config.process_unet_state_dict(load_file(str(MODEL_FILE)))
    loaded = patcher.model.diffusion_model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert value.dtype == torch.float16
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], value.to(torch.float32)), key


def test_samples_three_steps_to_finite_output(comfy, ref, patcher) -> None:  # type: ignore[no-untyped-def]
    import comfy.sample

    latent = torch.zeros(1, 16, 32, 32)
    noise = comfy.sample.prepare_noise(latent, 0)
    positive = _encode(ref, patcher, "digit 3")
    negative = _encode(ref, patcher, "")
    out = comfy.sample.sample(
        patcher, noise, 3, 1.0, "euler", "simple", positive, negative, latent, seed=0, disable_pbar=True
    )
    assert out.shape == latent.shape
    assert torch.isfinite(out).all()


def test_loader_node_finds_the_embedded_file(ref) -> None:  # type: ignore[no-untyped-def]
    schema = ref.SODALoadReferenceModel.define_schema()
    combo = schema.inputs[0]
    assert ref.DEFAULT_MODEL in combo.options and combo.default == ref.DEFAULT_MODEL
    model = ref.SODALoadReferenceModel.execute(model_name=ref.DEFAULT_MODEL).args[0]
    assert model.model.model_config.unet_config["hidden_size"] == 128
    assert model.model.soda_classes == tuple(f"digit {c}" for c in range(10))


def test_schemas_document_every_input(ref, fidelity) -> None:  # type: ignore[no-untyped-def]
    for node in [*ref.NODES, *fidelity.NODES]:
        schema = node.define_schema()
        schema.validate()
        assert schema.description
        assert all(i.tooltip for i in schema.inputs), node.__name__


def test_text_encode_is_deterministic(ref, patcher) -> None:  # type: ignore[no-untyped-def]
    first = _encode(ref, patcher, "A red fox")
    again = _encode(ref, patcher, "a  RED fox")
    other = _encode(ref, patcher, "a blue fox")
    cond, extra = first[0]
    assert cond.shape == (1, 3, 64) and extra["pooled_output"].shape == (1, 64)
    assert torch.equal(cond, again[0][0]) and torch.equal(extra["pooled_output"], again[0][1]["pooled_output"])
    assert not torch.equal(cond, other[0][0])
    assert torch.equal(cond[0, [0, 2]], other[0][0][0, [0, 2]])  # same word ("a", "fox"), same vector
    assert _encode(ref, patcher, "")[0][0].shape == (1, 1, 64)
    assert _encode(ref, patcher, " ".join(["w"] * 100))[0][0].shape == (1, 64, 64)


def test_class_encode_conditions_each_row_with_its_caption(ref, patcher) -> None:  # type: ignore[no-untyped-def]
    conditioning, latent = ref.SODAReferenceClassEncode.execute(model=patcher, labels="3, 0-2 9").args
    ((cond, extra),) = conditioning
    assert cond.shape == (5, 2, 64) and extra["pooled_output"].shape == (5, 64)
    assert torch.equal(latent["samples"], torch.zeros(5, 16, 16, 16))  # one empty latent per label
    for row, label in enumerate([3, 0, 1, 2, 9]):
        ((text_cond, text_extra),) = _encode(ref, patcher, f"digit {label}")
        assert torch.equal(cond[row], text_cond[0]) and torch.equal(
            extra["pooled_output"][row], text_extra["pooled_output"][0]
        )


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("12", r"class\(es\) \[12\].*0 = 'digit 0'.*Fix"),
        ("three", r"'three'.*not a class number"),
        ("  ", "names no class"),
    ],
)
def test_class_encode_refuses_unknown_labels(ref, patcher, labels, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        ref.SODAReferenceClassEncode.execute(model=patcher, labels=labels)


def test_class_encode_needs_a_model_with_classes(ref) -> None:  # type: ignore[no-untyped-def]
    from flux_helpers import tiny_flux

    with pytest.raises(ValueError, match="no class list.*SODA Reference Text Encode"):
        ref.SODAReferenceClassEncode.execute(model=tiny_flux(), labels="0")


def test_trained_model_draws_the_digit_it_is_asked_for(comfy, ref, patcher) -> None:  # type: ignore[no-untyped-def]
    """At full compute (20 steps euler) the classifier recognises most of 20 samples as their condition."""
    import comfy.sample

    from benchmarks.digits import Judge, to_gray

    labels = torch.arange(20) % 10
    positive, empty = ref.SODAReferenceClassEncode.execute(model=patcher, labels="0-9 0-9").args
    latent = empty["samples"]
    noise = comfy.sample.prepare_noise(latent, 7)
    samples = comfy.sample.sample(
        patcher, noise, 20, 1.0, "euler", "simple", positive, positive, latent, seed=7, disable_pbar=True
    )
    gray = to_gray(ref.latent_preview_rgb(patcher.model.latent_format, samples, 1))
    assert Judge().evaluate(gray, labels)["accuracy"] >= 0.8


def test_pooled_vector_is_tiled_or_truncated(ref) -> None:  # type: ignore[no-untyped-def]
    cond, wide = ref.encode_text("two words", 8, 20)
    mean = cond[0].mean(dim=0)
    assert torch.equal(wide[0], torch.cat([mean, mean, mean])[:20])
    assert torch.equal(ref.encode_text("two words", 8, 5)[1][0], mean[:5])


def test_latent_preview_decode(ref, patcher) -> None:  # type: ignore[no-untyped-def]
    samples = {"samples": torch.randn(2, 16, 8, 12, generator=torch.Generator().manual_seed(0))}
    image = ref.SODALatentToImage.execute(model=patcher, samples=samples, upscale=4).args[0]
    assert image.shape == (2, 32, 48, 3)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert torch.equal(image[:, ::4, ::4], image[:, 3::4, 3::4])  # nearest-exact: 4x4 blocks of one colour
    one = ref.SODALatentToImage.execute(model=patcher, samples=samples, upscale=1).args[0]
    assert one.shape == (2, 8, 12, 3) and torch.equal(one, image[:, ::4, ::4])
    (grid,) = ref.SODALatentToImage.execute(model=patcher, samples=samples, upscale=1, grid_columns=3).args[0]
    assert grid.shape == (8, 36, 3)  # one row of three cells: the two images, then white
    assert torch.equal(grid[:, :12], one[0]) and torch.equal(grid[:, 12:24], one[1]) and (grid[:, 24:] == 1).all()


def test_build_flux_patcher_is_seeded(ref) -> None:  # type: ignore[no-untyped-def]
    config = json.loads(load_metadata()["soda.unet_config"])
    first = ref.build_flux_patcher(config, seed=5).model.diffusion_model.state_dict()
    second = ref.build_flux_patcher(config, seed=5).model.diffusion_model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def load_metadata() -> dict[str, str]:
    with safe_open(str(MODEL_FILE), framework="pt") as f:
        return dict(f.metadata())


def test_load_errors_are_clear(ref, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tensors = load_file(str(MODEL_FILE))
    metadata = load_metadata()

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ValueError, match="not a SODA reference model"):
        ref.load_reference_model(plain)

    unknown = tmp_path / "unknown.safetensors"
    save_file(tensors, str(unknown), metadata={**metadata, "soda.model_family": "sd9"})
    with pytest.raises(ValueError, match=r"unknown\.safetensors.*'sd9'.*Known families: flux"):
        ref.load_reference_model(unknown)

    broken = dict(tensors)
    del broken["double_blocks.0.img_attn.proj.weight"]  # not a key ComfyUI's detection reads
    broken["extra.weight"] = torch.zeros(2)
    broken["txt_in.bias"] = torch.zeros(3, dtype=torch.float16)
    bad = tmp_path / "bad.safetensors"
    save_file(broken, str(bad), metadata=metadata)
    with pytest.raises(
        ValueError,
        match=r"missing key\(s\): double_blocks\.0\.img_attn\.proj\.weight.*"
        r"unexpected key\(s\): extra\.weight.*txt_in",
    ):
        ref.load_reference_model(bad)


def _images(seed: int) -> torch.Tensor:
    return torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(seed))


def test_compare_node_matches_soda_core(comfy, fidelity) -> None:  # type: ignore[no-untyped-def]
    from comfyui_soda.soda_core import metrics

    reference, candidate = _images(0), (_images(0) + 0.05 * _images(1)).clamp(0, 1)
    out = fidelity.SODACompareImages.execute(reference=reference, candidate=candidate)
    psnr_value, ssim_value, report = out.args
    assert psnr_value == metrics.psnr(reference, candidate)
    assert ssim_value == metrics.ssim(reference, candidate)
    ui = out.ui["soda_metrics"][0]
    assert ui["max_abs"] == metrics.max_abs_error(reference, candidate)
    assert ui["rel_l2"] == metrics.relative_l2(reference, candidate)
    assert out.ui["text"] == [report]
    assert report.splitlines() == [
        f"- PSNR: {psnr_value:.2f} dB (higher is closer)",
        f"- SSIM: {ssim_value:.4f} (1 = identical)",
        f"- largest pixel difference: {ui['max_abs']:.3g} (pixel values 0 to 1)",
        "- compared: 1 image of 32 x 32 pixels",
    ]


def test_compare_node_ui_is_json_safe_and_reaches_history(comfy, fidelity) -> None:  # type: ignore[no-untyped-def]
    from execution import get_output_from_returns  # what ComfyUI stores as the node's /history outputs

    image = _images(2)
    out = fidelity.SODACompareImages.execute(reference=image, candidate=image.clone())
    assert out.args[0] == math.inf and out.args[1] == pytest.approx(1.0)
    _, ui, _ = get_output_from_returns([out], fidelity.SODACompareImages)
    record = json.loads(json.dumps(ui, allow_nan=False))
    assert record["soda_metrics"][0]["psnr"] is None and record["soda_metrics"][0]["identical"] is True
    assert "infinite" in record["soda_metrics"][0]["note"]
    assert record["text"][0].splitlines()[0] == "- PSNR: inf (the images are identical)"


def test_compare_node_rejects_different_shapes(fidelity) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=r"\(1, 32, 32, 3\).*\(1, 16, 32, 3\).*same size"):
        fidelity.SODACompareImages.execute(reference=_images(0), candidate=_images(1)[:, :16])
