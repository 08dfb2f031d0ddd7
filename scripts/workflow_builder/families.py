"""Image families on the one-node path: Flux.1-dev, Flux.2-dev, SD3.5 Large and Qwen-Image.

Each group 1 has the loaders, model files, prompt nodes, latent size and sampler settings of ComfyUI's own template
for the family (``comfyui_workflow_templates``: flux_dev_full_text_to_image, image_flux2_text_to_image,
sd3.5_simple_example, image_qwen_image; the speed-up LoRA switches of those templates are left out), with SODA
Accelerate between the model and the sampler. ``ProfilingShape`` gives the real model's size for the memory bound.
"""

from __future__ import annotations

from .accelerate_graph import (
    COLUMN_1_WIDTH,
    Decode,
    Family,
    ProfilingShape,
    Sampling,
    Sigmas,
    accelerate_workflow,
    how_it_works,
)
from .graph import Node, Workflow


X = 0  # group 1's column


def model_file(name: str, url: str, directory: str) -> dict[str, str]:
    """A model download as the frontend reads it from ``properties.models``."""
    return {"name": name, "url": url, "directory": directory}


HF = "https://huggingface.co"
FLUX1_MODELS = {
    "unet": model_file(
        "flux1-dev.safetensors", f"{HF}/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"
    ),
    "clip_l": model_file(
        "clip_l.safetensors",
        f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "text_encoders",
    ),
    "t5": model_file(
        "t5xxl_fp16.safetensors",
        f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "text_encoders",
    ),
    "vae": model_file(
        "ae.safetensors",
        f"{HF}/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        "vae",
    ),
}
FLUX2 = f"{HF}/Comfy-Org/flux2-dev/resolve/main/split_files"
FLUX2_MODELS = {
    "unet": model_file(
        "flux2_dev_fp8mixed.safetensors",
        f"{FLUX2}/diffusion_models/flux2_dev_fp8mixed.safetensors",
        "diffusion_models",
    ),
    "text": model_file(
        "mistral_3_small_flux2_bf16.safetensors",
        f"{FLUX2}/text_encoders/mistral_3_small_flux2_bf16.safetensors",
        "text_encoders",
    ),
    "vae": model_file(
        "full_encoder_small_decoder.safetensors",
        f"{HF}/black-forest-labs/FLUX.2-small-decoder/resolve/main/full_encoder_small_decoder.safetensors",
        "vae",
    ),
}
SD35_CHECKPOINT = model_file(
    "sd3.5_large_fp8_scaled.safetensors",
    f"{HF}/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_large_fp8_scaled.safetensors?download=true",
    "checkpoints",
)
QWEN = f"{HF}/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files"
QWEN_MODELS = {
    "unet": model_file(
        "qwen_image_fp8_e4m3fn.safetensors",
        f"{QWEN}/diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
        "diffusion_models",
    ),
    "text": model_file(
        "qwen_2.5_vl_7b_fp8_scaled.safetensors",
        f"{QWEN}/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "text_encoders",
    ),
    "vae": model_file("qwen_image_vae.safetensors", f"{QWEN}/vae/qwen_image_vae.safetensors", "vae"),
}
PROMPT = (
    "a red fox sitting in fresh snow at the edge of a pine forest at sunrise, soft golden light, detailed fur, "
    "shallow depth of field"
)
PROMPT_SIZE = (COLUMN_1_WIDTH, 160)
NEGATIVE_SIZE = (COLUMN_1_WIDTH, 120)


def unet(title: str, file: dict[str, str]) -> Node:
    return Node(
        "model",
        "UNETLoader",
        (X, None),
        title=title,
        widgets={"unet_name": file["name"], "weight_dtype": "default"},
        size=(COLUMN_1_WIDTH, None),
        models=[file],
    )


def prompt(key: str, title: str, clip: tuple[str, str], text: str) -> Node:
    size = PROMPT_SIZE if text else NEGATIVE_SIZE
    return Node(key, "CLIPTextEncode", (X, None), title=title, links={"clip": clip}, widgets={"text": text}, size=size)


