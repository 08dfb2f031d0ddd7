"""Tiny video DiTs: Wan 2.1 T2V / I2V, Wan 2.2 TI2V 5B (per-frame modulation) and an I2V A14B expert (the 14B
high- and low-noise experts are each such a model), Wan VACE (a second block list), Wan S2V
(reference tokens after the image tokens), LTX-Video and Cosmos Predict2 (5-D block streams). Latents are 5-D
(B, C, T, H, W) with two frames, so image-token counts must include the frames."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from . import TinyFamily, randn


FRAMES, SIDE = 2, 16  # 2 x 8 x 8 = 128 image tokens at patch (1, 2, 2): enough for the blocks to dominate
MODULES = ("self_attn", "cross_attn", "mlp")

WAN_CONFIG: dict[str, Any] = {
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 128,  # ComfyUI's detection gives 1 head of 128
    "out_dim": 16,
    "num_heads": 1,
    "ffn_dim": 256,
    "num_layers": 2,
    "patch_size": [1, 2, 2],
    "freq_dim": 256,
    "window_size": [-1, -1],
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "in_dim": 16,
}


def _latent(channels: int, frames: int = FRAMES) -> tuple[int, ...]:
    return (channels, frames, SIDE, SIDE)


def _wan_i2v(seed: int, batch: int) -> dict[str, Any]:
    """A start image (concat latent) and 2 CLIP-vision tokens, which the I2V cross-attention attends separately."""
    clip = SimpleNamespace(penultimate_hidden_states=randn(seed, batch, 2, 1280))
    return {"concat_latent_image": randn(seed + 1, batch, 16, *_latent(16)[1:]), "clip_vision_output": clip}


def _wan22_ti2v(seed: int, batch: int) -> dict[str, Any]:
    """A denoise mask that holds the first frame (Wan 2.2 TI2V): one timestep per frame, so the blocks modulate per
    token."""
    mask = torch.ones(batch, 1, FRAMES, SIDE, SIDE)
    mask[:, :, 0] = 0.0
    return {"denoise_mask": mask}


def _wan22_i2v_expert(seed: int, batch: int) -> dict[str, Any]:
    """A start image as concat latent, no CLIP: a Wan 2.2 I2V A14B expert (WAN21_T2V with 36 input channels)."""
    return {"concat_latent_image": randn(seed, batch, 16, *_latent(16)[1:])}


def _wan_vace(seed: int, batch: int) -> dict[str, Any]:
    """One control video (its frames and the 64-channel mask VACE packs beside them)."""
    frames = _latent(16)[1:]
    return {"vace_frames": [randn(seed, batch, 32, *frames)], "vace_mask": [torch.ones(batch, 64, *frames)]}


def _wan_s2v(seed: int, batch: int) -> dict[str, Any]:
    """A reference image latent (its tokens follow the image tokens, with timestep 0) and audio features (injected
    between blocks)."""
    return {
        "reference_latents": [randn(seed, batch, 16, 1, SIDE, SIDE)],
        "audio_embed": randn(seed + 1, batch, 25, 1024, 4 * FRAMES),
    }


FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily(
        "wan21_t2v", "WAN21_T2V", WAN_CONFIG, _latent(16), 4096, detectable=True, modules=MODULES, kinds=("block",)
    ),
    TinyFamily(
        "wan21_i2v",
        "WAN21_I2V",
        {**WAN_CONFIG, "model_type": "i2v", "in_dim": 36},
        _latent(16),
        4096,
        _wan_i2v,
        detectable=True,
        modules=MODULES,
        kinds=("block",),
    ),
    TinyFamily(
        "wan22_5b",
        "WAN22_T2V",
        {**WAN_CONFIG, "out_dim": 48, "in_dim": 48},
        _latent(48),
        4096,
        _wan22_ti2v,
        detectable=True,
        modules=MODULES,
        kinds=("block",),
    ),
    TinyFamily(
        "wan22_i2v_a14b",
        "WAN21_T2V",
        {**WAN_CONFIG, "in_dim": 36},
        _latent(16),
        4096,
        _wan22_i2v_expert,
        detectable=True,
        modules=MODULES,
        kinds=("block",),
    ),
    TinyFamily(
        "wan21_vace",
        "WAN21_Vace",
        {**WAN_CONFIG, "model_type": "vace", "vace_layers": 1, "vace_in_dim": 96},
        _latent(16),
        4096,
        _wan_vace,
        detectable=True,
        modules=MODULES,
        kinds=("block", "vace_block"),
    ),
    TinyFamily(
        "wan22_s2v",
        "WAN22_S2V",
        {**WAN_CONFIG, "model_type": "s2v"},
        _latent(16),
        4096,
        _wan_s2v,
        detectable=True,
        modules=MODULES,
        kinds=("block",),
        block_granularity_on=frozenset({"0.3.75"}),  # its forward passes no transformer_options to the blocks
    ),
    TinyFamily(
        "ltxv",
        "LTXV",
        {"image_model": "ltxv", "num_layers": 2, "attention_head_dim": 4, "cross_attention_dim": 128},
        (128, FRAMES, 4, 4),
        4096,
        lambda seed, batch: {"attention_mask": torch.ones(batch, 6, dtype=torch.long)},
        detectable=True,
        modules=MODULES,
        kinds=("block",),
    ),
    TinyFamily(
        "cosmos_predict2",
        "CosmosT2IPredict2",
        {
            "image_model": "cosmos_predict2",
            "max_img_h": 240,
            "max_img_w": 240,
            "max_frames": 128,
            "in_channels": 16,
            "out_channels": 16,
            "patch_spatial": 2,
            "patch_temporal": 1,
            "model_channels": 128,
            "concat_padding_mask": True,
            "crossattn_emb_channels": 1024,
            "pos_emb_cls": "rope3d",
            "pos_emb_learnable": True,
            "pos_emb_interpolation": "crop",
            "min_fps": 1,
            "max_fps": 30,
            "use_adaln_lora": True,
            "adaln_lora_dim": 64,
            "num_blocks": 2,
            "num_heads": 2,
            "extra_per_block_abs_pos_emb": False,
            "rope_h_extrapolation_ratio": 4.0,
            "rope_w_extrapolation_ratio": 4.0,
            "rope_t_extrapolation_ratio": 1.0,
            "extra_h_extrapolation_ratio": 1.0,
            "extra_w_extrapolation_ratio": 1.0,
            "extra_t_extrapolation_ratio": 1.0,
            "rope_enable_fps_modulation": False,
        },
        _latent(16),
        1024,
        modules=MODULES,
        kinds=("block",),
    ),
)

# Models SODA leaves alone (records without blocks); not in FAMILIES, whose tests expect served blocks.
UNSERVED: tuple[TinyFamily, ...] = (
    TinyFamily(
        "cosmos1",
        "CosmosT2V",
        {
            "image_model": "cosmos",
            "max_img_h": 240,
            "max_img_w": 240,
            "max_frames": 128,
            "in_channels": 16,
            "out_channels": 16,
            "patch_spatial": 2,
            "patch_temporal": 1,
            "model_channels": 128,
            "block_config": "FA-CA-MLP",
            "concat_padding_mask": True,
            "pos_emb_cls": "rope3d",
            "pos_emb_learnable": False,
            "pos_emb_interpolation": "crop",
            "block_x_format": "THWBD",
            "affline_emb_norm": True,
            "use_adaln_lora": True,
            "adaln_lora_dim": 64,
            "num_blocks": 2,
            "num_heads": 2,
            "extra_per_block_abs_pos_emb": True,
            "rope_h_extrapolation_ratio": 1.0,
            "rope_w_extrapolation_ratio": 1.0,
            "rope_t_extrapolation_ratio": 2.0,
            "extra_per_block_abs_pos_emb_type": "learnable",
        },
        (16, FRAMES, 8, 8),
        1024,
    ),
    TinyFamily("wan_causal_ar", "WAN21_CausalAR_T2V", {**WAN_CONFIG, "causal_ar": True}, (16, FRAMES, 8, 8), 4096),
)
