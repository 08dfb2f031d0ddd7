"""Where the modules are: the block layout of a DiT as SODA indexes it.

A layer ``l`` is one transformer block in execution order. The module axis lists every module name the model's
blocks have (``attn``, ``cross_attn``, ``mlp``, ...), or the single pseudo-module ``block`` at block granularity; a
block without one of them (e.g. the extra self-attention only some SD3.5 blocks have) simply has no FLOPs for it.
``BlockRef`` names a block by its kind and index in its block list, so layouts survive being written to a profile
file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Granularity(str, enum.Enum):
    """What SODA caches and profiles: each module of a block (the paper), or whole blocks (coarser, any block)."""

    MODULE = "module"
    BLOCK = "block"


BLOCK_MODULES = ("block",)


@dataclass(frozen=True)
class BlockRef:
    """One transformer block: ``kind`` and ``index`` as in ComfyUI's ``patches_replace["dit"][(kind, index)]``."""

    kind: str
    index: int

    def __str__(self) -> str:
        return f"{self.kind}[{self.index}]"


@dataclass(frozen=True)
class ModelLayout:
    """The blocks of a model in execution order, the module names of the module axis and the granularity."""

    blocks: tuple[BlockRef, ...]
    modules: tuple[str, ...]
    granularity: Granularity = field(default=Granularity.MODULE)

    def __post_init__(self) -> None:
        if (self.modules == BLOCK_MODULES) != (self.granularity is Granularity.BLOCK):
            raise ValueError(
                f"A layout at {self.granularity.value} granularity cannot have the modules {self.modules}; block "
                f"granularity has exactly the module {BLOCK_MODULES[0]!r}."
            )

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def num_modules(self) -> int:
        return len(self.modules)

    def layer_of(self, block: BlockRef) -> int:
        return self.blocks.index(block)

    def at_block_granularity(self) -> ModelLayout:
        return ModelLayout(self.blocks, BLOCK_MODULES, Granularity.BLOCK)

    def to_json(self) -> dict[str, object]:
        return {
            "blocks": [[b.kind, b.index] for b in self.blocks],
            "modules": list(self.modules),
            "granularity": self.granularity.value,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ModelLayout:
        blocks = data["blocks"]
        modules = data["modules"]
        if not isinstance(blocks, list) or not isinstance(modules, list):
            raise ValueError(f"A layout needs lists 'blocks' and 'modules'; got {data!r}.")
        modules_ = tuple(str(m) for m in modules)
        default = Granularity.BLOCK if modules_ == BLOCK_MODULES else Granularity.MODULE
        granularity = Granularity(str(data.get("granularity", default.value)))
        return cls(tuple(BlockRef(str(k), int(i)) for k, i in blocks), modules_, granularity)

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for block in self.blocks:
            kinds[block.kind] = kinds.get(block.kind, 0) + 1
        parts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        return f"{parts}; modules {'/'.join(self.modules)}"


def check_layout(profile_layout: ModelLayout, layout: ModelLayout, what: str) -> None:
    """A profile or schedule only serves the model layout it was measured on."""
    if profile_layout != layout:
        raise ValueError(
            f"This {what} was measured on a model with {profile_layout.describe()}, but the model being sampled "
            f"has {layout.describe()}. Profile this model with the Profile Sensitivity node and plan again."
        )
