"""Family records on their own: variants chosen by the model's attributes, where reference tokens sit in a stream's
layout, and how many image tokens a latent patches into."""

from __future__ import annotations

import torch

from comfyui_soda.soda_core.adapters.spec import BlockSpec, Family, References, Role, Variant, patched_tokens
from comfyui_soda.soda_core.adapters.step import BlockCall, joint_layout, stream_layouts
from comfyui_soda.soda_core.tokens import TokenLayout, recompute_positions


def _family(name: str, role: Role, variants: tuple[Variant, ...] = ()) -> Family:
    spec = BlockSpec(kind="single_block", blocks="single_blocks", streams={"x": role}, returns=("x",))
    return Family(name, ("some.Model",), (spec,), variants=variants)


class _Block(torch.nn.Module):
    def __init__(self, flipped: bool | None) -> None:
        super().__init__()
        if flipped is not None:
            self.flipped_img_txt = flipped


class _Model(torch.nn.Module):
    def __init__(self, flipped: bool | None, blocks: int = 1) -> None:
        super().__init__()
        self.double_blocks = torch.nn.ModuleList(_Block(flipped) for _ in range(blocks))


def test_a_variant_is_chosen_where_its_attribute_holds():
    image_first = _family("x", Role.JOINT_IMAGE_FIRST)
    family = _family("x", Role.JOINT, (Variant("double_blocks.0.flipped_img_txt", image_first),))
    assert family.resolved(_Model(True)) is image_first
    assert family.resolved(_Model(False)) is family  # attribute false
    assert family.resolved(_Model(None)) is family  # attribute absent (another ComfyUI version)
    assert family.resolved(_Model(True, blocks=0)) is family  # path broken on the way
    assert _family("x", Role.JOINT).resolved(_Model(True)).blocks[0].streams == {"x": Role.JOINT}


def _layouts(references: References, image: int, **streams: tuple[Role, int]):
    """stream_layouts of a call whose streams (name -> (role, tokens)) hold 4 channels, ``image`` image tokens."""
    spec = BlockSpec(
        kind="block",
        blocks="blocks",
        streams={name: role for name, (role, _) in streams.items()},
        returns=tuple(streams),
        references=references,
    )
    tensors = {name: torch.zeros(1, n, 4) for name, (_, n) in streams.items()}
    return stream_layouts(BlockCall(spec, _forward, (), tensors), image, 3)


def _forward(img=None, txt=None, x=None, y=None, plain=None):
    """A block forward with the stream parameters the tests use."""


def test_reference_tokens_are_placed_where_the_record_says():
    after = _layouts(References.AFTER, 6, img=(Role.IMAGE, 8), txt=(Role.TEXT, 3), x=(Role.JOINT, 11))
    assert after["img"] == TokenLayout(text=0, image=6, reference=2)
    assert after["txt"] == TokenLayout(text=3, image=0)
    assert after["img"].image_slice == slice(0, 6) and after["x"].image_slice == slice(3, 9)
    before = _layouts(References.BEFORE, 6, img=(Role.IMAGE, 8), x=(Role.JOINT, 11), y=(Role.JOINT_IMAGE_FIRST, 11))
    assert before["img"].image_slice == slice(2, 8)  # [ref][img]
    assert before["x"].image_slice == slice(5, 11)  # [txt][ref][img]
    assert before["y"].image_slice == slice(2, 8)  # [ref][img][txt]
    scores = torch.arange(11.0)[None]  # the last tokens score highest
    assert recompute_positions(scores, before["y"], 0.5).tolist() == [[0, 1, 5, 6, 7, 8, 9, 10]]
    mixed = _layouts(References.MIXED, 6, img=(Role.IMAGE, 12), plain=(Role.IMAGE, 6), x=(Role.JOINT_IMAGE_FIRST, 15))
    assert mixed["img"].image == 0 and mixed["img"].fixed == 12  # an image stream with references: nothing pruned
    assert mixed["x"].image == 0 and mixed["x"].text == 3
    assert mixed["plain"] == TokenLayout(text=0, image=6)  # without references it is pruned as usual


def test_joint_layout_keeps_the_reference_place_of_its_image_stream():
    before = _layouts(References.BEFORE, 6, img=(Role.IMAGE, 8), txt=(Role.TEXT, 3))
    assert joint_layout([before["txt"], before["img"]]).image_slice == slice(5, 11)  # [txt][ref][img]
    assert joint_layout([before["img"], before["txt"]]).image_slice == slice(2, 8)  # [ref][img][txt]


def test_patched_tokens_count_every_latent_position():
    assert patched_tokens((1, 16, 16, 16), 2) == 64  # Flux: (H/2)(W/2)
    assert patched_tokens((1, 16, 15, 16), 2) == 64  # padded up to the patch
    assert patched_tokens((1, 16, 1, 16, 16), 2) == 64  # Qwen-Image: one frame
    assert patched_tokens((1, 16, 3, 16, 16), 2) == 192  # Qwen-Image Layered: every layer is image tokens
    assert patched_tokens((1, 16, 3, 16, 16), (1, 2, 2)) == 192  # HunyuanVideo, Wan
    assert patched_tokens((1, 64, 256), 1) == 256  # a 1-D token latent
