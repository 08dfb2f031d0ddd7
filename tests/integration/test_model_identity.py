"""SODA Accelerate's model identity (``nodes.accelerate.model_identity``, the folder a model's profiles are kept in)
is the same for one model whatever ComfyUI last wrote into the weights it shares with its clones.

ComfyUI applies a loaded clone's LoRA into the shared weights and leaves it there until another clone loads; the
plain model read in between had another identity, so every prompt after a LoRA prompt profiled again (found by the
soak test, tests/e2e/test_soak.py).
"""

from __future__ import annotations

import pytest
import torch

from flux_helpers import REFERENCE_MODEL


pytestmark = pytest.mark.integration

TARGET = "diffusion_model.single_blocks.0.linear2.weight"  # (128, 640)


def test_identity_ignores_patches_written_into_the_shared_weights(comfy) -> None:
    from comfyui_soda.nodes.accelerate import model_identity
    from comfyui_soda.nodes.reference_model import load_reference_model

    plain = load_reference_model(REFERENCE_MODEL)
    before = model_identity(plain)
    lora = plain.clone()
    original = lora.get_model_object(TARGET).detach().clone()
    lora.add_patches({TARGET: (torch.full_like(original, 0.01),)}, strength_patch=1.0)  # a "diff" patch
    with_lora = model_identity(lora)
    lora.patch_model()  # as ComfyUI loads it for sampling: the LoRA written into the weights the clones share
    try:
        written = plain.get_model_object(TARGET)
        assert not torch.equal(written, original), "the patch was not written into the shared weights"
        assert model_identity(plain) == before, "the plain model's identity changed while a LoRA clone is loaded"
        assert model_identity(lora) == with_lora, "the LoRA clone's identity depends on whether it is loaded"
        assert with_lora != before
    finally:
        lora.unpatch_model()
    assert torch.equal(plain.get_model_object(TARGET), original)
