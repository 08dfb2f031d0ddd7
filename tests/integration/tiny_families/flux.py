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

FLUX2_CONFIG = {
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
}


def _flux_extras(seed: int, batch: int) -> dict[str, object]:
    return {"pooled_output": randn(seed, batch, 32), "guidance": torch.tensor([3.5])}


def _kontext_extras(seed: int, batch: int) -> dict[str, object]:
    """Flux Kontext: a reference image's latent, whose 16 tokens follow the image tokens and are never pruned."""
    return {**_flux_extras(seed, batch), "reference_latents": [randn(seed + 1, 1, 16, 8, 8)]}


def _flux2_edit_extras(seed: int, batch: int) -> dict[str, object]:
    """Flux.2 editing with a reference at timestep zero: ComfyUI 0.33 modulates its tokens differently from the
    image tokens (per-token modulation inside the blocks)."""
    return {
        "pooled_output": None,
        "guidance": torch.tensor([3.5]),
        "reference_latents": [randn(seed + 1, 1, 128, 4, 4)],
        "reference_latents_method": "index_timestep_zero",
    }


FAMILIES: tuple[TinyFamily, ...] = (
    TinyFamily(
        "flux",
        "Flux",
        FLUX_CONFIG,
        (16, 16, 16),
        64,
        _flux_extras,
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "flux_kontext", "Flux", FLUX_CONFIG, (16, 16, 16), 64, _kontext_extras, kinds=("double_block", "single_block")
    ),
    TinyFamily(
        "flux2",
        "Flux2",
        FLUX2_CONFIG,
        (128, 8, 8),
        64,
        lambda seed, batch: {"pooled_output": None, "guidance": torch.tensor([3.5])},
        kinds=("double_block", "single_block"),
    ),
    TinyFamily(
        "flux2_edit",
        "Flux2",
        FLUX2_CONFIG,
        (128, 8, 8),
        64,
        _flux2_edit_extras,
        kinds=("double_block", "single_block"),
        # ComfyUI 0.33 itself raises on a batch of 2 with CFG here (index_timestep_zero's modulation: 8 vs 4 rows)
        batches=False,
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
