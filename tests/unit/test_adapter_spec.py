"""Family records on their own: variants chosen by the model's attributes, where reference tokens sit in a stream's
layout, and how many image tokens a latent patches into."""

from __future__ import annotations

import torch

from comfyui_soda.soda_core.adapters.spec import BlockSpec, Family, Role, Variant


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
