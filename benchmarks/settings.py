"""The benchmark settings: which model, conditioning and latent, which step counts, and what is swept.

* ``flux160m``: a Flux-architecture DiT of about 163M parameters (hidden 768, 12 heads, 4 double + 8 single blocks)
  with seeded random weights, 1024 image tokens and 16 random text tokens. It measures time and FLOPs at a size
  where the matrix products dominate; its fidelity numbers are numerical drift of a random-weight model, not image
  quality.
* ``reference``: the pack's embedded reference model (``models/soda_reference_flux.safetensors``) with the
  stand-in text encoder, at 20 and 50 steps.
* ``quick``: a tiny Flux for the test suite (< 60 s), which keeps the harness itself working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .env import ROOT


Conditioning = list[list[Any]]
Built = tuple[Any, Conditioning, Conditioning]  # (ModelPatcher, positive, negative)

FLUX_COMMON: dict[str, Any] = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "mlp_ratio": 4.0,
    "axes_dim": [16, 24, 24],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": True,
}
FLUX160M = {
    **FLUX_COMMON,
    "hidden_size": 768,
    "num_heads": 12,
    "depth": 4,
    "depth_single_blocks": 8,
    "context_in_dim": 4096,
    "vec_in_dim": 768,
}
QUICK_FLUX = {
    **FLUX_COMMON,
    "hidden_size": 128,
    "num_heads": 2,
    "depth": 2,
    "depth_single_blocks": 2,
    "context_in_dim": 64,
    "vec_in_dim": 32,
}
REFERENCE_MODEL = ROOT / "models" / "soda_reference_flux.safetensors"
REFERENCE_PROMPT = "a lighthouse on a rocky coast at sunset, oil painting"


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    build: Callable[[], Built]
    steps: tuple[int, ...]
    latent_shape: tuple[int, int, int, int]
    targets: tuple[float, ...]  # SODA (cache + prune) targets
    cache_only_targets: tuple[float, ...]  # SODA with pruning=False
    uniform_intervals: tuple[int, ...]  # Schedule.uniform
    ablation_target: float  # prune_attention / token score / joint_cost ablations
    easycache_thresholds: tuple[float, ...]
    lazycache_thresholds: tuple[float, ...]
    repeats: int
    random_weights: bool
    sampler: str = "euler"
    scheduler: str = "simple"
    cfg: float = 1.0
    seed: int = 0
    max_distance: int = 8  # profiled reuse distances (intervals of up to 9 steps)
    cache_start_percent: float = 0.15  # EasyCache / LazyCache node defaults
    cache_end_percent: float = 0.95
    facts: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, repeats: int | None = None, targets: tuple[float, ...] | None = None) -> Setting:
        setting = self
        if repeats is not None:
            setting = replace(setting, repeats=repeats)
        if targets is not None:
            setting = replace(
                setting,
                targets=targets,
                cache_only_targets=tuple(t for t in setting.cache_only_targets if t in targets) or targets[:1],
            )
        return setting


def random_conditioning(context_dim: int, pooled_dim: int, tokens: int, seed: int) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, tokens, context_dim, generator=g)
    pooled = torch.randn(1, pooled_dim, generator=g)
    return [[cond, {"pooled_output": pooled}]]


def _build_random_flux(config: dict[str, Any], text_tokens: int) -> Callable[[], Built]:
    def build() -> Built:
        from comfyui_soda.nodes.reference_model import build_flux_patcher

        model = build_flux_patcher(config, seed=0)
        context, pooled = config["context_in_dim"], config["vec_in_dim"]
        positive = random_conditioning(context, pooled, text_tokens, seed=1)
        negative = random_conditioning(context, pooled, text_tokens, seed=2)
        return model, positive, negative

    return build


def _build_reference() -> Built:
    from comfyui_soda.nodes.reference_model import encode_text, load_reference_model

    model = load_reference_model(REFERENCE_MODEL)
    config = model.model.model_config.unet_config
    conditionings = []
    for text in (REFERENCE_PROMPT, ""):
        cond, pooled = encode_text(text, config["context_in_dim"], config["vec_in_dim"])
        conditionings.append([[cond, {"pooled_output": pooled}]])
    return model, conditionings[0], conditionings[1]


def _params(config: dict[str, Any]) -> dict[str, Any]:
    keys = ("hidden_size", "num_heads", "depth", "depth_single_blocks", "context_in_dim", "vec_in_dim")
    return {k: config[k] for k in keys}


SETTINGS: dict[str, Setting] = {
    "flux160m": Setting(
        name="flux160m",
        description="Flux-architecture DiT, hidden 768, 12 heads, 4 double + 8 single blocks (~163M parameters), "
        "seeded random weights; latent 1x16x64x64 (1024 image tokens), 16 random text tokens; euler/simple, cfg 1.0",
        build=_build_random_flux(FLUX160M, text_tokens=16),
        steps=(20,),
        latent_shape=(1, 16, 64, 64),
        targets=(1.5, 2.0, 2.5, 3.0, 4.0),
        cache_only_targets=(2.0, 3.0),
        uniform_intervals=(2, 3, 4),
        ablation_target=2.0,
        # chosen from a verbose probe of this model: EasyCache's per-step change-rate estimate is ~0.55-0.8,
        # LazyCache's ~0.2-0.45, so these thresholds skip about 1, 2 and 3 steps out of 2, 3 and 4
        easycache_thresholds=(0.65, 1.3, 2.0),
        lazycache_thresholds=(0.45, 0.9, 1.3),
        repeats=3,
        random_weights=True,
        facts={"unet_config": _params(FLUX160M), "text_tokens": 16},
    ),
    "reference": Setting(
        name="reference",
        description="The embedded reference model (models/soda_reference_flux.safetensors: Flux-architecture, hidden "
        "256, 4 heads, 2 double + 4 single blocks, seeded random weights), stand-in text encoder, latent 1x16x64x64 "
        "(1024 image tokens); euler/simple, cfg 1.0",
        build=_build_reference,
        steps=(20, 50),
        latent_shape=(1, 16, 64, 64),
        targets=(1.5, 2.0, 2.5, 3.0, 4.0),
        cache_only_targets=(1.5, 2.0, 2.5, 3.0, 4.0),
        uniform_intervals=(2, 3, 4),
        ablation_target=2.0,
        easycache_thresholds=(0.5, 0.75, 1.0, 1.5),  # skip 3, 7, 8, 10 of 20 steps
        lazycache_thresholds=(0.2, 0.3, 0.5, 1.0),  # skip 1, 7, 9, 11 of 20 steps
        repeats=3,
        random_weights=True,
        facts={"prompt": REFERENCE_PROMPT, "negative": ""},
    ),
    "quick": Setting(
        name="quick",
        description="Tiny Flux (hidden 128, 2 heads, 2 double + 2 single blocks), seeded random weights, latent "
        "1x16x16x16 (64 image tokens), 8 random text tokens; euler/simple, cfg 1.0. Harness check only.",
        build=_build_random_flux(QUICK_FLUX, text_tokens=8),
        steps=(6,),
        latent_shape=(1, 16, 16, 16),
        targets=(1.5, 2.0),
        cache_only_targets=(2.0,),
        uniform_intervals=(2, 3),
        ablation_target=2.0,
        easycache_thresholds=(0.5,),
        lazycache_thresholds=(0.5,),
        repeats=1,
        random_weights=True,
        max_distance=4,
        cache_start_percent=0.0,
        facts={"unet_config": _params(QUICK_FLUX), "text_tokens": 8},
    ),
}
