"""MMDiT-style and cross-attention DiTs: SD3 / SD3.5, AuraFlow, HunyuanDiT (1.0-1.2) and PixArt-alpha / sigma.

SD3 joint block (``comfy/ldm/modules/diffusionmodules/mmdit.py``): ``JointBlock.forward(*args, **kwargs)`` passes
``(context, x)`` on to ``_block_mixing``, which runs the context and image halves (``DismantledBlock``s) around one
joint attention call (text tokens first)::

    attn:   D_a = proj(Attn(qkv(mod(norm1(.)))))          per stream, joint attention over [context; x]
    attn2:  D_2 = attn2.proj(Attn(attn2.qkv(...)))         SD3.5 (``x_block_self_attn_layers``): image only
    mlp:    D_m = mlp(mod(norm2(.)))                      per stream

The last block's context half is ``pre_only`` (no ``proj``, no ``mlp``; the block returns ``None`` for context), so
those outputs are optional; a block without ``attn2`` has no FLOPs in that module.

AuraFlow (``comfy/ldm/aura/mmdit.py``): the double layer is the same joint pattern with separate q/k/v linears
(context = 8 register tokens, then text); the single layer runs both modules on the joint ``[context; x]`` stream.

HunyuanDiT (``comfy/ldm/hydit/``) and PixArt (``comfy/ldm/pixart/``): image-stream blocks with self-attention,
cross-attention to the text and an MLP. Their attention calls get no ``transformer_options`` (SODA's attention
override cannot reach them), so each attention module is served whole: reused or computed, its tokens not pruned;
PixArt's cross-attention acts on each query token on its own and can recompute selected tokens, HunyuanDiT's applies
the image RoPE inside and cannot. HunyuanDiT's attention modules return ``(out,)`` (``packed``); its later blocks'
long-skip input is an ordinary argument the block's own forward consumes.
"""

from __future__ import annotations

from ..spec import BlockSpec, Family, In, Module, Out, Role, Submodules


SD3_JOINT = BlockSpec(
    kind="double_block",
    blocks="joint_blocks",
    streams={"context": Role.TEXT, "x": Role.IMAGE},
    returns=("context", "x"),
    positional=("context", "x"),  # JointBlock.forward(*args, **kwargs): called as block(context, x, c=..., ...)
    program=Submodules(
        (
            Module(
                "attn",
                outputs=(
                    Out("context_block.attn.proj", ("context",), tokenwise=True, optional=True),  # pre_only: absent
                    Out("x_block.attn.proj", ("x",), tokenwise=True),
                ),
                inputs=(In("context_block.attn.qkv", "context"), In("x_block.attn.qkv", "x")),
            ),
            Module(
                "attn2",
                outputs=(Out("x_block.attn2.proj", ("x",), tokenwise=True, optional=True),),
                inputs=(In("x_block.attn2.qkv", "x", optional=True),),
            ),
            Module(
                "mlp",
                outputs=(
                    Out("context_block.mlp", ("context",), tokenwise=True, optional=True),  # pre_only: absent
                    Out("x_block.mlp", ("x",), tokenwise=True),
                ),
            ),
        )
    ),
)

SD3 = Family("sd3", ("comfy.ldm.modules.diffusionmodules.mmdit.OpenAISignatureMMDITWrapper",), (SD3_JOINT,))


def _qkv(prefix: str, stream: str) -> tuple[In, ...]:
    return tuple(In(f"attn.{prefix}{p}", stream) for p in "qkv")


AURA_DOUBLE = BlockSpec(
    kind="double_block",
    blocks="double_layers",
    streams={"c": Role.TEXT, "x": Role.IMAGE},
    returns=("c", "x"),
    program=Submodules(
        (
            Module(
                "attn",
                outputs=(Out("attn.w1o", ("c",), tokenwise=True), Out("attn.w2o", ("x",), tokenwise=True)),
                inputs=(*_qkv("w1", "c"), *_qkv("w2", "x")),
            ),
            Module("mlp", outputs=(Out("mlpC", ("c",), tokenwise=True), Out("mlpX", ("x",), tokenwise=True))),
        )
    ),
)

AURA_SINGLE = BlockSpec(
    kind="single_block",
    blocks="single_layers",
    streams={"cx": Role.JOINT},
    returns=("cx",),
    program=Submodules(
        (
            Module("attn", outputs=(Out("attn.w1o", ("cx",), tokenwise=True),), inputs=_qkv("w1", "cx")),
            Module("mlp", outputs=(Out("mlp", ("cx",), tokenwise=True),)),
        )
    ),
)

AURAFLOW = Family("auraflow", ("comfy.ldm.aura.mmdit.MMDiT",), (AURA_DOUBLE, AURA_SINGLE))

HUNYUAN_DIT_BLOCK = BlockSpec(
    kind="block",
    blocks="blocks",
    streams={"x": Role.IMAGE},
    returns=("x",),
    program=Submodules(
        (
            Module("attn1", outputs=(Out("attn1", ("x",), packed=True),)),
            Module("attn2", outputs=(Out("attn2", ("x",), packed=True),)),
            Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
        )
    ),
)

HUNYUAN_DIT = Family("hunyuan_dit", ("comfy.ldm.hydit.models.HunYuanDiT",), (HUNYUAN_DIT_BLOCK,))

PIXART_BLOCK = BlockSpec(
    kind="block",
    blocks="blocks",
    streams={"x": Role.IMAGE},
    returns=("x",),
    program=Submodules(
        (
            Module("attn", outputs=(Out("attn", ("x",)),)),
            Module("cross_attn", outputs=(Out("cross_attn", ("x",), tokenwise=True),)),  # per query, no RoPE
            Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
        )
    ),
)

PIXART = Family("pixart", ("comfy.ldm.pixart.pixartms.PixArtMS",), (PIXART_BLOCK,))
