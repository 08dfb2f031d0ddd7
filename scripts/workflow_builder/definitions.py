"""The shared workflows, one function each: ``soda_quickstart`` (the bundled reference model, any CPU) and
``soda_flux_dev`` (Flux.1-dev). ``WORKFLOWS`` lists them; scripts/build_workflows.py writes both formats of each into
example_workflows/ and scripts/render_thumbnails.py draws each one's thumbnail.

To add a model family: write a function that returns ``soda_workflow(name, description, note, ModelInputs(...))``
with the family's loader, prompt and latent nodes (declare model downloads with ``Node(models=[...])``: the editor
offers them and the Note lists them), add it to ``WORKFLOWS``, run scripts/build_workflows.py and
scripts/render_thumbnails.py, and commit the .json and .jpg files.
"""

from __future__ import annotations

from .graph import Node, Workflow
from .soda_graph import SODA_OUTPUT_TITLE, ModelInputs, soda_workflow


COLUMN_1_WIDTH = 380  # group 1 (model and prompt): wide enough for model file names


QUICKSTART_DESCRIPTION = "SODA quick start on the bundled digits model: runs on any CPU, nothing to download."
QUICKSTART_NOTE = """\
What this graph does
1. Model and prompt. Loads the small reference model that ships with the pack: a Flux-shaped transformer trained \
on handwritten digits. "Digits to draw" asks for one image per class number ("0-9" gives ten digits; here ten \
of each, a batch of 100) and makes the matching batch of empty 16x16 latents; the decode nodes tile the batch into \
one picture. No CLIP, T5 or VAE is needed.
2. SODA: profile -> plan -> patch. "Profile Sensitivity" samples once at full compute and measures, for every \
step and every attention and MLP module, how much the result would change if that module's output were reused from \
an earlier step. "Plan SODA Schedule" turns that profile into a schedule for the speed-up you ask for \
(target_speedup 2.0 = half the transformer work). "SODA Model Patch" returns a copy of the model that follows the \
schedule. The sensitivity heatmap and the plan are saved as images; the text box shows the plan's summary.
3. Sample. Two ordinary KSamplers with identical settings and the same seed: "Full compute KSampler" on the \
original model, "SODA KSampler" on the patched one.
4. Compare. PSNR and SSIM of the SODA digits against the full-compute digits (higher is closer; identical images \
give PSNR inf).

How to use it
Queue it once. Profiling runs first; it samples once and measures every module at every step, so it takes a few \
times longer than a plain sampling run. As long as the model, prompt and sampler settings stay the same, ComfyUI keeps the profile, so you can change target_speedup and queue again to try other \
speeds: only the SODA branch runs again.
Keep the sampler settings (steps, sampler, scheduler, cfg) of Profile Sensitivity and the two KSamplers \
identical: a profile describes the steps it was measured on.

With your own Flux model
Open the "soda_flux_dev" workflow from the templates (comfyui-soda), or change this graph: replace "Load SODA \
Reference Model" by "Load Diffusion Model" (flux1-dev.safetensors), "Digits to draw" and the negative prompt by \
"CLIP Text Encode" fed by "DualCLIPLoader" (clip_l + t5xxl, type flux) with "FluxGuidance" 3.5 on the positive \
prompt, add an "Empty SD3 Latent Image" for the samplers, and replace each "SODA Latent Preview Decode" by \
"VAE Decode" with ae.safetensors. Profile once per model, image \
size and sampler setting; save the profile with "Save SODA Profile" to skip profiling next time.
"""

FLUX_DEV_DESCRIPTION = (
    "SODA on Flux.1-dev, 1024x1024: profile, plan half the transformer work, compare with full compute."
)
FLUX_DEV_NOTE = """\
What this graph does
1. Model and prompt: the usual Flux.1-dev text-to-image set-up (FluxGuidance 3.5, cfg 1.0, 20 steps euler/simple, \
1024x1024).
2. SODA: "Profile Sensitivity" samples once at full compute and measures how much every attention and MLP module \
changes from step to step; "Plan SODA Schedule" picks the steps to compute fully and what to reuse for the speed-up \
you ask for (target_speedup 2.0 = half the transformer work); "SODA Model Patch" returns a copy of the model that \
follows the schedule.
3. Sample: "Full compute KSampler" on the original model and "SODA KSampler" on the patched one, same settings and \
seed.
4. Compare: PSNR and SSIM of the SODA image against the full-compute one.

Profiling samples once and measures every module at every step, so it takes longer than a plain sampling run. Keep \
the model, prompt, size and sampler settings unchanged and ComfyUI keeps the profile: change target_speedup and queue again. "Save SODA Profile" stores a profile to reuse in later sessions.

Memory: profiling keeps a 64-number sketch of each token of the last max_distance (8) outputs of every attention \
and MLP module: about 1.1 GB at 1024x1024, within the default memory_limit_mb. Above the limit, profiling stops \
with a message before sampling instead of running out of memory.
"""

