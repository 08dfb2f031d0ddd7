"""Record helpers of ``soda_core/adapters/spec.py``."""

from __future__ import annotations

import pytest

from comfyui_soda.soda_core.adapters.spec import patched_tokens


@pytest.mark.parametrize(
    ("latent", "patch", "tokens"),
    [
        ((1, 16, 16, 16), 2, 64),  # image, int patch (Flux)
        ((1, 16, 15, 17), 2, 72),  # padded up to the patch size
        ((1, 16, 3, 16, 16), (1, 2, 2), 192),  # video, one patch size per dim (Wan)
        ((1, 12, 3, 16, 16), 2, 192),  # video, spatial int patch: every frame is patched (Mochi)
        ((1, 64, 256), 1, 256),  # a token sequence (Hunyuan3D)
        ((1, 8, 16, 100), (16, 1), 100),  # audio rows patched whole (ACE-Step)
    ],
)
def test_patched_tokens(latent, patch, tokens):
    assert patched_tokens(latent, patch) == tokens
