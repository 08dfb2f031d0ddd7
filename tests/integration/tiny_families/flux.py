"""Tiny Flux-architecture models: Flux.1, Flux.2, Chroma."""

from __future__ import annotations

import torch

from . import TinyFamily, randn


FLUX_CONFIG = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": 32,
    "context_in_dim": 64,
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 2,
    "depth_single_blocks": 2,
    "axes_dim": [16, 24, 24],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": True,
}

FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily(
        "flux",
        "Flux",
        FLUX_CONFIG,
        (16, 16, 16),
        64,
        lambda seed, batch: {"pooled_output": randn(seed, batch, 32), "guidance": torch.tensor([3.5])},
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "flux2",
        "Flux2",
        {
            "image_model": "flux2",
            "in_channels": 128,
            "out_channels": 128,
            "vec_in_dim": None,
            "context_in_dim": 64,
            "hidden_size": 128,
            "mlp_ratio": 3.0,
            "num_heads": 2,
            "depth": 2,
            "depth_single_blocks": 2,
            "axes_dim": [16, 16, 16, 16],
            "theta": 2000,
            "patch_size": 1,
            "qkv_bias": False,
            "guidance_embed": True,
            "global_modulation": True,
            "mlp_silu_act": True,
            "ops_bias": False,
            "default_ref_method": "index",
            "ref_index_scale": 10.0,
        },
        (128, 8, 8),
        64,
        lambda seed, batch: {"pooled_output": None, "guidance": torch.tensor([3.5])},
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "chroma",
        "Chroma",
        {
            "image_model": "chroma",
            "in_channels": 64,
            "out_channels": 64,
            "context_in_dim": 64,
            "hidden_size": 128,
            "mlp_ratio": 4.0,
            "num_heads": 2,
            "depth": 2,
            "depth_single_blocks": 2,
            "axes_dim": [16, 24, 24],
            "theta": 10000,
            "patch_size": 2,
            "qkv_bias": True,
            "in_dim": 64,
            "out_dim": 128,
            "hidden_dim": 64,
            "n_layers": 1,
        },
        (16, 32, 32),  # its guidance approximator runs every step: enough image tokens for the blocks to dominate
        64,
        lambda seed, batch: {"pooled_output": None},
        kinds=("double_block", "single_block"),
    ),
)
