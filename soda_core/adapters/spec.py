"""A model family as data: where its blocks are, which tensors of a block call are token streams, and which of each
block's *own submodules* produce each SODA module's output.

SODA never re-writes a block's forward. The block runs its own code; SODA intercepts calls to a few of its
submodules (``Out``, ``In``, ``Fused``) and the attention calls between them, and there decides per module: compute
as usual, serve the cached output, or compute the selected tokens only. So a block keeps every feature ComfyUI gives
it (attention patches, per-token modulation, LoRA weight functions, quantised weights) and a record survives
changes to the block's code as long as the submodules keep their names and roles, which the behavioural check
(``check.py``) verifies on the first real call.

Three patterns cover ComfyUI's DiTs (``patterns/``):

* ``Submodules``: each module's output is the output of one submodule per stream (an MLP, a projection, or a whole
  attention module), optionally fed by input linears whose only use is that module (qkv projections), which are
  skipped with it. Joint-stream dual blocks (Flux double, SD3, Qwen-Image) and self/cross-attention + MLP blocks
  (Wan, PixArt, LTXV) are records of this pattern.
* ``Fused``: single-stream blocks with one input linear for qkv and the MLP and one output linear for both (Flux
  single, Chroma, HunyuanVideo): the modules are the attention output and the MLP activation (the two halves of the
  output linear's input).
* block granularity (``patterns/residual.py``): the whole block is one module, its residual; any block.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field


class Role(str, enum.Enum):
    """What a token stream of a block call holds, in order."""

    TEXT = "text"  # text tokens
    IMAGE = "image"  # image tokens, then reference-image tokens (Flux Kontext, Qwen Edit; see ``References``)
    JOINT = "joint"  # text, then image, then reference tokens in one sequence (Flux single blocks)
    JOINT_IMAGE_FIRST = "joint_image_first"  # image, reference, then text tokens (HunyuanVideo single blocks)
    JOINT_REFERENCE_FIRST = "joint_reference_first"  # text, reference, then image tokens (OmniGen2's layers)
    REFERENCE = "reference"  # reference-image tokens only (OmniGen2's reference refiner)


class References(str, enum.Enum):
    """Where the reference-image tokens of a block's image-bearing streams sit next to its image tokens."""

    AFTER = "after"  # image, then reference tokens (Flux Kontext, Qwen Edit)
    BEFORE = "before"  # reference, then image tokens (HunyuanVideo's ref_latent)
    MIXED = "mixed"  # among the image tokens (HiDream E1's side-by-side condition): such a stream is never pruned


@dataclass(frozen=True)
class Out:
    """A submodule of the block whose output is a module's output for ``streams`` (one per tensor it returns)."""

    path: str  # relative to the block, e.g. "img_mlp" or "attn.to_out.0"
    streams: tuple[str, ...]
    tokenwise: bool = False  # acts on each token on its own (MLP, linear): it can be run on selected tokens
    optional: bool = False  # absent in some blocks of this kind (e.g. SD3's last context block)
    packed: bool = False  # returns its one output in a 1-tuple, ``(out,)`` (HunyuanDiT's attention modules)


@dataclass(frozen=True)
class In:
    """A linear of the block whose only use is to feed its module's attention (e.g. a qkv projection): skipped, with
    the attention call it feeds, when the module is served from the cache."""

    path: str
    stream: str
    optional: bool = False


@dataclass(frozen=True)
class Module:
    """One SODA module of a block: its outputs and the input linears skipped with it. The name of an attention
    module contains "attn" (``attn``, ``attn2``, ``self_attn``, ``cross_attn``...): planning without partial
    attention (``api.attention_modules``) goes by it."""

    name: str
    outputs: tuple[Out, ...]
    inputs: tuple[In, ...] = ()

    @property
    def streams(self) -> tuple[str, ...]:
        """The module's joint token order: the streams of its outputs, in the order they are listed."""
        return tuple(stream for out in self.outputs for stream in out.streams)

    @property
    def partial(self) -> bool:
        """Whether selected tokens alone can be recomputed: every output acts per token; with input linears, the
        module is an attention whose selected queries attend to every key (``In`` linears run in full)."""
        return all(out.tokenwise for out in self.outputs)


@dataclass(frozen=True)
class Submodules:
    """Pattern 1: modules made of the block's submodules (see the module docstring)."""

    modules: tuple[Module, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)


