"""Pattern 1: each module's output is the output of one of the block's submodules per stream (``spec.Out``),
optionally fed by input linears used by nothing else (``spec.In``, e.g. qkv projections).

While the block runs its own forward, a call of a module's submodule is served as the plan says:

* full: computed as usual (and copied into the cache on recording steps);
* reuse: the output submodule returns its cached output instead of computing; the input linears return zeros and
  the attention call between them (``attention``) returns zeros, so none of the module's FLOPs are spent;
* partial (token-wise outputs): the output submodule runs on the selected tokens only and its rows are written into
  the cached output; with input linears, only the selected queries attend (to every key and value). An attention
  call over a prefix of the module's queries that holds every image token (Mochi leaves out the text padding)
  recomputes the selected queries it has; a call over another part (LTXV's guide mask splits the queries) runs in
  full.

Cached and returned outputs are copies: blocks may update a submodule's output in place (Flux's ``apply_mod`` with
``modulation_dims`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...tokens import as_tokens, gather_tokens, scatter_tokens, token_count
from ..spec import In, Module, Out, Submodules
from ..step import BlockCall, BlockStep
from .attention import AttentionCall


Tensor = torch.Tensor


def first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    """The tensor a submodule call acts on: its first tensor argument."""
    for value in (*args, *kwargs.values()):
        if torch.is_tensor(value):
            return value
    raise RuntimeError("SODA: an intercepted submodule was called without a tensor argument.")


def same_tokens(a: Tensor, b: Tensor) -> bool:
    """Same batch and token count (a module output may hold a stream's tokens in another shape, e.g. (B, N, C) for a
    (B, T, H, W, C) stream)."""
    return a.shape[0] == b.shape[0] and token_count(a) == token_count(b)


def _replace_first(args: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    for i, value in enumerate(args):
        if torch.is_tensor(value):
            return (*args[:i], x, *args[i + 1 :]), kwargs
    for key, value in kwargs.items():
        if torch.is_tensor(value):
            return args, {**kwargs, key: x}
    return args, kwargs


def _returned(role: Out, outputs: tuple[Tensor, ...]) -> Any:
    """Outputs served in place of ``role``'s submodule, shaped as it returns them (a tensor, a tuple per stream, or
    a 1-tuple for a ``packed`` one)."""
    return outputs[0] if len(outputs) == 1 and not role.packed else outputs


def joint_tokens(parts: list[Tensor]) -> Tensor:
    """Per-stream outputs (B, N_s, C_s) concatenated along tokens (B, N, C); a narrower stream (Mochi's text, 1536
    wide beside 3072) is zero-padded to the widest, which adds nothing to an output's norm or to any difference."""
    width = max(p.shape[-1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[-1])) for p in parts], dim=1)


def _within(positions: Tensor, tokens: int) -> Tensor:
    """The joint positions (B, n) that a call over the first ``tokens`` queries holds (every row drops the same
    trailing text positions: they are recomputed for all rows or none)."""
    if positions.numel() == 0 or int(positions.max()) < tokens:
        return positions
    return positions[positions < tokens].view(positions.shape[0], -1)


