"""Video DiTs: Wan 2.1 / 2.2 and their variants (``comfy/ldm/wan``), LTX-Video (``comfy/ldm/lightricks``), Cosmos
Predict2 and Anima (``comfy/ldm/cosmos/predict2.py``, ``comfy/ldm/anima``).

All three block designs are self-attention, cross-attention and MLP on one image stream, each with its gate and
residual outside the submodules SODA intercepts::

    self_attn:  D_s = o(Attn(q(x_m), k(x_m), v(x_m)))      x <- x + g1 * D_s      x_m, n(x): normalised and
    cross_attn: D_c = o(Attn(q(n(x)), k(ctx), v(ctx)))      x <- x + g2 * D_c      modulated x (per token for
    mlp:        D_m = mlp(n(x))                              x <- x + g3 * D_m      Wan 2.2 TI2V and LTXV)

so every module is the submodules pattern with split attention (the attention calls pass ``transformer_options``
on both ComfyUI versions) and token-wise outputs: caching and token recompute for all three. Text, CLIP-image and
audio tokens are keys only (``context``). Latents are 5-D, so ``Family.patch`` counts frames too.

Image streams hold the latent's tokens first; what follows them is never pruned: Wan S2V and HuMo reference and
motion tokens, Bernini ``context_latents``, ``time_dim_concat`` frames. Known limits:

* Wan models with a reference convolution (Fun 1.1 / 2.2 reference image) and SCAIL put their reference tokens
  *before* the image tokens: SODA counts them as image tokens and keeps as many of the last image tokens instead.
  VACE reference frames and LTXV keyframe guides are frames of the latent itself, counted as image tokens.
* Patches that read self-attention queries and keys (InfiniteTalk's multi-speaker masks, ``attn1_patch``) see
  zeros on steps that reuse the self-attention.
* HuMo's audio cross-attention (inside its blocks) and the audio / face / VACE injections between blocks run on
  every step.
"""

from __future__ import annotations

from ..spec import BlockSpec, Family, In, Module, Out, Role, Submodules


def _split_attention(
    name: str,
    prefix: str,
    stream: str,
    keys: str,
    names: tuple[str, str, str, str] = ("q", "k", "v", "o"),
    extra: tuple[In, ...] = (),
) -> Module:
    """An attention submodule ``prefix`` with q, k, v and output linears ``names``: queries on ``stream``, keys and
    values on ``keys``; ``extra`` input linears are skipped with it too."""
    q, k, v, o = (f"{prefix}.{n}" for n in names)
    return Module(
        name,
        outputs=(Out(o, (stream,), tokenwise=True),),
        inputs=(In(q, stream), In(k, keys), In(v, keys), *extra),
    )


# ---------------------------------------------------------------------------------------------------------- Wan


def _wan_program(stream: str) -> Submodules:
    """``WanAttentionBlock``: ``self_attn``, ``cross_attn`` (k, v on the text context; k_img, v_img on the CLIP-image
    context of I2V models) and ``ffn`` (Linear, GELU, Linear)."""
    image = (In("cross_attn.k_img", "context", optional=True), In("cross_attn.v_img", "context", optional=True))
    return Submodules(
        (
            _split_attention("self_attn", "self_attn", stream, stream),
            _split_attention("cross_attn", "cross_attn", stream, "context", extra=image),
            Module("mlp", outputs=(Out("ffn", (stream,), tokenwise=True),)),
        )
    )


WAN_BLOCK = BlockSpec(
    kind="block",
    blocks="blocks",
    streams={"x": Role.IMAGE, "context": Role.TEXT},  # forward(x, e, freqs, context, context_img_len, ...)
    returns=("x",),
    program=_wan_program("x"),
)

# VACE: ``VaceWanAttentionBlock.forward(c, x, **kwargs)`` runs the Wan block on the control stream ``c`` (one token
# per image token) and returns ``(after_proj(c), c)``; the model adds the first to the main stream after block i.
# It runs once per VACE control in a model call (each call keeps its own cache).
VACE_BLOCK = BlockSpec(
    kind="vace_block",
    blocks="vace_blocks",
    streams={"c": Role.IMAGE},
    returns=("hint", "c"),
    program=_wan_program("c"),
)