@dataclass(frozen=True)
class Fused:
    """Pattern 2: a single-stream block with fused linears.

    ``linear1`` maps the modulated stream to ``[q, k, v | mlp input]``; ``linear2`` maps ``[attention output | mlp
    activation]`` to the block's update, so its first ``linear2.out_features`` input columns are the attention output.
    """

    linear1: str
    linear2: str
    stream: str
    names: tuple[str, str] = ("attn", "mlp")


Program = Submodules | Fused
AUTO = "*"  # ``BlockSpec.returns`` of a discovered block: outputs matched to tensor arguments of the same shape


@dataclass(frozen=True)
class BlockSpec:
    """One kind of block: where its instances are and how a call of one passes its token streams."""

    kind: str  # the layout's name for it (profiles store it), e.g. "double_block"
    blocks: str  # attribute of the diffusion model holding the blocks (a ModuleList), or a dotted path to it
    streams: dict[str, Role]  # forward parameter -> role of the tokens it holds
    returns: tuple[str, ...]  # streams the forward returns, in order (one name: the forward returns a tensor)
    program: Program | None = None  # None: served at block granularity only
    positional: tuple[str, ...] = ()  # names of the positional arguments of a ``forward(*args, **kwargs)`` wrapper
    references: References = References.AFTER  # where reference tokens sit in the image-bearing streams

    @property
    def modules(self) -> tuple[str, ...]:
        return self.program.names if self.program is not None else ()


@dataclass(frozen=True)
class Family:
    """A DiT family: the diffusion model classes it covers and its block kinds in execution order."""

    name: str
    model_classes: tuple[str, ...]  # fully qualified class names of the diffusion model
    blocks: tuple[BlockSpec, ...]
    # the diffusion model's patch size: an attribute path (dots allowed, e.g. "patchifier.patch_size") holding an int or
    # one size per patched latent dim, or one attribute path per patched latent dim (Cosmos: temporal, spatial, spatial)
    patch: str | tuple[str, ...] = "patch_size"
    notes: tuple[str, ...] = field(default=())  # what a user should know (e.g. what is served at block granularity)
    variants: tuple[Variant, ...] = ()  # records for models of these classes built another way (first match wins)

    @property
    def modules(self) -> tuple[str, ...]:
        """The module axis of the family's layout: every module name of every block kind, in order of appearance."""
        names: list[str] = []
        for spec in self.blocks:
            names.extend(m for m in spec.modules if m not in names)
        return tuple(names)

    def resolved(self, diffusion_model: object) -> Family:
        """The record for this diffusion model: its first variant whose attribute holds, else this one."""
        for variant in self.variants:
            if variant.holds(diffusion_model):
                return variant.family
        return self


@dataclass(frozen=True)
class Variant:
    """The record of a family's models whose attribute ``when`` (a dotted path from the diffusion model, e.g.
    ``"double_blocks.0.flipped_img_txt"``) exists and is truthy: a ComfyUI version may build the same model class with
    another token order, which the blocks' own attributes tell (the behavioural check cannot see a wrong role in a
    fused block). The variant keeps the family's name and layout, so profiles carry over."""

    when: str
    family: Family

    def holds(self, diffusion_model: object) -> bool:
        value: object = diffusion_model
        for name in self.when.split("."):
            value = getattr(value, name, None)
            if value is None:
                return False
        return bool(value)


def patched_tokens(latent_shape: Sequence[int], patch: int | Sequence[int]) -> int:
    """Image tokens of a latent (B, C, *dims) patched by ``patch`` (ComfyUI pads every patched dim up to a multiple
    of its patch size): the product of ``ceil(dim / p)`` over the last ``len(patch)`` dims (2 for an int), times the
    dims before them, which are not patched (the frames of a video latent with a spatial patch size, as Mochi's)."""
    sizes = (int(patch),) * 2 if isinstance(patch, int) else tuple(int(p) for p in patch)
    every = tuple(int(d) for d in latent_shape[2:])
    dims, leading = every[-len(sizes) :], every[: max(len(every) - len(sizes), 0)]
    tokens = math.prod(leading)
    for d, p in zip(dims, sizes[-len(dims) :], strict=True):
        tokens *= -(-d // max(p, 1))
    return tokens
