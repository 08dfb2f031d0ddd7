"""Stream roles of a block call and the token layouts they give (``adapters/step.py``): reference-image tokens are
never pruned, wherever a family puts them."""

from __future__ import annotations

import torch

from comfyui_soda.soda_core.adapters.spec import BlockSpec, Role
from comfyui_soda.soda_core.adapters.step import BlockCall, joint_layout, stream_layouts
from comfyui_soda.soda_core.tokens import recompute_positions


TEXT, IMAGE, REFERENCE = 3, 8, 4


def _forward(joint: torch.Tensor, image: torch.Tensor, reference: torch.Tensor, text: torch.Tensor) -> None:
    """A block taking one stream of each kind (its arguments are read by name)."""


def _layouts() -> dict:
    spec = BlockSpec(
        kind="block",
        blocks="blocks",
        streams={
            "joint": Role.JOINT_REFERENCE_FIRST,
            "image": Role.IMAGE,
            "reference": Role.REFERENCE,
            "text": Role.TEXT,
        },
        returns=("joint",),
    )
    args = [torch.zeros(1, n, 2) for n in (TEXT + REFERENCE + IMAGE, IMAGE, REFERENCE, TEXT)]
    return stream_layouts(BlockCall(spec, _forward, tuple(args), {}), image=IMAGE, text=TEXT)


def _pruned(layout) -> set[int]:
    """Positions a half-ratio recompute may leave out."""
    scores = torch.arange(layout.total, dtype=torch.float32)[None]  # (1, N)
    kept = set(recompute_positions(scores, layout, 0.5)[0].tolist())
    return set(range(layout.total)) - kept


def test_text_reference_image_order_prunes_image_tokens_only():
    joint = _layouts()["joint"]
    assert (joint.text, joint.reference, joint.image) == (TEXT, REFERENCE, IMAGE)
    assert joint.image_slice == slice(TEXT + REFERENCE, TEXT + REFERENCE + IMAGE)
    assert _pruned(joint) and _pruned(joint) <= set(range(TEXT + REFERENCE, TEXT + REFERENCE + IMAGE))


def test_a_reference_stream_is_never_pruned_and_is_not_text():
    reference = _layouts()["reference"]
    assert (reference.text, reference.image, reference.reference) == (0, 0, REFERENCE)
    assert not _pruned(reference)


def test_streams_joined_reference_first_keep_the_image_slice():
    layouts = _layouts()
    joined = joint_layout([layouts["text"], layouts["reference"], layouts["image"]])
    assert joined.image_slice == slice(TEXT + REFERENCE, TEXT + REFERENCE + IMAGE)
    assert joint_layout([layouts["text"], layouts["image"]]).image_slice == slice(TEXT, TEXT + IMAGE)
