"""Flux-architecture DiTs: Flux.1 (dev, schnell, Kontext), Flux.2 and Chroma (``comfy/ldm/flux/layers.py``).

Double block (text and image streams, joint attention, text tokens first)::

    attn:  D_a = proj(Attn(qkv(mod1(norm1(x)))))        x <- x + gate1 * D_a
    mlp:   D_m = mlp(mod2(norm2(x)))                     x <- x + gate2 * D_m

Single block: the fused pattern (``patterns/fused.py``) on the joint ``[text; image]`` stream.
"""

from __future__ import annotations

from ..spec import BlockSpec, Family, Fused, In, Module, Out, Role, Submodules


DOUBLE = BlockSpec(
    kind="double_block",
    blocks="double_blocks",
    streams={"img": Role.IMAGE, "txt": Role.TEXT},
    returns=("img", "txt"),
    program=Submodules(
        (
            Module(
                "attn",
                outputs=(
                    Out("txt_attn.proj", ("txt",), tokenwise=True),
                    Out("img_attn.proj", ("img",), tokenwise=True),
                ),
                inputs=(In("txt_attn.qkv", "txt"), In("img_attn.qkv", "img")),
            ),
            Module(
                "mlp", outputs=(Out("txt_mlp", ("txt",), tokenwise=True), Out("img_mlp", ("img",), tokenwise=True))
            ),
        )
    ),
)

SINGLE = BlockSpec(
    kind="single_block",
    blocks="single_blocks",
    streams={"x": Role.JOINT},
    returns=("x",),
    program=Fused(linear1="linear1", linear2="linear2", stream="x"),
)

FLUX = Family("flux", ("comfy.ldm.flux.model.Flux",), (DOUBLE, SINGLE))
CHROMA = Family("chroma", ("comfy.ldm.chroma.model.Chroma",), (DOUBLE, SINGLE))
