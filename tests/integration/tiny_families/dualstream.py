"""Tiny dual- and joint-stream models: Qwen-Image (and Edit), HunyuanVideo, Lumina 2 / Z-Image, HiDream."""

from __future__ import annotations

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

FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily("qwen_image", "QwenImage", QWEN_CONFIG, (16, 1, 16, 16), 64, kinds=("double_block",)),
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
)
