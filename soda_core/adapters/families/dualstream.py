"""Dual-stream and joint-stream DiTs besides Flux: Qwen-Image, HunyuanVideo 1.0 / 1.5 and HunyuanImage 2.1,
Lumina 2 and Z-Image, HiDream.

Qwen-Image (``comfy/ldm/qwen_image/model.py``), one block kind with an image and a text stream::

    attn:  D_a = to_out(Attn(to_q/k/v(img) ; add_q/k/v_proj(txt)))    text tokens first in the joint attention
    mlp:   D_m = img_mlp(.) / txt_mlp(.)

Qwen-Image Edit appends its reference latents to the image stream (image, then reference tokens).
"""

from __future__ import annotations

from ..spec import BlockSpec, Family, In, Module, Out, Role, Submodules


def _joint_attention(name: str, outputs: tuple[tuple[str, str], ...], inputs: tuple[tuple[str, str], ...]) -> Module:
    """A split attention module: token-wise output projections ``(path, stream)`` in the attention's token order and
    the q/k/v projections ``(path, stream)`` that feed it."""
    return Module(
        name,
        outputs=tuple(Out(path, (stream,), tokenwise=True) for path, stream in outputs),
        inputs=tuple(In(path, stream) for path, stream in inputs),
    )


def _mlps(name: str, outputs: tuple[tuple[str, str], ...]) -> Module:
    return Module(name, outputs=tuple(Out(path, (stream,), tokenwise=True) for path, stream in outputs))


# ---------------------------------------------------------------------------------------------------- Qwen-Image

_QWEN_IMG, _QWEN_TXT = "hidden_states", "encoder_hidden_states"

QWEN_IMAGE = Family(
    "qwen_image",
    ("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",),
    (
        BlockSpec(
            kind="double_block",
            blocks="transformer_blocks",
            streams={_QWEN_IMG: Role.IMAGE, _QWEN_TXT: Role.TEXT},
            returns=(_QWEN_TXT, _QWEN_IMG),  # the block returns (text, image)
            program=Submodules(
                (
                    _joint_attention(
                        "attn",
                        (("attn.to_add_out", _QWEN_TXT), ("attn.to_out.0", _QWEN_IMG)),
                        tuple((f"attn.{p}", _QWEN_IMG) for p in ("to_q", "to_k", "to_v"))
                        + tuple((f"attn.{p}", _QWEN_TXT) for p in ("add_q_proj", "add_k_proj", "add_v_proj")),
                    ),
                    _mlps("mlp", (("txt_mlp", _QWEN_TXT), ("img_mlp", _QWEN_IMG))),
                )
            ),
        ),
    ),
)