def vae(file: dict[str, str]) -> Node:
    widgets = {"vae_name": file["name"]}
    return Node("vae", "VAELoader", (X, None), widgets=widgets, size=(COLUMN_1_WIDTH, None), models=[file])


VAE_DECODE = Decode("VAEDecode", {"vae": ("vae", "VAE")})
IMAGE_STEPS = f"""\
What this graph does
1. Model and prompt: ComfyUI's own {{template}} set-up ({{settings}}).
2. SODA Accelerate, between the model and the sampler: the only SODA node.
3. Sample and save as usual.

{how_it_works()}"""


def flux_dev() -> Workflow:
    clip = ("clip", "CLIP")
    nodes = [
        unet("Load Diffusion Model (Flux.1-dev)", FLUX1_MODELS["unet"]),
        Node(
            "clip",
            "DualCLIPLoader",
            (X, None),
            widgets={"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"},
            size=(COLUMN_1_WIDTH, None),
            models=[FLUX1_MODELS["clip_l"], FLUX1_MODELS["t5"]],
        ),
        vae(FLUX1_MODELS["vae"]),
        prompt("positive", "Positive prompt", clip, PROMPT),
        Node("negative", "ConditioningZeroOut", (X, None), links={"conditioning": ("positive", "CONDITIONING")}),
        Node("latent", "EmptySD3LatentImage", (X, None), widgets={"width": 1024, "height": 1024, "batch_size": 1}),
    ]
    family = Family(
        nodes,
        ("model", "MODEL"),
        positive=("positive", "CONDITIONING"),
        negative=("negative", "CONDITIONING"),
        latent=("latent", "LATENT"),
        decode=VAE_DECODE,
        sampling=Sampling(steps=20, cfg=1.0, sampler_name="euler", scheduler="simple"),
        profiling=ProfilingShape(layers=57, modules=2, rows=1, tokens=4096 + 512, channels=21504, steps=20),
    )
    settings = "20 steps euler/simple, cfg 1.0 (Flux's built-in guidance 3.5), 1024x1024"
    note = IMAGE_STEPS.format(template="Flux.1 Dev text-to-image", settings=settings)
    description = "Flux.1-dev text to image, 1024x1024, with SODA Accelerate: 2x less transformer work from run 2."
    return accelerate_workflow("soda_flux_dev", description, note, family)


def flux2_dev() -> Workflow:
    clip = ("clip", "CLIP")
    nodes = [
        unet("Load Diffusion Model (Flux.2-dev)", FLUX2_MODELS["unet"]),
        Node(
            "clip",
            "CLIPLoader",
            (X, None),
            widgets={"clip_name": FLUX2_MODELS["text"]["name"], "type": "flux2"},
            size=(COLUMN_1_WIDTH, None),
            models=[FLUX2_MODELS["text"]],
        ),
        vae(FLUX2_MODELS["vae"]),
        prompt("positive", "Positive prompt", clip, PROMPT),
        Node(
            "guidance",
            "FluxGuidance",
            (X, None),
            links={"conditioning": ("positive", "CONDITIONING")},
            widgets={"guidance": 4.0},
        ),
        Node("latent", "EmptyFlux2LatentImage", (X, None), widgets={"width": 1024, "height": 1024, "batch_size": 1}),
    ]
    family = Family(
        nodes,
        ("model", "MODEL"),
        positive=("guidance", "CONDITIONING"),
        negative=None,
        latent=("latent", "LATENT"),
        decode=VAE_DECODE,
        sampling=Sampling(steps=20, sampler_name="euler"),
        sigmas=Sigmas("Flux2Scheduler", {"steps": 20, "width": 1024, "height": 1024}),
        profiling=ProfilingShape(layers=56, modules=2, rows=1, tokens=4096 + 512, channels=55296, steps=20),
    )
    settings = "Flux2Scheduler 20 steps, euler, FluxGuidance 4.0, 1024x1024"
    note = IMAGE_STEPS.format(template="Flux.2 Dev text-to-image", settings=settings)
    description = "Flux.2-dev text to image, 1024x1024, with SODA Accelerate: 2x less transformer work from run 2."
    return accelerate_workflow("soda_flux2_dev", description, note, family)


