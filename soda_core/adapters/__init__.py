"""Model families as data (``spec.Family``), and the served model: a diffusion model's blocks resolved against its
family's record.

Adding a family is one record (see ``README.md`` in this folder); nothing outside this package branches on a family.
A diffusion model class without a record is served at block granularity through discovery (``discovery.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch

from ..layout import BLOCK_MODULES, BlockRef, Granularity, ModelLayout
from .discovery import discover
from .families import FAMILIES
from .spec import BlockSpec, Family, patched_tokens


__all__ = ["FAMILIES", "Family", "Layer", "ServedModel", "family_for", "patch_of", "qualified_name", "serve"]


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def family_for(diffusion_model: torch.nn.Module) -> Family:
    """The record of ``type(diffusion_model)`` (exact class; the variant its attributes select), else a
    block-granularity family found by discovery."""
    name = qualified_name(type(diffusion_model))
    for family in FAMILIES:
        if name in family.model_classes:
            return family.resolved(diffusion_model)
    return discover(diffusion_model)


@dataclass(frozen=True)
class Layer:
    """One served block: its place in the layout, its kind's record and where it is in the diffusion model."""

    ref: BlockRef
    spec: BlockSpec
    path: str  # relative to the diffusion model, e.g. "double_blocks.3"
    block: torch.nn.Module


@dataclass(frozen=True)
class ServedModel:
    family: Family
    layers: tuple[Layer, ...]
    layout: ModelLayout
    patch: Any  # the diffusion model's patch size: int, or one per patched latent dim

    @property
    def granularity(self) -> Granularity:
        return self.layout.granularity

    def image_tokens(self, latent_shape: Sequence[int]) -> int:
        return patched_tokens(latent_shape, self.patch)

    def output_width(self) -> int:
        """An upper bound on the channels of any module output the served blocks give: their widest linear layer
        (a module's output is a linear's output, or the input of one; exact for most blocks, 1.75x for Flux's fused
        single blocks). Sketched profiling stores a fixed number of dims per token, so it only matters there."""
        widths = [
            max(m.in_features, m.out_features)
            for layer in self.layers
            for m in layer.block.modules()
            if isinstance(m, torch.nn.Linear)
        ]
        return max(widths, default=1)


def serve(diffusion_model: torch.nn.Module, granularity: Granularity = Granularity.MODULE) -> ServedModel:
    """The blocks of ``diffusion_model`` in execution order, at ``granularity`` (a family whose blocks have no module
    program is served at block granularity)."""
    family = family_for(diffusion_model)
    layers: list[Layer] = []
    for spec in family.blocks:
        blocks = cast(torch.nn.ModuleList, diffusion_model.get_submodule(spec.blocks))  # may be a dotted path
        layers.extend(Layer(BlockRef(spec.kind, i), spec, f"{spec.blocks}.{i}", b) for i, b in enumerate(blocks))
    modules = family.modules
    if granularity is Granularity.BLOCK or not modules:
        layout = ModelLayout(tuple(layer.ref for layer in layers), BLOCK_MODULES, Granularity.BLOCK)
    else:
        layout = ModelLayout(tuple(layer.ref for layer in layers), modules, Granularity.MODULE)
    return ServedModel(family, tuple(layers), layout, patch_of(diffusion_model, family.patch))


def patch_of(diffusion_model: torch.nn.Module, patch: str | tuple[str, ...]) -> int | tuple[int, ...]:
    """The patch size ``Family.patch`` names on ``diffusion_model`` (1 where an attribute is missing): an int, or one
    size per patched latent dim, so that 5-D video latents count their frames too (``spec.patched_tokens``)."""
    if isinstance(patch, tuple):
        return tuple(int(_attribute(diffusion_model, path)) for path in patch)
    value = _attribute(diffusion_model, patch)
    return tuple(int(v) for v in value) if isinstance(value, list | tuple) else int(value)


def _attribute(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return 1
    return obj
