"""Diffusion models without a record: their blocks are found and served at block granularity.

A block list is a ``ModuleList`` whose entries are all of one class, hold linear layers and call an attention
function (a transformer block attends; lists of embedders, projectors, rotary-embedding predictors or per-pixel MLP
heads do not, and SODA must not cache them as blocks). The lists are searched from the diffusion model down: the
shallowest depth holding any block list is served (Flux's ``double_blocks`` at depth 1, Stable Audio's
``transformer.layers`` at depth 2), so the blocks of sub-models inside a found block are never served twice. When no
list calls an attention SODA can recognise, the lists holding linear layers are served as before.

A block's streams are its tensor arguments; each output is matched to the first argument of its shape
(``step.AUTO``). The behavioural check then decides, on the first real call, whether the block can be served (its
outputs keep the shapes of its inputs) or runs as ComfyUI runs it.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import cast

import torch

from .spec import AUTO, BlockSpec, Family


MAX_DEPTH = 3  # module levels searched below the diffusion model


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _holds_linears(child: torch.nn.ModuleList) -> bool:
    if len(child) == 0:
        return False
    if len({type(block) for block in child}) != 1:
        return False
    return any(isinstance(m, torch.nn.Linear) for m in child[0].modules())


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """A function's code and the code of the functions defined inside it."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _names_attention(function: types.FunctionType) -> bool:
    """Whether a function calls an attention: a global function whose name says so (ComfyUI's
    ``optimized_attention*``, Flux's ``attention``, a family's own wrapper), or torch's
    ``scaled_dot_product_attention``."""
    for code in _codes(function.__code__):
        for name in code.co_names:
            if name == "scaled_dot_product_attention":
                return True
            value = function.__globals__.get(name)
            if isinstance(value, types.FunctionType) and "attention" in value.__name__.lower():
                return True
    return False


def _helpers(module: torch.nn.Module) -> Iterator[type]:
    """Classes of the plain objects a module holds besides submodules and tensors (diffusers-style attention
    processors, as ACE-Step's ``attn.processor``)."""
    for value in vars(module).values():
        cls = type(value)
        if not cls.__module__.startswith(("builtins", "torch")) and not isinstance(value, torch.nn.Module):
            yield cls


def calls_attention(module: torch.nn.Module) -> bool:
    """Whether the methods of ``module``, of one of its submodules or of their helper objects call an attention
    function."""
    seen: set[type] = set()
    for sub in module.modules():
        for cls in (cls for owner in (type(sub), *_helpers(sub)) for cls in owner.__mro__):
            if cls in seen or cls is torch.nn.Module or cls is object:
                continue
            seen.add(cls)
            for value in vars(cls).values():
                function = getattr(value, "__func__", value)
                if isinstance(function, types.FunctionType) and _names_attention(function):
                    return True
    return False


def _lists(model: torch.nn.Module) -> Iterator[tuple[int, str, torch.nn.ModuleList]]:
    """(depth, dotted path, module) of every ``ModuleList`` below ``model`` down to ``MAX_DEPTH``, breadth first;
    the entries of a list are not searched (they are blocks, or what a block is made of)."""
    level: list[tuple[str, torch.nn.Module]] = [("", model)]
    for depth in range(1, MAX_DEPTH + 1):
        below: list[tuple[str, torch.nn.Module]] = []
        for prefix, parent in level:
            for name, child in parent.named_children():
                path = f"{prefix}{name}"
                if isinstance(child, torch.nn.ModuleList):
                    yield depth, path, child
                else:
                    below.append((f"{path}.", child))
        level = below


def block_lists(model: torch.nn.Module) -> list[str]:
    """Dotted paths of the block lists SODA serves in ``model`` (see the module docstring)."""
    found = [(depth, path, child) for depth, path, child in _lists(model) if _holds_linears(child)]
    attending = [entry for entry in found if calls_attention(entry[2][0])]
    chosen = attending or found
    if not chosen:
        return []
    shallowest = min(depth for depth, _, _ in chosen)
    return [path for depth, path, _ in chosen if depth == shallowest]


_SPECS: dict[tuple[str, str], BlockSpec] = {}


def _spec(model_class: str, path: str) -> BlockSpec:
    """One spec object per (model class, list) in a process: verdicts of the behavioural check are kept per spec."""
    return _SPECS.setdefault((model_class, path), BlockSpec(kind=path, blocks=path, streams={}, returns=(AUTO,)))


def discover(diffusion_model: torch.nn.Module) -> Family:
    name = _qualified(type(diffusion_model))
    specs = tuple(_spec(name, path) for path in block_lists(diffusion_model))
    listed = ", ".join(
        f"{s.blocks} ({len(_list(diffusion_model, s))} x {type(_list(diffusion_model, s)[0]).__name__})" for s in specs
    )
    note = (
        f"SODA has no record for {name}; its block lists {listed or '(none found)'} are served at block granularity "
        "(whole blocks reused, no token pruning)."
    )
    return Family(
        name=f"discovered:{type(diffusion_model).__name__}", model_classes=(name,), blocks=specs, notes=(note,)
    )


def _list(model: torch.nn.Module, spec: BlockSpec) -> torch.nn.ModuleList:
    return cast(torch.nn.ModuleList, model.get_submodule(spec.blocks))
