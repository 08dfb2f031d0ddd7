"""Video families on the one-node path: Wan 2.2 14B text-to-video (two experts) and HunyuanVideo text-to-video.

Group 1 follows ComfyUI's own templates (``comfyui_workflow_templates``: video_wan2_2_14B_t2v without its Lightning
LoRA switch, hunyuan_video_text_to_video): loaders and model files, prompts, ModelSamplingSD3 shift, latent size and length, sampler settings,
frame rate. Wan 2.2 14B runs a high-noise expert over the first steps and a low-noise
expert over the rest, each with its own KSamplerAdvanced; each gets its own SODA Accelerate, so each keeps its own
profile for its own step range.
"""

from __future__ import annotations

from .accelerate_graph import (
    COLUMN_1_WIDTH,
    Decode,
    Expert,
    Family,
    ProfilingShape,
    Sampling,
    Sigmas,
    accelerate_workflow,
    how_it_works,
)
from .families import HF, PROMPT_SIZE, X, model_file, vae
from .graph import Node, Workflow


WAN = f"{HF}/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files"
WAN_MODELS = {
    "high": model_file(
        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        f"{WAN}/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        "diffusion_models",
    ),
    "low": model_file(
        "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        f"{WAN}/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        "diffusion_models",
    ),
    "text": model_file(
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        f"{HF}/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/"
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "text_encoders",
    ),
    "vae": model_file("wan_2.1_vae.safetensors", f"{WAN}/vae/wan_2.1_vae.safetensors", "vae"),
}
HUNYUAN = f"{HF}/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
HUNYUAN_MODELS = {
    "unet": model_file(
        "hunyuan_video_t2v_720p_bf16.safetensors",
        f"{HUNYUAN}/diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors?download=true",
        "diffusion_models",
    ),
    "clip_l": model_file(
        "clip_l.safetensors",
        f"{HF}/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors?download=true",
        "text_encoders",
    ),
    "llava": model_file(
        "llava_llama3_fp8_scaled.safetensors",
        f"{HUNYUAN}/text_encoders/llava_llama3_fp8_scaled.safetensors?download=true",
        "text_encoders",
    ),
    "vae": model_file(
        "hunyuan_video_vae_bf16.safetensors", f"{HUNYUAN}/vae/hunyuan_video_vae_bf16.safetensors?download=true", "vae"
    ),
}
VIDEO_PROMPT = (
    "a red fox trotting through fresh snow at the edge of a pine forest at sunrise, soft golden light, the camera "
    "slowly tracking beside it"
)
# Wan's standard negative prompt (ComfyUI's Wan templates use it).
WAN_NEGATIVE = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走，裸露，NSFW"
)
WAN_STEPS, WAN_SPLIT = 20, 10  # the high-noise expert samples steps 0-10, the low-noise expert steps 10-20

WAN_NOTE = f"""\
What this graph does
1. Model and prompt: ComfyUI's own Wan 2.2 14B text-to-video set-up: the high-noise and the low-noise expert, each \
with ModelSamplingSD3 shift 5, umt5 text encoder, 640x640, 81 frames (5 s at 16 fps).
2. One SODA Accelerate per expert.
3. Two KSamplerAdvanced, 20 steps euler/simple, cfg 3.5: the high-noise expert samples steps 0-10 and hands its \
noisy latent to the low-noise expert, which samples steps 10-20.
4. Decode, make the video, save it.

Each expert gets its own profile for its own step range: on the first run both profile (full compute), from the \
second run on both are accelerated. Changing the split step or the step count re-plans both from their profiles.

{how_it_works()}"""


def wan22_t2v_14b() -> Workflow:
    clip = ("clip", "CLIP")
    nodes: list[Node] = []
    for expert in ("high", "low"):
        nodes.append(
            Node(
                f"model_{expert}",
                "UNETLoader",
                (X, None),
                title=f"Load Diffusion Model ({expert} noise)",
                widgets={"unet_name": WAN_MODELS[expert]["name"], "weight_dtype": "default"},
                size=(COLUMN_1_WIDTH, None),
                models=[WAN_MODELS[expert]],
            )
        )
        nodes.append(
            Node(
                f"shift_{expert}",
                "ModelSamplingSD3",
                (X, None),
                title=f"ModelSamplingSD3 ({expert} noise)",
                links={"model": (f"model_{expert}", "MODEL")},
                widgets={"shift": 5.0},
            )
        )
    nodes += [
        Node(
            "clip",
            "CLIPLoader",
            (X, None),
            widgets={"clip_name": WAN_MODELS["text"]["name"], "type": "wan"},
            size=(COLUMN_1_WIDTH, None),
            models=[WAN_MODELS["text"]],
        ),
        vae(WAN_MODELS["vae"]),
        Node(
            "positive",
            "CLIPTextEncode",
            (X, None),
            "Positive prompt",
            {"text": VIDEO_PROMPT},
            {"clip": clip},
            PROMPT_SIZE,
        ),
        Node(
            "negative",
            "CLIPTextEncode",
            (X, None),
            "Negative prompt",
            {"text": WAN_NEGATIVE},
            {"clip": clip},
            PROMPT_SIZE,
        ),
        Node(
            "latent",
            "EmptyHunyuanLatentVideo",
            (X, None),
            title="Empty video latent",  # the editor would title it by type, the API file by display name
            widgets={"width": 640, "height": 640, "length": 81, "batch_size": 1},
        ),
    ]
    family = Family(
        nodes,
        None,
        positive=("positive", "CONDITIONING"),
        negative=("negative", "CONDITIONING"),
        latent=("latent", "LATENT"),
        decode=Decode("VAEDecode", {"vae": ("vae", "VAE")}),
        sampling=Sampling(steps=WAN_STEPS, cfg=3.5, sampler_name="euler", scheduler="simple"),
        video_fps=16.0,
        # 40 blocks of self-attention, cross-attention and MLP; 21 x 40 x 40 video tokens; cond and uncond rows
        profiling=ProfilingShape(layers=40, modules=3, rows=2, tokens=21 * 40 * 40, channels=13824, steps=WAN_SPLIT),
        experts=(
            Expert("high noise", ("shift_high", "MODEL"), WAN_SPLIT),
            Expert("low noise", ("shift_low", "MODEL"), 10000),
        ),
    )
    description = "Wan 2.2 14B text to video: both experts behind SODA Accelerate, each profiled for its own steps."
    return accelerate_workflow("soda_wan22_t2v_14b", description, WAN_NOTE, family)


