"""Block granularity: a whole block is one module, ``block``, whose output is its residual per stream::

    D_s = out_s - in_s            reuse:  out_s = in_s + D_s (cached)

The block runs through its own forward, so this serves any block whose streams keep their shape; it cannot
recompute single tokens (attention mixes them), so it has no partial recompute and profiles carry no pruning error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...layout import BLOCK_MODULES
from ...tokens import TokenLayout, as_tokens
from ..spec import BlockSpec
from ..step import BlockCall, BlockStep
from .attention import AttentionCall


Tensor = torch.Tensor
BLOCK = BLOCK_MODULES[0]


class ResidualProgram:
    modules: tuple[str, ...] = BLOCK_MODULES
    taps: tuple[tuple[str, bool], ...] = ()
    partial: frozenset[str] = frozenset()

    def __init__(self, spec: BlockSpec) -> None:
        self.spec = spec

    def effective(self, ratios: dict[str, float]) -> dict[str, float]:
        return {BLOCK: 1.0 if ratios[BLOCK] > 0.0 else 0.0}

    def fits(self, step: BlockStep, call: BlockCall) -> bool:
        if step.ratios[BLOCK] > 0.0:
            return True
        cached, inputs = step.cache.get(BLOCK, {}), call.inputs()
        return bool(cached) and all(s in inputs and t.shape == inputs[s].shape for s, t in cached.items())

    def run(self, step: BlockStep, call: BlockCall) -> Any:
        inputs = call.inputs()
        if step.ratios[BLOCK] <= 0.0:
            return call.rebuild({s: inputs[s] + d for s, d in step.cache.get(BLOCK, {}).items()})
        before = {s: t.clone() for s, t in inputs.items()} if step.record or step.observe else {}
        if step.meter is not None:
            step.meter.enter(BLOCK, 0.0)
        out = call.run()
        if step.meter is not None:
            step.meter.exit()
        if not before:
            return out
        outputs = call.outputs(out)
        # in the order the block returns them: a discovered block's reuse rebuilds its return value from this order
        residual = {s: y - before[s] for s, y in outputs.items() if s in before and y.shape == before[s].shape}
        if step.record:
            step.cache[BLOCK] = residual
        if step.observe is not None and residual:
            streams = [s for s in self.spec.streams if s in residual] if self.spec.streams else list(residual)
            for s in streams:
                step.note_scores(BLOCK, s, before[s])
            output = _joint(residual[s] for s in streams)  # (B, N, C)
            layout, scores = step.layout_of(streams), step.joint_scores(BLOCK, streams, output.shape[0])
            if output.shape[1] != layout.total:  # flattened streams of different widths: no token structure
                layout, scores = TokenLayout(text=output.shape[1], image=0), torch.zeros(output.shape[:2])
            step.observe(BLOCK, output, scores, layout)
        return out

    def tap(
        self,
        step: BlockStep,
        index: int,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        return original(*args, **kwargs)

    def attention(self, step: BlockStep, call: AttentionCall) -> Any:
        return call.run()


def _joint(parts: Any) -> Tensor:
    """Streams concatenated along tokens; streams of different widths are flattened into one row per sample."""
    parts = [as_tokens(p) for p in parts]  # (B, N_s, C_s)
    if len({p.shape[-1] for p in parts}) == 1:
        return torch.cat(parts, dim=1)  # (B, N, C)
    return torch.cat([p.flatten(1) for p in parts], dim=1).unsqueeze(1)  # (B, 1, sum N_s C_s)
