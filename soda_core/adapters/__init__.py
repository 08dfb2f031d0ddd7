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


__all__ = ["FAMILIES", "Family", "Layer", "ServedModel", "family_for", "qualified_name", "serve"]


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def family_for(diffusion_model: torch.nn.Module) -> Family:
    """The record of ``type(diffusion_model)`` (exact class), else a block-granularity family found by discovery."""
    name = qualified_name(type(diffusion_model))
    for family in FAMILIES:
        if name in family.model_classes:
            return family
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
    patch = getattr(diffusion_model, family.patch, 1)
    return ServedModel(family, tuple(layers), layout, tuple(patch) if isinstance(patch, list | tuple) else patch)
