"""Diffusion models without a record: their blocks are found and served at block granularity.

A block list is a ``ModuleList`` child of the diffusion model whose entries are all of one class and hold linear
layers. A block's streams are its tensor arguments; each output is matched to the first argument of its shape
(``step.AUTO``). The behavioural check then decides, on the first real call, whether the block can be served (its
outputs keep the shapes of its inputs) or runs as ComfyUI runs it.
"""

from __future__ import annotations

import torch

from .spec import AUTO, BlockSpec, Family


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_block_list(child: torch.nn.Module) -> bool:
    if not isinstance(child, torch.nn.ModuleList) or len(child) == 0:
        return False
    if len({type(block) for block in child}) != 1:
        return False
    return any(isinstance(m, torch.nn.Linear) for m in child[0].modules())


def discover(diffusion_model: torch.nn.Module) -> Family:
    name = _qualified(type(diffusion_model))
    specs = tuple(
        BlockSpec(kind=attribute, blocks=attribute, streams={}, returns=(AUTO,))
        for attribute, child in diffusion_model.named_children()
        if is_block_list(child)
    )
    listed = ", ".join(
        f"{s.blocks} ({len(getattr(diffusion_model, s.blocks))} x {_block_class(diffusion_model, s)})" for s in specs
    )
    note = (
        f"SODA has no record for {name}; its block lists {listed or '(none found)'} are served at block granularity "
        "(whole blocks reused, no token pruning)."
    )
    return Family(
        name=f"discovered:{type(diffusion_model).__name__}", model_classes=(name,), blocks=specs, notes=(note,)
    )


def _block_class(model: torch.nn.Module, spec: BlockSpec) -> str:
    return type(getattr(model, spec.blocks)[0]).__name__
