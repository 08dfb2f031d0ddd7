"""What an adapter is: a model described as data, plus one *block program* per block kind.

A block program re-expresses a ComfyUI block from its own submodules so SODA can act per module (attention, MLP):
compute a module fully, serve it from the cache, or recompute only some tokens. With every module computed fully
it is bit-exact with the block's own forward (each program has a test for that), and ComfyUI functions it needs
(attention, modulation, weight casting) are passed in as ``ops`` so this package never imports ComfyUI.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..tokens import TokenLayout, TokenScore, recompute_positions, scatter_tokens, token_scores


Tensor = torch.Tensor


class Granularity(str, enum.Enum):
    """What SODA caches and profiles: each module of a block (the paper), or whole blocks (coarser, any block)."""

    MODULE = "module"
    BLOCK = "block"


# (module name, module output (B, N, C) in joint token order, per-token scores of its input (B, N))
Observer = Callable[[str, Tensor, Tensor], None]


@dataclass(frozen=True)
class ModuleCosts:
    """FLOPs of one block call, per module (see ``FlopModel`` for the meaning of each part)."""

    full: dict[str, int]
    fixed: dict[str, int]
    per_ratio: dict[str, int]
    base: int  # computed whatever the plan (modulation)
    record: int  # extra work of a recording full call

    def of(self, module: str, ratio: float) -> int:
        if ratio >= 1.0:
            return self.full[module]
        if ratio <= 0.0:
            return 0
        return self.fixed[module] + round(ratio * self.per_ratio[module])


@dataclass
class BlockStep:
    """What one block call does, and the cache it reads and fills."""

    ratios: dict[str, float]  # module -> 1 full, 0 reuse, (0, 1) share of image tokens recomputed
    cache: dict[str, Tensor]  # module -> output (B, N, C) in joint token order
    tokens: TokenLayout
    ops: dict[str, Callable[..., Any]]
    record: bool = False
    score: TokenScore = TokenScore.MEAN
    observe: Observer | None = None
    original: Callable[[dict[str, Any]], dict[str, Tensor]] | None = None  # the block's own forward
    groups: int = 1  # CFG chunks in the batch: rows of one sample share their recomputed tokens

    def module(
        self,
        name: str,
        inputs: Callable[[], Sequence[Tensor]],
        full: Callable[[Sequence[Tensor]], Tensor],
        partial: Callable[[Sequence[Tensor], Tensor], Tensor],
    ) -> Tensor:
        """Run module ``name`` as planned. ``inputs()`` gives its inputs in joint token order (one tensor per
        stream); ``full(x)`` computes its output for all tokens; ``partial(x, positions)`` for each row's joint-order
        positions (B, n) only. Returns the module output (B, N, C) in joint order."""
        ratio = self.ratios[name]
        if ratio <= 0.0:
            return self.cached(name)
        x = inputs()
        if ratio >= 1.0:
            out = full(x)  # (B, N, C)
            if self.record:
                self.cache[name] = out
            if self.observe is not None:
                self.observe(name, out, self.scores(x))
            return out
        positions = recompute_positions(self.scores(x), self.tokens, ratio)  # (B, n)
        fresh = partial(x, positions)  # (B, n, C)
        return scatter_tokens(self.cached(name), positions, fresh)

    def scores(self, inputs: Sequence[Tensor]) -> Tensor:
        """Per-row token scores of a module's inputs (one tensor per stream), in joint order: (B, N)."""
        return torch.cat([token_scores(x, self.score, self.groups) for x in inputs], dim=1)

    def cached(self, name: str) -> Tensor:
        if name not in self.cache:
            raise RuntimeError(
                f"SODA: module {name!r} is planned for reuse but nothing is cached for it; the step that should "
                "have filled the cache did not run in this sampling run."
            )
        return self.cache[name]


class BlockProgram(Protocol):
    """A block kind re-expressed from its submodules (see module docstring)."""

    kind: str
    modules: tuple[str, ...]

    def run(self, block: torch.nn.Module, args: dict[str, Any], step: BlockStep) -> dict[str, Tensor]: ...

    def costs(self, block: torch.nn.Module, args: dict[str, Any], tokens: TokenLayout) -> ModuleCosts: ...


@dataclass(frozen=True)
class ModelAdapter:
    """A model family as data: where its blocks are, how they are keyed, which programs run them."""

    name: str
    model_classes: tuple[str, ...]  # fully qualified class names of the diffusion model
    block_lists: tuple[tuple[str, str], ...]  # (attribute holding the ModuleList, patches_replace kind)
    programs: dict[str, BlockProgram]  # kind -> program at module granularity
    modules: tuple[str, ...]
    streams: dict[str, tuple[str, ...]]  # kind -> token streams a block takes and returns, in joint order
    functions: dict[str, str]  # op name -> dotted path of the ComfyUI function the programs call
    known_block_sources: dict[str, frozenset[str]]  # block class -> sha256 of the forward sources programs mirror
    token_rows: dict[str, str] = field(default_factory=dict)  # top-level linear prefix -> "image"|"text" rows
    image_arg: int = 0  # position of the latent ``x`` in the diffusion model's forward
    context_arg: int = 2  # position of the text context
    patch_size_attr: str = "patch_size"

    def programs_for(self, granularity: Granularity) -> dict[str, BlockProgram]:
        if granularity is Granularity.MODULE:
            return self.programs
        from .residual import ResidualBlock

        return {kind: ResidualBlock(program, self.streams[kind]) for kind, program in self.programs.items()}

    def modules_for(self, granularity: Granularity) -> tuple[str, ...]:
        return self.modules if granularity is Granularity.MODULE else ("block",)

    def image_tokens(self, x_shape: Sequence[int], patch_size: int) -> int:
        """Image tokens of a latent (B, C, H, W): ComfyUI pads to the patch size, so round like it does."""
        h, w = x_shape[-2], x_shape[-1]
        return ((h + patch_size // 2) // patch_size) * ((w + patch_size // 2) // patch_size)
