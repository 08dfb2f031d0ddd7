"""Tiny MMDiT-style and cross-attention models: SD3 and SD3.5, AuraFlow, HunyuanDiT, PixArt-alpha and -sigma."""

from __future__ import annotations

import torch

from . import TinyFamily, randn


SD3_CONFIG = {
    "in_channels": 16,
    "patch_size": 2,
    "out_channels": 16,
    "depth": 2,  # hidden 64 * depth = 128, 2 heads; the last block's context half is pre_only
    "input_size": None,
    "adm_in_channels": 32,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 64, "out_features": 128}},
    "num_patches": 256,
    "pos_embed_max_size": 16,
    "pos_embed_scaling_factor": None,
    "x_block_self_attn_layers": [],
}


def _pooled(seed: int, batch: int) -> dict[str, torch.Tensor]:
    return {"pooled_output": randn(seed, batch, 32)}


HUNYUAN_WORDS, HUNYUAN_T5 = 8, 16  # CLIP and mT5 tokens (the model takes exactly text_len and text_len_t5)


def _hunyuan(seed: int, batch: int) -> dict[str, torch.Tensor]:
    """HunyuanDiT's mT5 conditioning and both masks, as its text encoder gives them."""
    return {
        "attention_mask": torch.ones(batch, HUNYUAN_WORDS),
        "conditioning_mt5xl": randn(seed, batch, HUNYUAN_T5, 64),
        "attention_mask_mt5xl": torch.ones(batch, HUNYUAN_T5),
    }


PIXART_LATENT = (4, 64, 4)  # PixArtMS needs (H + W) / 2 >= 33 (its base size rounds to 0 below); 32 x 2 tokens

FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily(
        "sd3",
        "SD3",
        SD3_CONFIG,
        (16, 16, 16),
        64,
        _pooled,
        detectable=True,
        modules=("attn", "attn2", "mlp"),
        kinds=("double_block",),
        weight_buffers=("pos_embed",),
    ),
    TinyFamily(
        "sd35",
        "SD3",
        {**SD3_CONFIG, "qk_norm": "rms", "x_block_self_attn_layers": [0]},  # SD3.5 medium: attn2 in the first layers
        (16, 16, 16),
        64,
        _pooled,
        detectable=True,
        modules=("attn", "attn2", "mlp"),
        kinds=("double_block",),
        weight_buffers=("pos_embed",),
    ),
    TinyFamily(
        "auraflow",
        "AuraFlow",
        {
            "in_channels": 4,
            "out_channels": 4,
            "patch_size": 2,
            "dim": 128,
            "n_layers": 2,
            "n_double_layers": 1,
            "n_heads": 2,
            "global_conddim": 128,
            "cond_seq_dim": 64,
            "max_seq": 256,
        },
        (4, 16, 16),
        64,
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "hunyuan_dit",
        "HunyuanDiT",
        {
            "image_model": "hydit",
            "depth": 4,  # block 3 takes block 0's long skip
            "hidden_size": 128,
            # narrow text widths and lengths: at ComfyUI's detected widths (mT5 2048 through a 2048 x 8192 MLP on
            # 256 tokens) the text embedders cost ~25x the tiny blocks and no plan reaches 2x; not detectable so
            "text_states_dim": 64,
            "text_states_dim_t5": 64,
            "text_len": HUNYUAN_WORDS,
            "text_len_t5": HUNYUAN_T5,
        },
        (4, 16, 16),
        64,
        _hunyuan,
        modules=("attn1", "attn2", "mlp"),
        kinds=("block",),
        words=HUNYUAN_WORDS,
    ),
    TinyFamily(
        "pixart_alpha",
        "PixArtAlpha",
        {
            "image_model": "pixart_alpha",
            "num_heads": 3,
            "patch_size": 2,
            "hidden_size": 192,  # its size embedders take hidden / 3
            "in_channels": 4,
            "depth": 2,
            "caption_channels": 64,
            "model_max_length": 120,
            "input_size": 32,
            "pe_interpolation": 0.5,
            "micro_condition": True,
        },
        PIXART_LATENT,
        64,
        modules=("attn", "cross_attn", "mlp"),
        kinds=("block",),
    ),
    TinyFamily(
        "pixart_sigma",
        "PixArtSigma",
        {
            "image_model": "pixart_sigma",
            "num_heads": 2,
            "patch_size": 2,
            "hidden_size": 128,
            "in_channels": 4,
            "depth": 2,
            "caption_channels": 64,
            "model_max_length": 300,
            "micro_condition": False,
        },
        PIXART_LATENT,
        64,
        modules=("attn", "cross_attn", "mlp"),
        kinds=("block",),
    ),
)
