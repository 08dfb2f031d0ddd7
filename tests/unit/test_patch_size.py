"""Family.patch: the patch size of a diffusion model, named by an attribute path or one path per patched dim, so the
image-token count of a 5-D video latent includes its frames."""

from __future__ import annotations

import torch

from comfyui_soda.soda_core.adapters import patch_of
from comfyui_soda.soda_core.adapters.spec import patched_tokens


class _Patchifier:
    patch_size = (1, 1, 1)


class _Video(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_size = [1, 2, 2]
        self.patch_temporal, self.patch_spatial = 1, 2
        self.patchifier = _Patchifier()


def test_patch_of_reads_an_attribute_a_dotted_path_or_one_path_per_dim():
    model = _Video()
    assert patch_of(model, "patch_size") == (1, 2, 2)
    assert patch_of(model, "patchifier.patch_size") == (1, 1, 1)
    assert patch_of(model, ("patch_temporal", "patch_spatial", "patch_spatial")) == (1, 2, 2)
    assert patch_of(model, "patch_spatial") == 2
    assert patch_of(model, "missing") == 1 and patch_of(model, "patchifier.missing") == 1


def test_video_latents_count_their_frames():
    latent = (2, 16, 5, 9, 8)  # (B, C, T, H, W): ComfyUI pads H to 10
    assert patched_tokens(latent, (1, 2, 2)) == 5 * 5 * 4
    assert patched_tokens(latent, (1, 1, 1)) == 5 * 9 * 8
    assert patched_tokens(latent, 2) == 5 * 5 * 4  # an int patch is spatial: every frame holds its tokens (Mochi)
