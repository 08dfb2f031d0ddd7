"""Where the modules are: the block layout of a DiT as SODA indexes it.

A layer ``l`` is one transformer block in execution order; each block has the same named modules (``attn``,
``cross_attn``, ``mlp``; or the single pseudo-module ``block`` at block granularity). ``BlockRef`` names a block by
the key ComfyUI's ``patches_replace["dit"]`` uses for it, so layouts survive being written to a profile file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockRef:
    """One transformer block: ``kind`` and ``index`` as in ComfyUI's ``patches_replace["dit"][(kind, index)]``."""

    kind: str
    index: int

    def __str__(self) -> str:
        return f"{self.kind}[{self.index}]"


@dataclass(frozen=True)
class ModelLayout:
    """The blocks of a model in execution order and the module names every block has."""

    blocks: tuple[BlockRef, ...]
    modules: tuple[str, ...]

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @property
    def num_modules(self) -> int:
        return len(self.modules)

    def layer_of(self, block: BlockRef) -> int:
        return self.blocks.index(block)

    def to_json(self) -> dict[str, object]:
        return {"blocks": [[b.kind, b.index] for b in self.blocks], "modules": list(self.modules)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ModelLayout:
        blocks = data["blocks"]
        modules = data["modules"]
        if not isinstance(blocks, list) or not isinstance(modules, list):
            raise ValueError(f"A layout needs lists 'blocks' and 'modules'; got {data!r}.")
        return cls(tuple(BlockRef(str(k), int(i)) for k, i in blocks), tuple(str(m) for m in modules))

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
