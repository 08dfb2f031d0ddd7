"""Tiny Flux models built from ComfyUI's own classes, and sampling through ``comfy.sample.sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


REFERENCE_MODEL = Path(__file__).resolve().parents[2] / "models" / "soda_reference_digits.safetensors"


TINY_FLUX = {
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


def tiny_flux(seed: int = 0, **overrides: Any) -> Any:
    from comfyui_soda.nodes.reference_model import build_flux_patcher

    return build_flux_patcher({**TINY_FLUX, **overrides}, seed)


def conditioning(patcher: Any, seed: int, words: int = 6) -> list[list[Any]]:
    config = patcher.model.model_config.unet_config
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, words, config["context_in_dim"], generator=g)
    pooled = torch.randn(1, config["vec_in_dim"], generator=g)
    return [[cond, {"pooled_output": pooled}]]


def sample(
    patcher: Any,
    steps: int = 6,
    cfg: float = 1.0,
    seed: int = 0,
    size: int = 16,
    batch: int = 1,
    sampler: str = "euler",
    scheduler: str = "simple",
    denoise: float = 1.0,
    latent: torch.Tensor | None = None,
    negative_words: int = 3,
) -> torch.Tensor:
    import comfy.sample

    if latent is None:
        latent = torch.zeros(batch, 16, size, size)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(
        patcher,
        noise,
        steps,
        cfg,
        sampler,
        scheduler,
        conditioning(patcher, 1),
        conditioning(patcher, 2, words=negative_words),
        latent,
        denoise=denoise,
        seed=seed,
        disable_pbar=True,
    )


def profile_tiny(patcher: Any, steps: int = 6, cfg: float = 1.0, **config: Any) -> Any:
    """Profile Sensitivity on a (1, 16, 16, 16) latent, euler/simple, seed 0, max distance 4 unless ``config`` says
    otherwise: (profile, full-compute latent)."""
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    latent = {"samples": torch.zeros(1, 16, 16, 16)}
    settings = SamplingSettings(seed=0, steps=steps, cfg=cfg, sampler_name="euler", scheduler="simple")
    return profile_model(
        patcher,
        conditioning(patcher, 1),
        conditioning(patcher, 2, words=3),
        latent,
        settings,
        ProfileConfig(**{"max_distance": 4, **config}),
    )
