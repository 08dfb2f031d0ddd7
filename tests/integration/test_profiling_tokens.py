"""Profiling's memory bound counts a latent's tokens as the run does (a video latent is patched per dim)."""

from __future__ import annotations

import pytest
import tiny_families as tiny
import torch
from tiny_families import dualstream


pytestmark = pytest.mark.integration


def test_the_memory_bound_counts_the_tokens_of_a_video_latent(comfy, tmp_path):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    family = next(f for f in dualstream.FAMILIES if f.name == "hunyuan_video")  # patch (1, 2, 2) on (16, 3, 8, 8)
    model = tiny.build(family)
    settings = SamplingSettings(seed=0, steps=2, cfg=1.0, sampler_name="euler", scheduler="simple")
    latent = {"samples": torch.zeros(1, *family.latent)}
    cond = tiny.conditioning(family, 1)
    with pytest.raises(ValueError, match=r"x 1 rows x 54 tokens x 128 channels"):  # 6 text + 3 * 4 * 4 image tokens
        profile_model(model, cond, cond, latent, settings, ProfileConfig(memory_limit_mb=1e-3))