def sd35_large() -> Workflow:
    clip = ("checkpoint", "CLIP")
    nodes = [
        Node(
            "checkpoint",
            "CheckpointLoaderSimple",
            (X, None),
            title="Load Checkpoint (SD3.5 Large)",
            widgets={"ckpt_name": SD35_CHECKPOINT["name"]},
            size=(COLUMN_1_WIDTH, None),
            models=[SD35_CHECKPOINT],
        ),
        prompt("positive", "Positive prompt", clip, PROMPT),
        prompt("negative", "Negative prompt", clip, ""),
        Node("latent", "EmptySD3LatentImage", (X, None), widgets={"width": 1024, "height": 1024, "batch_size": 1}),
    ]
    family = Family(
        nodes,
        ("checkpoint", "MODEL"),
        positive=("positive", "CONDITIONING"),
        negative=("negative", "CONDITIONING"),
        latent=("latent", "LATENT"),
        decode=Decode("VAEDecode", {"vae": ("checkpoint", "VAE")}),
        sampling=Sampling(steps=20, cfg=4.01, sampler_name="euler", scheduler="sgm_uniform"),  # the template's
        profiling=ProfilingShape(layers=38, modules=3, rows=2, tokens=4096 + 333, channels=9728, steps=20),
    )
    settings = "20 steps euler/sgm_uniform, cfg 4.01, 1024x1024"
    note = IMAGE_STEPS.format(template="SD3.5 Large", settings=settings)
    description = "SD3.5 Large text to image, 1024x1024, with SODA Accelerate: 2x less transformer work from run 2."
    return accelerate_workflow("soda_sd35_large", description, note, family)


def qwen_image() -> Workflow:
    clip = ("clip", "CLIP")
    nodes = [
        unet("Load Diffusion Model (Qwen-Image)", QWEN_MODELS["unet"]),
        Node(
            "shift",
            "ModelSamplingAuraFlow",
            (X, None),
            links={"model": ("model", "MODEL")},
            widgets={"shift": 3.1},
        ),
        Node(
            "clip",
            "CLIPLoader",
            (X, None),
            widgets={"clip_name": QWEN_MODELS["text"]["name"], "type": "qwen_image"},
            size=(COLUMN_1_WIDTH, None),
            models=[QWEN_MODELS["text"]],
        ),
        vae(QWEN_MODELS["vae"]),
        prompt("positive", "Positive prompt", clip, PROMPT),
        prompt("negative", "Negative prompt", clip, ""),
        Node("latent", "EmptySD3LatentImage", (X, None), widgets={"width": 1328, "height": 1328, "batch_size": 1}),
    ]
    family = Family(
        nodes,
        ("shift", "MODEL"),
        positive=("positive", "CONDITIONING"),
        negative=("negative", "CONDITIONING"),
        latent=("latent", "LATENT"),
        decode=VAE_DECODE,
        sampling=Sampling(steps=20, cfg=2.5, sampler_name="euler", scheduler="simple"),  # the template's
        # 60 dual-stream blocks (attention, MLP); 83 x 83 image tokens and a long prompt; cond and uncond rows;
        # widest linear: the 6 x 3072 modulation
        profiling=ProfilingShape(layers=60, modules=2, rows=2, tokens=83 * 83 + 256, channels=18432, steps=20),
    )
    settings = "ModelSamplingAuraFlow shift 3.1, 20 steps euler/simple, cfg 2.5, 1328x1328"
    note = IMAGE_STEPS.format(template="Qwen-Image text-to-image", settings=settings)
    description = "Qwen-Image text to image, 1328x1328, with SODA Accelerate: 2x less transformer work from run 2."
    return accelerate_workflow("soda_qwen_image", description, note, family)
