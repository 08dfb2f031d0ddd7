"""Pattern 2: a single-stream block with fused linears (Flux single, Chroma, HunyuanVideo single blocks)::

    [q, k, v | u] = linear1(x_mod)        A = Attn(q, k, v)        out = linear2([A | act(u)])     x += gate * out

The two modules are the attention output ``A`` and the MLP activation ``act(u)`` (the halves of linear2's input);
their outputs can only be told apart there, without touching the weights (which may be quantised). The cache keeps
``A`` and the block's update ``out``:

* both reused: linear1 and the attention return zeros, linear2 returns the cached ``out``;
* attention reused, MLP computed (all or selected tokens): linear1 and linear2 run on those tokens, linear2 with the
  cached ``A`` in its attention columns, and the rows are written into the cached ``out``;
* attention computed: everything is computed (linear1 and linear2 run for the MLP anyway).

FLOPs: the attention call is the ``attn`` module's, both linears the ``mlp`` module's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...tokens import gather_tokens, scatter_tokens
from ..spec import Fused
from ..step import BlockCall, BlockStep
from .attention import AttentionCall
from .submodules import first_tensor


Tensor = torch.Tensor
OUT = "fused_out"  # cache entry of the block's update (not a module)


class FusedProgram:
    def __init__(self, spec: Fused) -> None:
        self.spec = spec
        self.modules = spec.names
        self.attn, self.mlp = spec.names
        self.taps = ((spec.linear1, False), (spec.linear2, False))
        self.partial = frozenset({self.mlp})
        self.owners = {OUT: self.mlp}  # the cached update is served as the MLP's output (compensation)

    def effective(self, ratios: dict[str, float]) -> dict[str, float]:
        if ratios[self.attn] > 0.0:
            return {self.attn: 1.0, self.mlp: 1.0}
        return {self.attn: 0.0, self.mlp: ratios[self.mlp]}

    def fits(self, step: BlockStep, call: BlockCall) -> bool:
        if step.ratios[self.attn] >= 1.0:
            return True
        x = call.inputs().get(self.spec.stream)
        needed = [self.attn] if step.ratios[self.mlp] >= 1.0 else [self.attn, OUT]
        if step.ratios[self.mlp] <= 0.0:
            needed = [OUT]
        for entry in needed:
            cached = step.cache.get(entry, {}).get(self.spec.stream)
            if x is None or cached is None or cached.shape[:2] != x.shape[:2]:
                return False
        return True

    def run(self, step: BlockStep, call: BlockCall) -> Any:
        out = call.run()
        fresh, stream = step.fresh, self.spec.stream
        if step.ratios[self.attn] >= 1.0 and OUT in fresh:
            if step.record:
                step.cache[self.attn], step.cache[OUT] = fresh[self.attn], fresh[OUT]
            if step.observe is not None:
                layout = step.layout_of((stream,))
                attention = fresh[self.attn][stream]  # (B, N, C)
                scores = step.joint_scores(self.attn, (stream,), attention.shape[0])
                step.observe(self.attn, attention, scores, layout)
                step.observe(self.mlp, fresh[self.mlp][stream], scores, layout)
        return out

    def tap(
        self,
        step: BlockStep,
        index: int,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        step.calls[self.taps[index][0]] += 1
        linear = self._linear1 if index == 0 else self._linear2
        return linear(step, original, args, kwargs)

    def attention(self, step: BlockStep, call: AttentionCall) -> Any:
        step.calls[f"attention:{self.attn}"] += 1
        if step.ratios[self.attn] <= 0.0:
            return call.zeros()
        if step.meter is not None:
            step.meter.enter(self.attn, 0.0)
        out = call.run()
        if step.meter is not None:
            step.meter.exit(at_least=call.flops())
        return out

    # ------------------------------------------------------------------ taps

    def _share(self, step: BlockStep) -> float:
        layout = step.tokens[self.spec.stream]
        return layout.image / max(layout.total, 1)

    def _call(self, step: BlockStep, original: Callable[..., Any], x: Tensor) -> Tensor:
        if step.meter is not None:
            step.meter.enter(self.mlp, self._share(step))
        out: Tensor = original(x)
        if step.meter is not None:
            step.meter.exit()
        return out

    def _positions(self, step: BlockStep) -> Tensor | None:
        stream = self.spec.stream
        return step.stream_positions(self.mlp, (stream,), stream, step.ratios[self.mlp])

    def _linear1(
        self, step: BlockStep, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Tensor:
        x = first_tensor(args, kwargs)  # (B, N, C) the modulated stream
        step.note_scores(self.attn, self.spec.stream, x)
        step.note_scores(self.mlp, self.spec.stream, x)
        reuse_attention, ratio = step.ratios[self.attn] <= 0.0, step.ratios[self.mlp]
        if reuse_attention and ratio <= 0.0:
            return x.new_zeros(*x.shape[:-1], int(original.__self__.out_features))  # type: ignore[attr-defined]
        positions = self._positions(step) if reuse_attention and ratio < 1.0 else None
        if positions is None:
            return self._call(step, original, x)  # (B, N, 3C + M)
        rows = self._call(step, original, gather_tokens(x, positions))  # (B, n, 3C + M)
        return scatter_tokens(x.new_zeros(*x.shape[:-1], rows.shape[-1]), positions, rows)  # other rows unused

    def _linear2(
        self, step: BlockStep, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Tensor:
        x = first_tensor(args, kwargs)  # (B, N, C + M2): [attention output | mlp activation]
        width, stream = int(original.__self__.out_features), self.spec.stream  # type: ignore[attr-defined]
        reuse_attention, ratio = step.ratios[self.attn] <= 0.0, step.ratios[self.mlp]
        if reuse_attention and ratio <= 0.0:
            return step.cached(OUT, stream).clone()
        if not reuse_attention:
            out = self._call(step, original, x)  # (B, N, C)
            if step.record or step.observe is not None:
                step.fresh[self.attn] = {stream: x[..., :width].clone()}
                step.fresh[OUT] = {stream: out.clone()}  # the block may update ``out`` in place
                if step.observe is not None:
                    step.fresh[self.mlp] = {stream: x[..., width:].clone()}
            return out
        attention = step.cached(self.attn, stream)  # (B, N, C)
        positions = self._positions(step) if ratio < 1.0 else None
        if positions is None:
            return self._call(step, original, torch.cat([attention, x[..., width:]], dim=-1))
        rows = torch.cat([gather_tokens(attention, positions), gather_tokens(x[..., width:], positions)], dim=-1)
        return scatter_tokens(step.cached(OUT, stream), positions, self._call(step, original, rows)).clone()
