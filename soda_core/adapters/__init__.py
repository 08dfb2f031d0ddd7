"""Model adapters: each supported DiT family described as data (see ``base.ModelAdapter``).

Adding a family: write its block programs next to ``flux.py`` (each re-expresses one block kind from the block's
own submodules), describe the family in a ``ModelAdapter`` record, add it to ``ADAPTERS``, record the sha256 of the
block forwards it mirrors in ``known_block_sources``, and add the bit-exactness test to
``tests/integration/test_adapters.py``.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import torch

from ..layout import BlockRef, ModelLayout
from .base import BlockProgram, BlockStep, Granularity, ModelAdapter, ModuleCosts
from .flux import FLUX


ADAPTERS: tuple[ModelAdapter, ...] = (FLUX,)

__all__ = [
    "ADAPTERS",
    "BlockProgram",
    "BlockStep",
    "Granularity",
    "ModelAdapter",
    "ModuleCosts",
    "adapter_for",
    "model_layout",
    "source_fingerprint",
]


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def adapter_for(model: Any) -> ModelAdapter:
    """The adapter registered for ``type(model)`` (exact class, no prefix matching)."""
    name = qualified_name(type(model))
    for adapter in ADAPTERS:
        if name in adapter.model_classes:
            return adapter
    supported = ", ".join(c for a in ADAPTERS for c in a.model_classes)
    raise ValueError(f"SODA has no adapter for the diffusion model class {name}. Supported: {supported}.")


def source_fingerprint(fn: Callable[..., Any]) -> str:
    """sha256 of a function's dedented source: tells whether a block's forward is the one a program mirrors."""
    return hashlib.sha256(textwrap.dedent(inspect.getsource(fn)).encode()).hexdigest()


def check_block_source(adapter: ModelAdapter, block_cls: type[torch.nn.Module], comfy_version: str) -> None:
    """Refuse to run a program whose block forward has changed since it was written and tested."""
    name = qualified_name(block_cls)
    known = adapter.known_block_sources.get(name)
    if known is None:
        raise ValueError(f"SODA's {adapter.name} adapter does not know the block class {name}.")
    fingerprint = source_fingerprint(block_cls.forward)
    if fingerprint not in known:
        raise RuntimeError(
            f"SODA: {name}.forward in ComfyUI {comfy_version} differs from the versions SODA's {adapter.name} "
            f"adapter re-expresses (fingerprint {fingerprint[:12]}). Module-level caching would not be exact. "
            "Update comfyui-soda, or report the ComfyUI version at the pack's issue tracker."
        )


def model_layout(
    adapter: ModelAdapter, diffusion_model: torch.nn.Module, granularity: Granularity = Granularity.MODULE
) -> ModelLayout:
    """The blocks of ``diffusion_model`` in execution order, keyed as ComfyUI's ``patches_replace["dit"]``."""
    blocks = [
        BlockRef(kind, index)
        for attribute, kind in adapter.block_lists
        for index in range(len(getattr(diffusion_model, attribute)))
    ]
    return ModelLayout(tuple(blocks), adapter.modules_for(granularity))