_WAN = "comfy.ldm.wan.model."
WAN = Family(
    "wan",
    (
        f"{_WAN}WanModel",  # Wan 2.1 T2V / I2V / FLF / Fun, Wan 2.2 TI2V 5B and each 14B expert
        f"{_WAN}CameraWanModel",
        f"{_WAN}WanModel_S2V",
        f"{_WAN}HumoWanModel",  # WanAttentionBlockAudio: the Wan block plus an audio cross-attention
        "comfy.ldm.wan.model_animate.AnimateWanModel",
        "comfy.ldm.wan.model_wandancer.WanDancerModel",
        f"{_WAN}SCAILWanModel",
        f"{_WAN}SCAIL2WanModel",
    ),
    (WAN_BLOCK,),
)

WAN_VACE = Family("wan_vace", (f"{_WAN}VaceWanModel",), (WAN_BLOCK, VACE_BLOCK))

# ---------------------------------------------------------------------------------------------------------- LTXV

_LTX = ("to_q", "to_k", "to_v", "to_out")
LTXV_BLOCK = BlockSpec(
    kind="block",
    blocks="transformer_blocks",
    streams={"x": Role.IMAGE, "context": Role.TEXT},  # forward(x, context, attention_mask, timestep, pe, ...)
    returns=("x",),
    program=Submodules(
        (
            _split_attention("self_attn", "attn1", "x", "x", _LTX, (In("attn1.to_gate_logits", "x", optional=True),)),
            _split_attention(
                "cross_attn", "attn2", "x", "context", _LTX, (In("attn2.to_gate_logits", "x", optional=True),)
            ),
            Module("mlp", outputs=(Out("ff", ("x",), tokenwise=True),)),
        )
    ),
)

LTXV = Family("ltxv", ("comfy.ldm.lightricks.model.LTXVModel",), (LTXV_BLOCK,), patch="patchifier.patch_size")

# ---------------------------------------------------------------------------------------------- Cosmos Predict2

_X = "x_B_T_H_W_D"  # the block's stream is (B, T, H, W, C); its attention submodules see it as (B, T*H*W, C)
_COSMOS = ("q_proj", "k_proj", "v_proj", "output_proj")
COSMOS_BLOCK = BlockSpec(
    kind="block",
    blocks="blocks",
    streams={_X: Role.IMAGE, "crossattn_emb": Role.TEXT},
    returns=(_X,),
    program=Submodules(
        (
            _split_attention("self_attn", "self_attn", _X, _X, _COSMOS),
            _split_attention("cross_attn", "cross_attn", _X, "crossattn_emb", _COSMOS),
            Module("mlp", outputs=(Out("mlp", (_X,), tokenwise=True),)),
        )
    ),
)

COSMOS_PREDICT2 = Family(
    "cosmos_predict2",
    ("comfy.ldm.cosmos.predict2.MiniTrainDIT", "comfy.ldm.anima.model.Anima"),  # Anima: the same DiT, its own text
    (COSMOS_BLOCK,),
    patch=("patch_temporal", "patch_spatial", "patch_spatial"),
)

# ------------------------------------------------------------------------------------------------- not served


def _unserved(name: str, model_class: str, model: str, why: str) -> Family:
    """A model SODA leaves alone (no blocks served), rather than letting discovery serve blocks it would break."""
    return Family(
        name, (model_class,), (), notes=(f"SODA does not serve {model}: {why}. It runs as ComfyUI runs it.",)
    )


UNSERVED = (
    _unserved(
        "wan_causal_ar",
        "comfy.ldm.wan.ar_model.CausalWanModel",
        "Causal Wan (autoregressive)",
        "its blocks append to a key/value cache on every call, which reusing or re-running a block would corrupt",
    ),
    _unserved(
        "wan_animate2",
        "comfy.ldm.wan.model_animate2.WanAnimate2Model",
        "Wan Animate 2",
        "it calls its blocks through forward_gen / forward_pose, not forward",
    ),
    _unserved(
        "ltxav",
        "comfy.ldm.lightricks.av_model.LTXAVModel",
        "LTX-2 audio-video",
        "its blocks take the video and audio tokens as one tuple and update both in place",
    ),
    _unserved(
        "cosmos1",
        "comfy.ldm.cosmos.model.GeneralDIT",
        "Cosmos 1",
        "its blocks are a ModuleDict of (T, H, W, B, C) tensors, tokens first and the batch inside",
    ),
)
