"""Committed family templates on tiny models in the real server: the template's own graph, with the model files
swapped for tiny seeded models of the same ComfyUI class (saved under names the server's UNETLoader lists), the
text encoders replaced by SODA Reference Text Encode (no text-encoder weights here) and the VAE decode by SODA Latent
Preview Decode. Everything between (model sampling shift, SODA Accelerate, samplers, schedulers, guiders, video
nodes) runs as committed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from e2e.conftest import API_DIR
from e2e.soda_runs import nodes_of


TEXT_ENCODERS = ("CLIPLoader", "DualCLIPLoader", "VAELoader")
DECODERS = ("VAEDecode", "VAEDecodeTiled")


def save_tiny_model(path: Path, model_class: str, unet_config: dict[str, Any], seed: int) -> None:
    """A tiny ``model_class`` (``comfy.supported_models``) with seeded weights, saved for ComfyUI's UNETLoader."""
    from safetensors.torch import save_file

    from comfyui_soda.nodes.reference_model import build_diffusion_model
    from comfyui_soda.soda_core.weights import seed_parameters

    model = build_diffusion_model(model_class, unet_config)
    seed_parameters(model.diffusion_model, seed)
    save_file({k: v.contiguous() for k, v in model.diffusion_model.state_dict().items()}, str(path))


def load_template(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads((API_DIR / f"{name}.json").read_text())
    return copy.deepcopy(workflow)


def stand_in_text_and_decode(
    workflow: dict[str, Any], model: list[Any], prompt: str | None = None, negative: str = "static blurry"
) -> None:
    """Drop the text-encoder and VAE loaders; each CLIPTextEncode becomes SODA Reference Text Encode of ``model``
    (the negative one, titled "Negative ...", with ``negative``; the others with ``prompt``, or their own text when
    None), and the decode becomes SODA Latent Preview Decode."""
    for class_type in TEXT_ENCODERS:
        for key in nodes_of(workflow, class_type):
            del workflow[key]
    for key in nodes_of(workflow, "CLIPTextEncode"):
        own = workflow[key]["inputs"]["text"] if prompt is None else prompt
        text = negative if "Negative" in workflow[key]["_meta"]["title"] else own
        workflow[key] = {
            "class_type": "SODAReferenceTextEncode",
            "inputs": {"model": model, "text": text},
            "_meta": workflow[key]["_meta"],
        }
    for class_type in DECODERS:
        for key in nodes_of(workflow, class_type):
            samples = workflow[key]["inputs"]["samples"]
            workflow[key] = {
                "class_type": "SODALatentToImage",
                "inputs": {"model": model, "samples": samples, "upscale": 4},
                "_meta": workflow[key]["_meta"],
            }
