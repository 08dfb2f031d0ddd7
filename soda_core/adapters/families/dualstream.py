"""Dual-stream and joint-stream DiTs besides Flux: Qwen-Image, HunyuanVideo 1.0 / 1.5 and HunyuanImage 2.1,
Lumina 2 and Z-Image, HiDream.

Qwen-Image (``comfy/ldm/qwen_image/model.py``), one block kind with an image and a text stream::

    attn:  D_a = to_out(Attn(to_q/k/v(img) ; add_q/k/v_proj(txt)))    text tokens first in the joint attention
    mlp:   D_m = img_mlp(.) / txt_mlp(.)

Qwen-Image Edit appends its reference latents to the image stream (image, then reference tokens); Edit 2511
modulates them at timestep 0 inside the block; Qwen-Image Layered (ComfyUI 0.33) has image tokens in every layer of
its 5-D latent (``spec.patched_tokens`` counts them).

HunyuanVideo (``comfy/ldm/hunyuan_video/model.py``; also HunyuanVideo I2V, SkyReels I2V, HunyuanVideo 1.5 and
HunyuanImage 2.1, one diffusion model class) runs Flux's double and single blocks. ComfyUI 0.3.75 builds its double
blocks with ``flipped_img_txt=True`` (image tokens first in the joint attention) and joins the streams as
``[image; text]`` for the single blocks; 0.33 puts text first in both, as Flux does: the record is Flux's, with a
variant for the image-first order. Its ``ref_latent`` (HunyuanImageToVideo's "custom" guidance) goes *before* the
image tokens of the image stream.

Lumina 2 and Z-Image (``comfy/ldm/lumina/model.py``, ``NextDiT``): one block class in three lists, run in this
order: ``context_refiner`` (caption tokens only), ``noise_refiner`` (image tokens only) and ``layers`` (the joint
``[caption; image]`` stream); attention is ``attention.qkv`` -> ComfyUI's attention -> ``attention.out``. Z-Image pads
caption and image tokens up to a multiple of 32; the pads follow the tokens they pad and are never pruned. Not
covered: Z-Image omni (ComfyUI 0.33, reference latents) puts SigLIP and reference-image tokens *before* the image
tokens and pads after them, a layout no ``References`` value describes, so its pruning would pick the wrong tokens;
its ``siglip_refiner`` blocks are not served.

HiDream (``comfy/ldm/hidream/model.py``): each block list entry wraps the block in ``.block``. Double blocks hold an
image and a text stream (joint attention with *image tokens first*), single blocks the joint ``[image; text]``
stream; the image feed-forward is a mixture of experts routed per token, so it recomputes selected tokens as any MLP.
HiDream E1's condition image is concatenated to the latent along its width, so its tokens interleave with the image
tokens row by row: such streams are never pruned (``References.MIXED``).
"""

from __future__ import annotations

from dataclasses import replace

from ..spec import BlockSpec, Family, In, Module, Out, References, Role, Submodules, Variant
from .flux import DOUBLE as FLUX_DOUBLE
from .flux import SINGLE as FLUX_SINGLE


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


# ---------------------------------------------------------------------------------------------------- HunyuanVideo

_HUNYUAN_MODEL = "comfy.ldm.hunyuan_video.model.HunyuanVideo"
_HUNYUAN_DOUBLE = replace(FLUX_DOUBLE, references=References.BEFORE)  # text first (ComfyUI 0.33)
_HUNYUAN_SINGLE = replace(FLUX_SINGLE, references=References.BEFORE)
_HUNYUAN_DOUBLE_IMAGE_FIRST = replace(
    _HUNYUAN_DOUBLE,
    program=Submodules(
        (
            _joint_attention(
                "attn",
                (("img_attn.proj", "img"), ("txt_attn.proj", "txt")),
                (("img_attn.qkv", "img"), ("txt_attn.qkv", "txt")),
            ),
            _mlps("mlp", (("img_mlp", "img"), ("txt_mlp", "txt"))),
        )
    ),
)
_HUNYUAN_SINGLE_IMAGE_FIRST = replace(_HUNYUAN_SINGLE, streams={"x": Role.JOINT_IMAGE_FIRST})

HUNYUAN_VIDEO = Family(
    "hunyuan_video",
    (_HUNYUAN_MODEL,),
    (_HUNYUAN_DOUBLE, _HUNYUAN_SINGLE),
    variants=(
        Variant(
            "double_blocks.0.flipped_img_txt",  # ComfyUI 0.3.75: image tokens first
            Family("hunyuan_video", (_HUNYUAN_MODEL,), (_HUNYUAN_DOUBLE_IMAGE_FIRST, _HUNYUAN_SINGLE_IMAGE_FIRST)),
        ),
    ),
)


# ---------------------------------------------------------------------------------------------------- Lumina 2


def _lumina_blocks(kind: str, blocks: str, role: Role) -> BlockSpec:
    return BlockSpec(
        kind=kind,
        blocks=blocks,
        streams={"x": role},
        returns=("x",),
        program=Submodules(
            (
                _joint_attention("attn", (("attention.out", "x"),), (("attention.qkv", "x"),)),
                _mlps("mlp", (("feed_forward", "x"),)),
            )
        ),
    )


LUMINA2 = Family(
    "lumina2",
    ("comfy.ldm.lumina.model.NextDiT", "comfy.ldm.lumina.model.NextDiTPixelSpace"),
    (
        _lumina_blocks("context_refiner", "context_refiner", Role.TEXT),
        _lumina_blocks("noise_refiner", "noise_refiner", Role.IMAGE),
        _lumina_blocks("block", "layers", Role.JOINT),
    ),
)


# ---------------------------------------------------------------------------------------------------- HiDream

_HI_IMG, _HI_TXT = "image_tokens", "text_tokens"
_HI_IMAGE_QKV = tuple((f"block.attn1.{p}", _HI_IMG) for p in ("to_q", "to_k", "to_v"))

HIDREAM = Family(
    "hidream",
    ("comfy.ldm.hidream.model.HiDreamImageTransformer2DModel",),
    (
        BlockSpec(
            kind="double_block",
            blocks="double_stream_blocks",
            streams={_HI_IMG: Role.IMAGE, _HI_TXT: Role.TEXT},
            returns=(_HI_IMG, _HI_TXT),
            program=Submodules(
                (
                    _joint_attention(
                        "attn",
                        (("block.attn1.to_out", _HI_IMG), ("block.attn1.to_out_t", _HI_TXT)),
                        _HI_IMAGE_QKV + tuple((f"block.attn1.{p}_t", _HI_TXT) for p in ("to_q", "to_k", "to_v")),
                    ),
                    _mlps("mlp", (("block.ff_i", _HI_IMG), ("block.ff_t", _HI_TXT))),
                )
            ),
            references=References.MIXED,
        ),
        BlockSpec(
            kind="single_block",
            blocks="single_stream_blocks",
            streams={_HI_IMG: Role.JOINT_IMAGE_FIRST},
            returns=(_HI_IMG,),
            program=Submodules(
                (
                    _joint_attention("attn", (("block.attn1.to_out", _HI_IMG),), _HI_IMAGE_QKV),
                    _mlps("mlp", (("block.ff_i", _HI_IMG),)),
                )
            ),
            references=References.MIXED,
        ),
    ),
)