class SubmoduleProgram:
    def __init__(self, spec: Submodules) -> None:
        self.spec = spec
        self.modules = spec.names
        roles: list[tuple[Module, In | Out]] = [(m, r) for m in spec.modules for r in (*m.inputs, *m.outputs)]  # type: ignore[misc]
        self._roles = tuple(roles)
        self.taps = tuple((role.path, role.optional) for _, role in roles)
        self.partial = frozenset(m.name for m in spec.modules if m.partial)
        self._by_name = {m.name: m for m in spec.modules}

    def effective(self, ratios: dict[str, float]) -> dict[str, float]:
        return {m: (1.0 if 0.0 < r < 1.0 and m not in self.partial else r) for m, r in ratios.items()}

    def fits(self, step: BlockStep, call: BlockCall) -> bool:
        inputs = call.inputs()
        for module, ratio in step.ratios.items():
            if ratio >= 1.0:
                continue
            cached = step.cache.get(module)
            if cached is None or any(s not in inputs or not same_tokens(t, inputs[s]) for s, t in cached.items()):
                return False
        return True

    def run(self, step: BlockStep, call: BlockCall) -> Any:
        out = call.run()  # the block's own forward; the taps act through ``step``
        for module in self.spec.modules:
            if step.ratios[module.name] <= 0.0:
                continue
            if step.record and not any(step.calls[out.path] for out in module.outputs):
                step.cache[module.name] = {}  # a module this block does not have (optional outputs): nothing to serve
                continue
            fresh = step.fresh.get(module.name)
            if not fresh:
                continue
            if step.record:
                step.cache[module.name] = fresh
            if step.observe is not None:
                streams = [s for s in module.streams if s in fresh]
                output = joint_tokens([as_tokens(fresh[s]) for s in streams])  # (B, N, C) in joint order
                scores = step.joint_scores(module.name, streams, output.shape[0])
                step.observe(module.name, output, scores, step.layout_of(streams))
        return out

    def tap(
        self,
        step: BlockStep,
        index: int,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        module, role = self._roles[index]
        step.calls[role.path] += 1
        if isinstance(role, In):
            return self._input(step, module, role, original, args, kwargs)
        return self._output(step, module, role, original, args, kwargs)

    def attention(self, step: BlockStep, call: AttentionCall) -> Any:
        owner = self._attention_owner(step, call.query_tokens)
        if owner is None:  # an attention call of no module (e.g. of a submodule SODA does not serve)
            return call.run()
        ratio = step.ratios[owner.name]
        step.calls[f"attention:{owner.name}"] += 1
        if ratio <= 0.0:
            return call.zeros()
        if step.meter is not None:
            layout = step.layout_of(owner.streams)
            share = layout.image / max(layout.total, 1) if owner.name in self.partial and owner.inputs else 0.0
            step.meter.enter(owner.name, share)
        layout = step.layout_of(owner.streams)
        # the call's queries hold every image token: all of the module's (or a prefix without trailing text padding,
        # as Mochi attends); a call over another part (LTXV's guide mask splits noisy and guide queries) runs in full
        covers = layout.image_start + layout.image <= call.query_tokens <= layout.total
        if ratio < 1.0 and owner.inputs and owner.name in self.partial and covers:
            positions = step.joint_positions(owner.name, owner.streams, ratio)  # (B, n)
            out = call.on_queries(_within(positions, call.query_tokens))
        else:
            out = call.run()
        if step.meter is not None:
            step.meter.exit(at_least=call.flops() if ratio >= 1.0 else 0.0)
        return out

    # ------------------------------------------------------------------ taps

    def _input(
        self,
        step: BlockStep,
        module: Module,
        role: In,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if module.name not in step.open:
            step.open.append(module.name)
        x = first_tensor(args, kwargs)
        if step.ratios[module.name] <= 0.0:  # the attention it feeds is skipped too
            return x.new_zeros(*x.shape[:-1], int(original.__self__.out_features))  # type: ignore[attr-defined]
        step.note_scores(module.name, role.stream, x)
        if step.meter is not None:
            step.meter.enter(module.name, 0.0)  # keys and values of every token are needed: never shrinks
        out = original(*args, **kwargs)
        if step.meter is not None:
            step.meter.exit()
        return out

    def _output(
        self,
        step: BlockStep,
        module: Module,
        role: Out,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        name, ratio = module.name, step.ratios[module.name]
        if name in step.open:
            step.open.remove(name)
        if ratio <= 0.0:
            return _returned(role, tuple(step.cached(name, s).clone() for s in role.streams))
        x = first_tensor(args, kwargs)
        if not module.inputs:
            step.note_scores(name, role.streams[0], x)
        if ratio < 1.0 and name in self.partial:
            return _returned(role, (self._partial(step, module, role, original, args, kwargs, ratio),))
        share = self._image_share(step, role) if name in self.partial else 0.0
        if step.meter is not None:
            step.meter.enter(name, share)
        step.running.append(name)
        out = original(*args, **kwargs)
        step.running.pop()
        if step.meter is not None:
            step.meter.exit()
        if step.record or step.observe is not None:
            values = (out,) if torch.is_tensor(out) else tuple(out)
            kept = step.fresh.setdefault(name, {})
            for stream, value in zip(role.streams, values, strict=True):
                kept[stream] = value.clone()  # the block may update ``out`` in place
        return out

    def _partial(
        self,
        step: BlockStep,
        module: Module,
        role: Out,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ratio: float,
    ) -> Tensor:
        """A token-wise output on the selected tokens only, written into the cached output (updated in place)."""
        stream = role.streams[0]
        positions = step.stream_positions(module.name, module.streams, stream, ratio)  # (B, n_s) or None: all
        x = first_tensor(args, kwargs)
        if step.meter is not None:
            step.meter.enter(module.name, self._image_share(step, role))
        fresh: Tensor
        if positions is None:
            fresh = original(*args, **kwargs)  # (B, N_s, C): a stream whose tokens all stay
            step.cache.setdefault(module.name, {})[stream] = fresh.clone()
        else:
            rows_args, rows_kwargs = _replace_first(args, kwargs, gather_tokens(as_tokens(x), positions))
            cached = step.cached(module.name, stream)  # (B, N_s, C) or (B, *dims, C)
            rows = original(*rows_args, **rows_kwargs)  # (B, n_s, C)
            fresh = scatter_tokens(as_tokens(cached), positions, rows).view(cached.shape)
            step.cache[module.name][stream] = fresh  # the cached tensor itself unless its token view had to copy
        if step.meter is not None:
            step.meter.exit()
        return fresh.clone()

    @staticmethod
    def _image_share(step: BlockStep, role: Out) -> float:
        layout = step.tokens.get(role.streams[0])
        return layout.image / max(layout.total, 1) if layout is not None else 0.0

    def _attention_owner(self, step: BlockStep, tokens: int) -> Module | None:
        """The module an attention call belongs to: the one whose output submodule is running (a whole attention
        module), else of the modules whose input linears ran, the one with that many tokens (else the first)."""
        if step.running:
            return self._by_name[step.running[-1]]
        if not step.open:
            return None
        for name in step.open:
            if step.layout_of(self._by_name[name].streams).total == tokens:
                return self._by_name[name]
        return self._by_name[step.open[0]]
