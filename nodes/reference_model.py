"""The embedded reference model and the nodes that make it usable without any download.

``models/soda_reference_digits.safetensors`` (made by ``scripts/train_reference_model.py``) is a small
Flux-architecture DiT trained on handwritten digits: caption ``"digit 3"`` gives a 3. Its safetensors metadata
records the model family, the exact ``unet_config`` and the captions it was trained on, so it is rebuilt through
ComfyUI's own classes (``comfy.supported_models.Flux``) instead of ComfyUI's shape-based detection, which assumes
full-size Flux widths. Around it: a deterministic stand-in text encoder (no CLIP/T5 needed), a class-label encoder
that conditions a whole batch at once, and a VAE-free latent preview decode, so a whole SODA workflow runs on a CPU
in seconds.
"""

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import comfy.utils
import folder_paths
import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..soda_core.weights import seed_parameters
from .inputs import SodaNode, checked
from .patching import comfy_version
from .reference_text import encode_captions, encode_text, label_numbers, parse_labels, text_widths


logger = logging.getLogger(__name__)

SODA_MODELS = "soda_models"
EMBEDDED_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DEFAULT_MODEL = "soda_reference_digits.safetensors"
FORMAT_VERSION = "1"
# metadata "soda.model_family" -> class name in comfy.supported_models
MODEL_FAMILIES = {"flux": "Flux"}
CATEGORY = "sampling/soda/reference"


def register_model_folders() -> None:
    """Register ComfyUI's ``soda_models`` folder: the pack's ``models/`` plus the user's ``models/soda_models``."""
    if SODA_MODELS not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[SODA_MODELS] = ([], {".safetensors"})
    folder_paths.add_model_folder_path(SODA_MODELS, str(EMBEDDED_MODELS_DIR))
    folder_paths.add_model_folder_path(SODA_MODELS, os.path.join(folder_paths.models_dir, SODA_MODELS))


register_model_folders()


def _build_model(family: str, unet_config: dict[str, Any], source: str, state_dict: Any = None) -> Any:
    """``comfy.supported_models.<Family>(unet_config)`` in float32 -> a ``comfy.model_base`` model (weights unset)."""
    class_name = MODEL_FAMILIES.get(family)
    if class_name is None:
        raise ValueError(
            f"{source}: unknown SODA model family {family!r}. Known families: {', '.join(sorted(MODEL_FAMILIES))}."
        )
    return build_diffusion_model(class_name, unet_config, state_dict)


def build_diffusion_model(class_name: str, unet_config: dict[str, Any], state_dict: Any = None) -> Any:
    """A ``comfy.model_base`` model of ``comfy.supported_models.<class_name>`` in float32 (weights unset).

    ``unet_config`` may lack fields the running ComfyUI's model classes need (newer versions add some, e.g.
    ``txt_ids_dims`` of Flux in 0.33): they are filled in from ComfyUI's own detection of the model's weights
    (``comfy.model_detection.detect_unet_config``), given in ``state_dict`` or, without weights, of an unset model
    built once with placeholders. The values ``unet_config`` gives always win.
    """
    supported = getattr(comfy.supported_models, class_name)
    try:
        return _instantiate(supported, unet_config)
    except TypeError as error:
        missing = re.findall(r"'(\w+)'", str(error)) if "required" in str(error) else []
        if not missing:
            raise
    if state_dict is None:
        state_dict = _instantiate(supported, {**dict.fromkeys(missing), **unet_config}).diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(state_dict, "") or {}
    absent = [k for k in missing if k not in detected]
    if absent:
        raise ValueError(
            f"ComfyUI {comfy_version()} needs {', '.join(absent)} to build a {class_name} model and its detection does "
            "not give it. Update comfyui-soda, or report the ComfyUI version at the pack's issue tracker."
        )
    return _instantiate(supported, {**{k: detected[k] for k in missing}, **unet_config})


