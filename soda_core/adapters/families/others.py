"""DiTs besides the big families: Chroma Radiance and Hunyuan3D 2.0 (Flux blocks), Kandinsky 5, Mochi, OmniGen2,
Lens, JoyImage, ERNIE-Image and Krea 2.

Most are records of the submodule pattern (``patterns/submodules.py``) with one of two attention shapes:

* split attention (qkv linears as ``In``, output projections as token-wise ``Out``): the attention call receives
  ``transformer_options``, so SODA can skip it and recompute selected queries (Mochi, OmniGen2, Lens, JoyImage,
  Krea 2);
* whole attention modules (``Out`` of the attention module, not token-wise): cached or computed whole, where the
  attention call does not receive ``transformer_options`` (ERNIE-Image) or its projections run in chunks on long
  sequences (Kandinsky 5, above 8192 tokens).

Feed-forwards are token-wise ``Out``s everywhere, so the MLP module can recompute selected image tokens.

Served through discovery at block granularity instead (no record): Hunyuan3D 2.1 (a time token leads the latent
tokens, and its MLP is a mixture of experts in the last blocks only), CogVideoX (its projections act on the joined
text and video tokens), PixelDiT and PiD (their pixel blocks run per patch), Boogu (its joint attention ends in one
projection of both streams), ACE-Step, ACE-Step 1.5, Stable Audio and TripoSplat; Mage-Flow runs Qwen-Image's blocks
and can share that record.
"""

from __future__ import annotations

from ..spec import BlockSpec, Family, In, Module, Out, Role, Submodules
from .flux import DOUBLE, SINGLE


UNPATCHED = "_soda_one_token_per_latent_pixel"  # an absent attribute: patch size 1 (see ``Family.patch``)

CHROMA_RADIANCE = Family(
    "chroma_radiance",
    ("comfy.ldm.chroma_radiance.model.ChromaRadiance",),
    (DOUBLE, SINGLE),  # its NeRF head (nerf_blocks) decodes pixels per patch after the blocks: not served
)

HUNYUAN3D_V2 = Family("hunyuan3d_v2", ("comfy.ldm.hunyuan3d.model.Hunyuan3Dv2",), (DOUBLE, SINGLE))


# ---------------------------------------------------------------- Kandinsky 5 (comfy/ldm/kandinsky5/model.py)
#   text block:    x += gate * self_attention(mod(norm(x)));   x += gate * feed_forward(mod(norm(x)))
#   visual block:  the same with cross_attention(mod(norm(x)), text_embed) between them

KANDINSKY5 = Family(
    "kandinsky5",
    ("comfy.ldm.kandinsky5.model.Kandinsky5",),
    (
        BlockSpec(
            kind="text_block",
            blocks="text_transformer_blocks",
            streams={"x": Role.TEXT},
            returns=("x",),
            program=Submodules(
                (
                    Module("attn", outputs=(Out("self_attention", ("x",)),)),
                    Module("mlp", outputs=(Out("feed_forward", ("x",), tokenwise=True),)),
                )
            ),
        ),
        BlockSpec(
            kind="visual_block",
            blocks="visual_transformer_blocks",
            streams={"visual_embed": Role.IMAGE},
            returns=("visual_embed",),
            program=Submodules(
                (
                    Module("attn", outputs=(Out("self_attention", ("visual_embed",)),)),
                    Module("cross_attn", outputs=(Out("cross_attention", ("visual_embed",)),)),
                    Module("mlp", outputs=(Out("feed_forward", ("visual_embed",), tokenwise=True),)),
                )
            ),
        ),
    ),
)


# ---------------------------------------------------------------- Mochi (comfy/ldm/genmo/joint_model/asymm_models_joint.py)
#   attn:  [q, k, v] = qkv_x(x), qkv_y(y);  A = Attn([x; y[:crop]]);  x += proj_x(A_x),  y += proj_y(A_y)
#   mlp:   x += mlp_x(x),  y += mlp_y(y)   (the last block updates no text: proj_y is an identity, no mlp_y)

MOCHI = Family(
    "mochi",
    ("comfy.ldm.genmo.joint_model.asymm_models_joint.AsymmDiTJoint",),
    (
        BlockSpec(
            kind="block",
            blocks="blocks",
            streams={"x": Role.IMAGE, "y": Role.TEXT},
            returns=("x", "y"),
            program=Submodules(
                (
                    Module(
                        "attn",
                        outputs=(
                            Out("attn.proj_x", ("x",), tokenwise=True),
                            Out("attn.proj_y", ("y",), tokenwise=True),
                        ),
                        inputs=(In("attn.qkv_x", "x"), In("attn.qkv_y", "y")),
                    ),
                    Module(
                        "mlp",
                        outputs=(
                            Out("mlp_x", ("x",), tokenwise=True),
                            Out("mlp_y", ("y",), tokenwise=True, optional=True),
                        ),
                    ),
                )
            ),
        ),
    ),
)


# ---------------------------------------------------------------- OmniGen2 (comfy/ldm/omnigen/omnigen2.py)
#   one block class for every stage:  x += gate * norm(to_out(Attn(to_q, to_k, to_v)));  x += gate * norm(ffn(x))
#   stages: context_refiner (text), noise_refiner (image), ref_image_refiner (reference images), then layers on
#   [text; reference; image]


