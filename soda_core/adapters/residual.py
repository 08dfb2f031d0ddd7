"""Block granularity: a whole block is one module, ``block``, whose output is its residual per stream.

    D = out - in   (text stream first, then the image stream, as every module output is kept)
    reuse:  out = in + D_cached

The block runs through its own forward (ComfyUI's ``original_block``), so this works for any block; it cannot
recompute single tokens (joint attention mixes them), so block-granularity profiles carry no pruning error.
"""

from __future__ import annotations

from typing import Any

import torch

from ..tokens import TokenLayout
from .base import BlockProgram, BlockStep, ModuleCosts


Tensor = torch.Tensor


class ResidualBlock:
    modules: tuple[str, ...] = ("block",)

    def __init__(self, inner: BlockProgram, streams: tuple[str, ...]) -> None:
        self.inner, self.streams, self.kind = inner, streams, inner.kind

    def run(self, block: Any, args: dict[str, Any], step: BlockStep) -> dict[str, Tensor]:
        if step.original is None:
            raise RuntimeError("SODA block granularity needs the block's original forward.")
        if step.ratios["block"] <= 0.0:
            residual = step.cached("block")
            return {
                name: args[name] + part for name, part in zip(self.streams, self._split(residual, args), strict=True)
            }
        inputs = [args[name].clone() for name in self.streams]  # ComfyUI's blocks add in place
        out = step.original(args)
        residual = torch.cat([out[name] - x for name, x in zip(self.streams, inputs, strict=True)], 1)  # (B, N, C)
        if step.record:
            step.cache["block"] = residual
        if step.observe is not None:
            step.observe("block", residual, step.scores(inputs))
        return out

    def _split(self, residual: Tensor, args: dict[str, Any]) -> list[Tensor]:
        sizes = [int(args[name].shape[1]) for name in self.streams]
        return list(torch.split(residual, sizes, dim=1))

    def costs(self, block: Any, args: dict[str, Any], tokens: TokenLayout) -> ModuleCosts:
        inner = self.inner.costs(block, args, tokens)
        full = sum(inner.full.values())
        return ModuleCosts({"block": full}, {"block": full}, {"block": 0}, inner.base, 0)
