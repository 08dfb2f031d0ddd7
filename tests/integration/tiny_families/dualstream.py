"""Tiny dual- and joint-stream models: Qwen-Image (and Edit), HunyuanVideo, Lumina 2 / Z-Image, HiDream."""

from __future__ import annotations

import torch

from . import TinyFamily, randn


QWEN_CONFIG = {
    "image_model": "qwen_image",
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 64,
    "num_attention_heads": 2,
    "joint_attention_dim": 64,
    "axes_dims_rope": [16, 24, 24],
}

# detection reads every width from the weights: 1 head of 128 (heads = hidden / 128), 3-D patch -> axes [16, 56, 56]
HUNYUAN_VIDEO_CONFIG = {
    "image_model": "hunyuan_video",
    "in_channels": 16,
    "patch_size": [1, 2, 2],
    "out_channels": 16,
    "vec_in_dim": 768,
    "axes_dim": [16, 56, 56],
    "meanflow": False,
    "context_in_dim": 64,
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 1,
    "depth": 2,
    "depth_single_blocks": 2,
    "theta": 256,
    "qkv_bias": True,
    "byt5": False,
    "guidance_embed": True,
    "use_cond_type_embedding": False,
    "vision_in_dim": None,
}


def _hunyuan_video(seed: int, batch: int) -> dict:
    return {"pooled_output": randn(seed, batch, 768), "guidance": 6.0}


HIDREAM_CONFIG = {
    "image_model": "hidream",
    "attention_head_dim": 64,
    "axes_dims_rope": [32, 16, 16],
    "caption_channels": [64, 64],  # T5, Llama widths
    "max_resolution": [128, 128],
    "in_channels": 16,
    "llama_layers": [0, 1, 2, 3],  # one Llama layer per block
    "num_attention_heads": 2,
    "num_routed_experts": 4,
    "num_activated_experts": 2,
    "num_layers": 2,
    "num_single_layers": 2,
    "out_channels": 16,
    "patch_size": 2,
    "text_emb_dim": 64,
}


def _hidream(seed: int, batch: int) -> dict:
    return {"pooled_output": randn(seed, batch, 64), "conditioning_llama3": randn(seed + 1, batch, 4, 5, 64)}


FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily(
        "qwen_image",
        "QwenImage",
        QWEN_CONFIG,
        (16, 1, 16, 16),
        64,
        # a text mask (ComfyUI 0.33 masks the last two text tokens in the joint attention; 0.3.75 ignores it)
        lambda seed, batch: {"attention_mask": torch.tensor([[1, 1, 1, 1, 0, 0]])},
        kinds=("double_block",),
    ),
    TinyFamily(
        "qwen_image_edit",
        "QwenImage",
        QWEN_CONFIG,
        (16, 1, 16, 16),
        64,
        # Qwen-Image Edit: reference latents become reference tokens after the image tokens of the image stream
        lambda seed, batch: {"reference_latents": [randn(seed, 1, 16, 1, 8, 8)]},
        kinds=("double_block",),
    ),
    TinyFamily(
        "qwen_image_edit_2511",
        "QwenImage",
        QWEN_CONFIG,
        (16, 1, 16, 16),
        64,
        # Qwen-Image Edit 2511 (ComfyUI 0.33): reference tokens modulated at timestep 0 (the block splits its batch)
        lambda seed, batch: {
            "reference_latents": [randn(seed, 1, 16, 1, 8, 8)],
            "reference_latents_method": "index_timestep_zero",
        },
        kinds=("double_block",),
    ),
    TinyFamily(
        "qwen_image_layered",
        "QwenImage",
        {**QWEN_CONFIG, "use_additional_t_cond": True, "default_ref_method": "negative_index"},
        (16, 3, 8, 8),  # Qwen-Image Layered: the image and 2 layers, all image tokens
        64,
        lambda seed, batch: {"reference_latents": [randn(seed, 1, 16, 1, 8, 8)]},
        kinds=("double_block",),
        requires="comfy_extras.nodes_qwen:EmptyQwenImageLayeredLatentImage",
    ),
    TinyFamily(
        "hunyuan_video",
        "HunyuanVideo",
        HUNYUAN_VIDEO_CONFIG,
        (16, 3, 8, 8),
        64,
        _hunyuan_video,
        detectable=True,
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "hunyuan_video_ref",
        "HunyuanVideo",
        HUNYUAN_VIDEO_CONFIG,
        (16, 3, 8, 8),
        64,
        # HunyuanImageToVideo's "custom" guidance: the start image's latent goes before the image tokens
        lambda seed, batch: {**_hunyuan_video(seed, batch), "ref_latent": randn(seed + 1, 1, 16, 1, 8, 8)},
        detectable=True,
        batches=False,  # HunyuanVideo writes its ref_latent ids in place, into a batch-expanded view (0.3.75, 0.33)
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "hunyuan_image21",
        "HunyuanImage21",
        {
            **HUNYUAN_VIDEO_CONFIG,
            "in_channels": 64,
            "out_channels": 64,
            "patch_size": [1, 1],
            "vec_in_dim": None,
            "axes_dim": [64, 64],
        },
        (64, 8, 8),
        64,
        lambda seed, batch: {"guidance": 3.5},
        detectable=True,
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "lumina2",
        "Lumina2",
        {
            "image_model": "lumina2",
            "patch_size": 2,
            "in_channels": 16,
            "dim": 128,
            "cap_feat_dim": 64,
            "n_layers": 2,
            "qk_norm": True,
            "n_heads": 2,
            "n_kv_heads": 1,
            "axes_dims": [16, 24, 24],
            "axes_lens": [300, 512, 512],
            "rope_theta": 10000.0,
            "ffn_dim_multiplier": 4.0,
            "n_refiner_layers": 1,
        },
        (16, 16, 16),
        64,
        kinds=("context_refiner", "noise_refiner", "block"),
    ),
    TinyFamily(
        "zimage",
        "ZImage",
        {
            "image_model": "lumina2",
            "patch_size": 2,
            "in_channels": 16,
            "dim": 256,  # its timestep embedding is 256 wide: narrower models do not build
            "cap_feat_dim": 64,
            "n_layers": 2,
            "qk_norm": True,
            "n_heads": 2,
            "n_kv_heads": 2,
            "axes_dims": [32, 48, 48],
            "axes_lens": [1536, 512, 512],
            "rope_theta": 256.0,
            "ffn_dim_multiplier": 8.0 / 3.0,
            "z_image_modulation": True,
            "time_scale": 1000.0,
            "pad_tokens_multiple": 32,
            "n_refiner_layers": 1,
        },
        (16, 12, 12),  # 36 image tokens, padded to 64; the caption is padded to 32
        64,
        kinds=("context_refiner", "noise_refiner", "block"),
    ),
    TinyFamily(
        "hidream", "HiDream", HIDREAM_CONFIG, (16, 16, 16), 64, _hidream, kinds=("double_block", "single_block")
    ),
    TinyFamily(
        "hidream_e1",
        "HiDream",
        HIDREAM_CONFIG,
        (16, 8, 8),  # 16 image tokens, and 16 of the condition interleaved with them
        64,
        # HiDream E1: the condition image joins the latent along its width (tokens interleaved row by row)
        lambda seed, batch: {**_hidream(seed, batch), "concat_latent_image": randn(seed + 2, 1, 16, 8, 8)},
        kinds=("double_block", "single_block"),
    ),
)