HUNYUAN_STEPS = 20
HUNYUAN_NOTE = f"""\
What this graph does
1. Model and prompt: ComfyUI's own HunyuanVideo text-to-video set-up: ModelSamplingSD3 shift 7, clip_l and \
llava_llama3 text encoders, FluxGuidance 6, 848x480, 73 frames (3 s at 24 fps).
2. SODA Accelerate, between the model and the sampler: the only SODA node.
3. SamplerCustomAdvanced: BasicScheduler simple, {HUNYUAN_STEPS} steps, euler, BasicGuider (no negative prompt).
4. Tiled decode, make the video, save it.

{how_it_works()}"""


def hunyuan_video() -> Workflow:
    clip = ("clip", "CLIP")
    nodes = [
        Node(
            "model",
            "UNETLoader",
            (X, None),
            title="Load Diffusion Model (HunyuanVideo)",
            widgets={"unet_name": HUNYUAN_MODELS["unet"]["name"], "weight_dtype": "default"},
            size=(COLUMN_1_WIDTH, None),
            models=[HUNYUAN_MODELS["unet"]],
        ),
        Node("shift", "ModelSamplingSD3", (X, None), links={"model": ("model", "MODEL")}, widgets={"shift": 7.0}),
        Node(
            "clip",
            "DualCLIPLoader",
            (X, None),
            widgets={
                "clip_name1": HUNYUAN_MODELS["clip_l"]["name"],
                "clip_name2": HUNYUAN_MODELS["llava"]["name"],
                "type": "hunyuan_video",
            },
            size=(COLUMN_1_WIDTH, None),
            models=[HUNYUAN_MODELS["clip_l"], HUNYUAN_MODELS["llava"]],
        ),
        vae(HUNYUAN_MODELS["vae"]),
        Node(
            "positive",
            "CLIPTextEncode",
            (X, None),
            "Positive prompt",
            {"text": VIDEO_PROMPT},
            {"clip": clip},
            PROMPT_SIZE,
        ),
        Node(
            "guidance",
            "FluxGuidance",
            (X, None),
            links={"conditioning": ("positive", "CONDITIONING")},
            widgets={"guidance": 6.0},
        ),
        Node(
            "latent",
            "EmptyHunyuanLatentVideo",
            (X, None),
            title="Empty video latent",
            widgets={"width": 848, "height": 480, "length": 73, "batch_size": 1},
        ),
    ]
    family = Family(
        nodes,
        ("shift", "MODEL"),
        positive=("guidance", "CONDITIONING"),
        negative=None,
        latent=("latent", "LATENT"),
        decode=Decode(
            "VAEDecodeTiled",
            {"vae": ("vae", "VAE")},
            {"tile_size": 256, "overlap": 64, "temporal_size": 64, "temporal_overlap": 8},
        ),
        sampling=Sampling(steps=HUNYUAN_STEPS, sampler_name="euler"),
        sigmas=Sigmas("BasicScheduler", {"scheduler": "simple", "steps": HUNYUAN_STEPS, "denoise": 1.0}, True),
        video_fps=24.0,
        # 20 double- and 40 single-stream blocks; 19 x 30 x 53 video tokens and the prompt's; one row (no CFG);
        # widest linear: the single blocks' fused linear1
        profiling=ProfilingShape(
            layers=60, modules=2, rows=1, tokens=19 * 30 * 53 + 256, channels=21504, steps=HUNYUAN_STEPS
        ),
    )
    description = "HunyuanVideo text to video, 848x480, 73 frames, with SODA Accelerate: 2x less transformer work."
    return accelerate_workflow("soda_hunyuan_video", description, HUNYUAN_NOTE, family)