def _instantiate(supported: Any, unet_config: dict[str, Any]) -> Any:
    model_config = supported(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    return model_config.get_model({})


def _wrap(model: Any) -> comfy.model_patcher.ModelPatcher:
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def _list_keys(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_state_dict(source: str, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Raise one ValueError listing every missing key, unexpected key and shape mismatch."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mismatched = [
        f"{k} (file {tuple(found[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_list_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_list_keys(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_list_keys(mismatched)}")
    if problems:
        raise ValueError(
            f"{source}: the weights do not fit the architecture in its metadata; "
            + "; ".join(problems)
            + ". Make it again with scripts/train_reference_model.py."
        )


def _read_metadata(source: str, metadata: dict[str, str] | None) -> tuple[str, dict[str, Any]]:
    """(family, unet_config) from a SODA reference file's safetensors metadata."""
    metadata = metadata or {}
    if "soda.model_family" not in metadata or "soda.unet_config" not in metadata:
        raise ValueError(
            f"{source} is not a SODA reference model (its metadata has no soda.model_family / soda.unet_config). "
            "Load ordinary checkpoints with ComfyUI's 'Load Diffusion Model' node."
        )
    version = metadata.get("soda.format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{source}: soda.format_version {version!r} is not supported (expected {FORMAT_VERSION!r}).")
    return metadata["soda.model_family"], json.loads(metadata["soda.unet_config"])


def load_reference_model(path: str | os.PathLike[str]) -> comfy.model_patcher.ModelPatcher:
    """Load a SODA reference ``.safetensors``: rebuild the model from its metadata, load the weights as float32.

    The captions the model was trained on (metadata ``soda.classes``, a JSON list) are kept as
    ``model.soda_classes`` for :class:`SODAReferenceClassEncode`; an untrained model has none.
    """
    source = str(path)
    state_dict, metadata = comfy.utils.load_torch_file(source, safe_load=True, return_metadata=True)
    family, unet_config = _read_metadata(source, metadata)
    model = _build_model(family, unet_config, source, state_dict)
    state_dict = model.model_config.process_unet_state_dict(state_dict)  # ComfyUI's own key conversions
    diffusion_model = model.diffusion_model
    _check_state_dict(source, diffusion_model.state_dict(), state_dict)
    diffusion_model.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()}, strict=True)
    model.soda_classes = tuple(json.loads((metadata or {}).get("soda.classes", "[]")))
    logger.info("SODA: loaded reference model %s (%s, %d tensors)", source, family, len(state_dict))
    return _wrap(model)


def build_flux_patcher(unet_config: dict[str, Any], seed: int) -> comfy.model_patcher.ModelPatcher:
    """A Flux model built like :func:`load_reference_model`, with weights from ``seed_parameters(seed)`` instead."""
    model = _build_model("flux", unet_config, "build_flux_patcher")
    seed_parameters(model.diffusion_model, seed)
    return _wrap(model)


def latent_preview_rgb(latent_format: Any, samples: torch.Tensor, upscale: int) -> torch.Tensor:
    """Latent [B, C, H, W] -> IMAGE [B, H*upscale, W*upscale, 3] with ComfyUI's Latent2RGB preview map; a video
    latent [B, C, T, H, W] gives its B*T frames (video by video).

    The LATENT output of a sampler is in VAE space; previews see the model-space x0, so ``process_in`` comes first.
    Then ``rgb = x @ latent_rgb_factors + bias``, mapped from [-1, 1] to [0, 1] and clamped, as ``latent_preview.py``.
    """
    if latent_format.latent_rgb_factors is None:
        raise ValueError(f"{type(latent_format).__name__} latents have no latent_rgb_factors; use a VAE Decode.")
    if latent_format.latent_rgb_factors_reshape is not None:
        samples = latent_format.latent_rgb_factors_reshape(samples)
    if samples.dim() not in (4, 5):
        raise ValueError(
            "SODA Latent Preview Decode expects image latents [B, C, H, W] or video latents [B, C, T, H, W]; got "
            f"{tuple(samples.shape)}."
        )
    x = latent_format.process_in(samples.to(torch.float32))  # video formats normalise per channel on 5-D latents
    if x.dim() == 5:
        x = x.movedim(2, 1).flatten(0, 1)  # (B*T, C, H, W): every frame of every video, in order
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float32, device=x.device)
    bias = latent_format.latent_rgb_factors_bias
    bias = None if bias is None else torch.tensor(bias, dtype=torch.float32, device=x.device)
    rgb = F.linear(x.movedim(1, -1), factors.transpose(0, 1), bias)
    image = ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).movedim(-1, 1)
    if upscale > 1:
        image = F.interpolate(image, scale_factor=upscale, mode="nearest-exact")
    return image.movedim(1, -1).cpu()


class SODALoadReferenceModel(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        options = folder_paths.get_filename_list(SODA_MODELS)
        return io.Schema(
            node_id="SODALoadReferenceModel",
            display_name="Load SODA Reference Model",
            category=CATEGORY,
            description="Load a SODA reference model from models/soda_models. The pack ships a small "
            "Flux-architecture DiT trained on handwritten digits (prompt 'digit 3', or Reference Class Encode): a "
            "MODEL to try SODA with, on any machine, with no download. It draws 16x16 latents.",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=options,
                    default=DEFAULT_MODEL if DEFAULT_MODEL in options else None,
                    tooltip="A SODA reference .safetensors from the soda_models folder (the pack's models/ or "
                    "ComfyUI's models/soda_models).",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The reference diffusion model (float32).")],
        )

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_reference_model(folder_paths.get_full_path_or_raise(SODA_MODELS, model_name)))


class SODAReferenceTextEncode(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODAReferenceTextEncode",
            display_name="SODA Reference Text Encode",
            category=CATEGORY,
            description="Deterministic stand-in text encoder for the reference model, or any model whose config "
            "gives its text width (Flux, Wan, Qwen-Image...): every word maps to a fixed random vector (seeded by its "
            "SHA-256), so equal prompts give equal conditioning. No CLIP/T5 needed.",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The model to condition; its config sets the context width and whether a pooled vector "
                    "is given (Flux.1's vec_in_dim).",
                ),
                io.String.Input(
                    "text", multiline=True, default="", tooltip="The prompt; words are lower-cased, at most 64."
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    tooltip="Conditioning [1, words, context width], with pooled_output where the model takes one."
                )
            ],
        )

    @classmethod
    @checked
    def execute(cls, model: Any, text: str) -> io.NodeOutput:
        context, pooled = text_widths(model)
        cond, pooled_output = encode_text(text, context, pooled or context)
        return io.NodeOutput([[cond, {"pooled_output": pooled_output} if pooled else {}]])