def _omnigen_block(kind: str, role: Role) -> BlockSpec:
    s = "hidden_states"
    return BlockSpec(
        kind=kind,
        blocks=kind,
        streams={s: role},
        returns=(s,),
        program=Submodules(
            (
                Module(
                    "attn",
                    outputs=(Out("attn.to_out.0", (s,), tokenwise=True),),
                    inputs=(In("attn.to_q", s), In("attn.to_k", s), In("attn.to_v", s)),
                ),
                Module("mlp", outputs=(Out("feed_forward", (s,), tokenwise=True),)),
            )
        ),
    )


OMNIGEN2 = Family(
    "omnigen2",
    ("comfy.ldm.omnigen.omnigen2.OmniGen2Transformer2DModel",),
    (
        _omnigen_block("context_refiner", Role.TEXT),
        _omnigen_block("noise_refiner", Role.IMAGE),
        _omnigen_block("ref_image_refiner", Role.REFERENCE),
        _omnigen_block("layers", Role.JOINT_REFERENCE_FIRST),
    ),
)


# ---------------------------------------------------------------- dual-stream blocks with per-stream qkv: Lens, JoyImage
#   attn:  A = Attn([img_qkv(img); txt_qkv(txt)]) (image first);  img += gate * img_out(A_img), txt likewise
#   mlp:   img += gate * img_mlp(img);  txt += gate * txt_mlp(txt)


def _dual_stream(blocks: str, qkv: tuple[str, str], out: tuple[str, str], returns: tuple[str, str]) -> BlockSpec:
    """A dual-stream block of image stream ``hidden_states`` and text stream ``encoder_hidden_states``; ``qkv`` and
    ``out`` name the attention's projections of the (image, text) streams."""
    img, txt = "hidden_states", "encoder_hidden_states"
    return BlockSpec(
        kind="block",
        blocks=blocks,
        streams={img: Role.IMAGE, txt: Role.TEXT},
        returns=returns,
        program=Submodules(
            (
                Module(
                    "attn",
                    outputs=(Out(out[0], (img,), tokenwise=True), Out(out[1], (txt,), tokenwise=True)),
                    inputs=(In(qkv[0], img), In(qkv[1], txt)),
                ),
                Module(
                    "mlp", outputs=(Out("img_mlp", (img,), tokenwise=True), Out("txt_mlp", (txt,), tokenwise=True))
                ),
            )
        ),
    )


LENS = Family(
    "lens",
    ("comfy.ldm.lens.model.LensTransformer2DModel",),
    (
        _dual_stream(
            "transformer_blocks",
            ("attn.img_qkv", "attn.txt_qkv"),
            ("attn.to_out.0", "attn.to_add_out"),
            returns=("encoder_hidden_states", "hidden_states"),
        ),
    ),
    patch=UNPATCHED,  # Flux.2 latents arrive packed (128 channels): one token per latent pixel
)

JOYIMAGE = Family(
    "joyimage",
    ("comfy.ldm.joyimage.model.JoyImageTransformer3DModel",),
    (
        _dual_stream(
            "double_blocks",
            ("attn.img_attn_qkv", "attn.txt_attn_qkv"),
            ("attn.img_attn_proj", "attn.txt_attn_proj"),
            returns=("hidden_states", "encoder_hidden_states"),
        ),
    ),
)


# ---------------------------------------------------------------- ERNIE-Image (comfy/ldm/ernie/model.py)
#   single stream [image; text]:  x += gate * self_attention(mod(norm(x)));  x += gate * mlp(mod(norm(x)))
#   (its attention call gets no transformer_options: the attention module is cached or computed whole)

ERNIE_IMAGE = Family(
    "ernie_image",
    ("comfy.ldm.ernie.model.ErnieImageModel",),
    (
        BlockSpec(
            kind="block",
            blocks="layers",
            streams={"x": Role.JOINT_IMAGE_FIRST},
            returns=("x",),
            program=Submodules(
                (
                    Module("attn", outputs=(Out("self_attention", ("x",)),)),
                    Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
                )
            ),
        ),
    ),
)


# ---------------------------------------------------------------- Krea 2 (comfy/ldm/krea2/model.py)
#   single stream [text; image; reference]:  x += gate * wo(Attn(wq, wk, wv) * sigmoid(gate(x)));  x += gate * mlp(x)

KREA2 = Family(
    "krea2",
    ("comfy.ldm.krea2.model.SingleStreamDiT",),
    (
        BlockSpec(
            kind="block",
            blocks="blocks",
            streams={"x": Role.JOINT},
            returns=("x",),
            program=Submodules(
                (
                    Module(
                        "attn",
                        outputs=(Out("attn.wo", ("x",), tokenwise=True),),
                        inputs=(In("attn.wq", "x"), In("attn.wk", "x"), In("attn.wv", "x"), In("attn.gate", "x")),
                    ),
                    Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
                )
            ),
        ),
    ),
    patch="patch",
)

FAMILIES: tuple[Family, ...] = (
    CHROMA_RADIANCE,
    HUNYUAN3D_V2,
    KANDINSKY5,
    MOCHI,
    OMNIGEN2,
    LENS,
    JOYIMAGE,
    ERNIE_IMAGE,
    KREA2,
)