QUICKSTART_LABELS = " ".join(["0-9"] * 10)  # ten of each digit: a batch large enough for SODA to pay off on a CPU
FLUX_PROMPT = (
    "a red fox sitting in fresh snow at the edge of a pine forest at sunrise, soft golden light, detailed fur, "
    "shallow depth of field"
)

FLUX_MODELS = {
    "unet": {
        "name": "flux1-dev.safetensors",
        "url": "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
        "directory": "diffusion_models",
    },
    "clip_l": {
        "name": "clip_l.safetensors",
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "directory": "text_encoders",
    },
    "t5": {
        "name": "t5xxl_fp16.safetensors",
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "directory": "text_encoders",
    },
    "vae": {
        "name": "ae.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        "directory": "vae",
    },
}


def quickstart() -> Workflow:
    model = ("model", "MODEL")
    nodes = [
        Node(
            "model",
            "SODALoadReferenceModel",
            (0, 0),
            widgets={"model_name": "soda_reference_digits.safetensors"},
            size=(COLUMN_1_WIDTH, 58),
        ),
        Node(
            "positive",
            "SODAReferenceClassEncode",
            (0, 130),
            title="Digits to draw",
            links={"model": model},
            widgets={"labels": QUICKSTART_LABELS},
            size=(COLUMN_1_WIDTH, 160),
        ),
        Node(
            "negative",
            "SODAReferenceTextEncode",
            (0, 350),
            title="Negative prompt",
            links={"model": model},
            widgets={"text": ""},
            size=(COLUMN_1_WIDTH, 120),
        ),
    ]
    inputs = ModelInputs(
        nodes,
        model,
        positive=("positive", "conditioning"),
        negative=("negative", "CONDITIONING"),
        latent=("positive", "latent"),
        decoder="SODALatentToImage",
        decoder_links={"model": model},
        decoder_widgets={"upscale": 4, "grid_columns": 10},
    )
    return soda_workflow(
        "soda_quickstart", QUICKSTART_DESCRIPTION, QUICKSTART_NOTE, inputs, thumbnail_from=SODA_OUTPUT_TITLE
    )


def flux_dev() -> Workflow:
    model = ("model", "MODEL")
    nodes = [
        Node(
            "model",
            "UNETLoader",
            (0, 0),
            title="Load Diffusion Model (Flux.1-dev)",
            widgets={"unet_name": FLUX_MODELS["unet"]["name"], "weight_dtype": "default"},
            size=(COLUMN_1_WIDTH, 82),
            models=[FLUX_MODELS["unet"]],
        ),
        Node(
            "clip",
            "DualCLIPLoader",
            (0, 130),
            widgets={
                "clip_name1": FLUX_MODELS["clip_l"]["name"],
                "clip_name2": FLUX_MODELS["t5"]["name"],
                "type": "flux",
            },
            size=(COLUMN_1_WIDTH, 130),
            models=[FLUX_MODELS["clip_l"], FLUX_MODELS["t5"]],
        ),
        Node(
            "vae",
            "VAELoader",
            (0, 310),
            widgets={"vae_name": FLUX_MODELS["vae"]["name"]},
            size=(COLUMN_1_WIDTH, 58),
            models=[FLUX_MODELS["vae"]],
        ),
        Node(
            "positive_text",
            "CLIPTextEncode",
            (0, 420),
            title="Positive prompt",
            links={"clip": ("clip", "CLIP")},
            widgets={"text": FLUX_PROMPT},
            size=(COLUMN_1_WIDTH, 160),
        ),
        Node(
            "guidance",
            "FluxGuidance",
            (0, 640),
            links={"conditioning": ("positive_text", "CONDITIONING")},
            widgets={"guidance": 3.5},
            size=(COLUMN_1_WIDTH, 58),
        ),
        Node(
            "negative",
            "CLIPTextEncode",
            (0, 760),
            title="Negative prompt (unused at cfg 1.0)",
            links={"clip": ("clip", "CLIP")},
            widgets={"text": ""},
            size=(COLUMN_1_WIDTH, 120),
        ),
        Node(
            "latent",
            "EmptySD3LatentImage",
            (0, 940),
            widgets={"width": 1024, "height": 1024, "batch_size": 1},
            size=(COLUMN_1_WIDTH, 106),
        ),
    ]
    inputs = ModelInputs(
        nodes,
        model,
        positive=("guidance", "CONDITIONING"),
        negative=("negative", "CONDITIONING"),
        latent=("latent", "LATENT"),
        decoder="VAEDecode",
        decoder_links={"vae": ("vae", "VAE")},
    )
    return soda_workflow("soda_flux_dev", FLUX_DEV_DESCRIPTION, FLUX_DEV_NOTE, inputs)  # thumbnail: the graph


WORKFLOWS = (quickstart, flux_dev)