class SODAReferenceClassEncode(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODAReferenceClassEncode",
            display_name="SODA Reference Class Encode",
            category=CATEGORY,
            description="Conditioning for a trained reference model from class numbers, one caption per image (the "
            "reference digits model: 3 -> 'digit 3'), and the empty latent batch that goes with it: one latent per "
            "label, so the batch always matches the labels.",
            inputs=[
                io.Model.Input("model", tooltip="A trained SODA reference model; its file lists its classes."),
                io.String.Input(
                    "labels",
                    default="0-9",
                    tooltip="Class numbers, one image each: '3', '0 1 2', '7,7,7' or ranges '0-9 0-9'.",
                ),
                io.Int.Input(
                    "latent_size",
                    default=16,
                    min=2,
                    max=256,
                    step=2,
                    tooltip="Side of the empty latents (the digits model was trained on 16 = 128x128 pixels).",
                ),
            ],
            outputs=[
                io.Conditioning.Output(
                    "conditioning",
                    display_name="conditioning",
                    tooltip="One row per label: [labels, words, context_in_dim] with pooled_output.",
                ),
                io.Latent.Output(
                    "latent",
                    display_name="latent",
                    tooltip="Empty latents [labels, channels, latent_size, latent_size] for the samplers.",
                ),
            ],
        )

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        if isinstance(values.get("labels"), str):  # which classes exist is known only once the model is loaded
            label_numbers(values["labels"])

    @classmethod
    @checked
    def execute(cls, model: Any, labels: str, latent_size: int = 16) -> io.NodeOutput:
        classes = getattr(model.model, "soda_classes", ())
        if not classes:
            raise ValueError(
                "SODA Reference Class Encode: this model has no class list (only trained SODA reference models, "
                "loaded with Load SODA Reference Model, have one). Fix: use SODA Reference Text Encode instead."
            )
        unet_config = model.model.model_config.unet_config
        captions = [classes[i] for i in parse_labels(labels, classes)]
        conditioning = encode_captions(captions, unet_config["context_in_dim"], unet_config["vec_in_dim"])
        channels = model.model.latent_format.latent_channels
        latent = torch.zeros(len(captions), channels, latent_size, latent_size)
        return io.NodeOutput(conditioning, {"samples": latent})


class SODALatentToImage(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODALatentToImage",
            display_name="SODA Latent Preview Decode",
            category=CATEGORY,
            description="Turn a latent into a rough IMAGE with the model's latent-to-RGB preview factors (the map "
            "ComfyUI's live previews use), without a VAE. A video latent gives one image per frame.",
            inputs=[
                io.Model.Input("model", tooltip="The model the latent belongs to; gives its latent format."),
                io.Latent.Input("samples", tooltip="The latent to preview, e.g. a sampler's output."),
                io.Int.Input(
                    "upscale", default=4, min=1, max=8, tooltip="Nearest-neighbour upscale factor per latent pixel."
                ),
                io.Int.Input(
                    "grid_columns",
                    default=0,
                    min=0,
                    max=64,
                    optional=True,
                    tooltip="0: one image per latent. N: the whole batch tiled into one image, N latents per row "
                    "(handy for many small images, e.g. a batch of digits).",
                ),
            ],
            outputs=[
                io.Image.Output(
                    tooltip="IMAGE [B, H*upscale, W*upscale, 3] in [0, 1] (video: B*frames images; one image as a grid)."
                )
            ],
        )

    @classmethod
    @checked
    def execute(cls, model: Any, samples: dict[str, Any], upscale: int, grid_columns: int = 0) -> io.NodeOutput:
        images = latent_preview_rgb(model.model.latent_format, samples["samples"], upscale)
        return io.NodeOutput(tile(images, grid_columns) if grid_columns else images)


def tile(images: torch.Tensor, columns: int) -> torch.Tensor:
    """IMAGE batch [B, H, W, C] -> one image [1, rows*H, columns*W, C], row-major, white where the grid has no image."""
    batch, height, width, channels = images.shape
    rows = -(-batch // columns)
    padded = torch.ones(rows * columns, height, width, channels, dtype=images.dtype)
    padded[:batch] = images
    grid = padded.view(rows, columns, height, width, channels).permute(0, 2, 1, 3, 4)  # (rows, H, columns, W, C)
    return grid.reshape(1, rows * height, columns * width, channels)


NODES: list[type[io.ComfyNode]] = [
    SODALoadReferenceModel,
    SODAReferenceTextEncode,
    SODAReferenceClassEncode,
    SODALatentToImage,
]
