"""One block call as SODA runs it: the call ComfyUI made (``BlockCall``) and what the plan wants from it
(``BlockStep``: per-module ratios, the cache it reads and fills, what to record and observe).

Module outputs are kept per stream, ``cache[module][stream]`` of shape (B, N_s, C); a module's joint token order is
its streams in the order its record lists them (``spec.Module.streams``).
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..accounting import FlopMeter
from ..tokens import TokenLayout, TokenScore, recompute_positions, token_count, token_scores
from .spec import AUTO, BlockSpec, References, Role


Tensor = torch.Tensor
# (module name, module output (B, N, C) in joint token order, per-token scores (B, N), its token layout)
Observer = Callable[[str, Tensor, Tensor, TokenLayout], None]
Cache = dict[str, dict[str, Tensor]]  # module -> stream -> output (B, N_s, C)


@functools.cache
def _signature(function: Callable[..., Any], positional: tuple[str, ...] = ()) -> inspect.Signature:
    """``function``'s signature; with ``positional``, its ``*args`` gets those names first (``BlockSpec.positional``:
    a wrapper ``forward(*args, **kwargs)`` such as SD3's ``JointBlock``, whose streams are positional)."""
    signature = inspect.signature(function)
    if not positional:
        return signature
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            parameters.extend(inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in positional)
        parameters.append(parameter)
    return signature.replace(parameters=parameters)


@dataclass
class BlockCall:
    """A call of a block's own forward, with its token streams named by the block's spec."""

    spec: BlockSpec
    forward: Callable[..., Any]  # the block's own (class) forward, bound to the block
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    _inputs: dict[str, Tensor] | None = field(default=None, repr=False)

    def run(self) -> Any:
        return self.forward(*self.args, **self.kwargs)

    def _bound(self) -> inspect.BoundArguments:
        """The call's arguments by parameter name, ``self`` included (the signature is read once per class)."""
        function = getattr(self.forward, "__func__", self.forward)
        owner = getattr(self.forward, "__self__", None)
        head = (owner,) if owner is not None else ()
        return _signature(function, self.spec.positional).bind(*head, *self.args, **self.kwargs)

    def inputs(self) -> dict[str, Tensor]:
        """The stream tensors passed to the call, by stream name (streams not passed are absent). A discovered
        block (``returns == (AUTO,)``) has every tensor argument as a stream."""
        if self._inputs is None:
            arguments = self._bound().arguments
            names = arguments if self.spec.returns == (AUTO,) else self.spec.streams
            self._inputs = {n: arguments[n] for n in names if torch.is_tensor(arguments.get(n))}
        return self._inputs

    def outputs(self, out: Any) -> dict[str, Tensor]:
        """The stream tensors the call returned, by stream name (``None`` outputs are absent). A discovered block's
        outputs are named, in order, after a not yet matched tensor argument of the same shape: of several, the
        nearest (a block's output stays near its own input: ``x + f(x)``)."""
        if self.spec.returns == (AUTO,):
            return self._matched(out)
        values = (out,) if len(self.spec.returns) == 1 and torch.is_tensor(out) else tuple(out)
        return {name: v for name, v in zip(self.spec.returns, values, strict=True) if v is not None}

    def rebuild(self, streams: dict[str, Tensor]) -> Any:
        """A return value shaped like the block's own (a tensor, or a tuple in ``returns`` order; a discovered
        block's in the order its outputs were matched)."""
        values: tuple[Tensor | None, ...]
        if self.spec.returns == (AUTO,):
            values = tuple(streams.values())
        else:
            values = tuple(streams.get(name) for name in self.spec.returns)
        return values[0] if len(values) == 1 else values

    def _matched(self, out: Any) -> dict[str, Tensor]:
        values = (out,) if torch.is_tensor(out) else tuple(out)
        free = dict(self.inputs())
        matched: dict[str, Tensor] = {}
        for i, value in enumerate(values):
            same = [n for n, x in free.items() if torch.is_tensor(value) and x.shape == value.shape]
            if len(same) > 1:  # streams of one shape (as many text as image tokens): the nearest input
                same.sort(key=lambda n: float((value - free[n]).detach().float().norm()))
            name = same[0] if same else None
            if name is None:
                matched[f"#{i}"] = value  # an output with no input of its shape: no residual
                continue
            matched[name] = value
            del free[name]
        return matched

    def with_streams(self, streams: dict[str, Tensor]) -> BlockCall:
        """The same call with some stream tensors replaced."""
        bound = self._bound()
        for name, value in streams.items():
            bound.arguments[name] = value
        args = tuple(bound.args)[1:] if getattr(self.forward, "__self__", None) is not None else tuple(bound.args)
        return BlockCall(self.spec, self.forward, args, dict(bound.kwargs))

    def cloned(self) -> BlockCall:
        """The same call on copies of its stream tensors (ComfyUI's blocks update them in place)."""
        return self.with_streams({name: t.clone() for name, t in self.inputs().items()})


def stream_layouts(call: BlockCall, image: int, text: int) -> dict[str, TokenLayout]:
    """Token layout of each input stream of a call: ``image`` image tokens (from the latent), ``text`` text tokens
    (of the call's text stream), the rest of an image stream being reference tokens, placed as the block's spec says
    (``spec.References``; mixed in among the image tokens, none of them can be pruned)."""
    layouts: dict[str, TokenLayout] = {}
    references = call.spec.references
    for name, tensor in call.inputs().items():
        if tensor.dim() < 3:
            continue  # not a token sequence
        n, role = token_count(tensor), call.spec.streams.get(name, Role.IMAGE)
        if role is Role.TEXT:
            layouts[name] = TokenLayout(text=n, image=0)
            continue
        if role is Role.REFERENCE:
            layouts[name] = TokenLayout(text=0, image=0, reference=n)
            continue
        t = 0 if role is Role.IMAGE else min(text, n)
        i = min(image, n - t)
        if references is References.MIXED and n - t - i > 0:
            i = 0
        layouts[name] = TokenLayout(
            text=t,
            image=i,
            reference=n - t - i,
            image_first=role is Role.JOINT_IMAGE_FIRST,
            reference_first=references is References.BEFORE or role is Role.JOINT_REFERENCE_FIRST,
        )
    return layouts


def joint_layout(parts: Sequence[TokenLayout]) -> TokenLayout:
    """The layout of streams concatenated in order (at most one of them holds image tokens)."""
    text = sum(p.text for p in parts)
    image = sum(p.image for p in parts)
    reference = sum(p.reference for p in parts)
    first_image = next((i for i, p in enumerate(parts) if p.image), None)
    first_text = next((i for i, p in enumerate(parts) if p.text and not p.image), None)
    image_first = first_image is not None and (
        parts[first_image].image_first or (first_text is not None and first_image < first_text)
    )
    first_reference = next((i for i, p in enumerate(parts) if p.reference and not p.image), None)
    reference_first = first_image is not None and (
        parts[first_image].reference_first or (first_reference is not None and first_reference < first_image)
    )
    return TokenLayout(
        text=text, image=image, reference=reference, image_first=image_first, reference_first=reference_first
    )


@dataclass
class BlockStep:
    """What the plan wants from one block call, and the working state its program keeps during the call."""

    layer: int
    ratios: dict[str, float]  # module -> 1 full, 0 reuse, (0, 1) share of image tokens recomputed
    cache: Cache
    tokens: dict[str, TokenLayout]  # input stream -> its token layout in this call
    record: bool = False  # fill the cache with this call's outputs
    observe: Observer | None = None
    score: TokenScore = TokenScore.MEAN
    groups: int = 1  # CFG chunks in the batch: rows of one sample share their recomputed tokens
    meter: FlopMeter | None = None
    fresh: Cache = field(default_factory=dict)  # outputs computed in this call
    scores: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # module -> stream -> (B, N_s)
    positions: dict[str, Tensor] = field(default_factory=dict)  # module -> (B, n) joint positions recomputed
    calls: Counter[str] = field(default_factory=Counter)  # tap -> times called (behavioural check)
    open: list[str] = field(default_factory=list)  # modules whose input linears ran and outputs not yet
    running: list[str] = field(default_factory=list)  # modules whose output submodule is running

    def layout_of(self, streams: Sequence[str]) -> TokenLayout:
        return joint_layout([self.tokens[s] for s in streams if s in self.tokens])

    def cached(self, module: str, stream: str) -> Tensor:
        found = self.cache.get(module, {}).get(stream)
        if found is None:
            raise RuntimeError(
                f"SODA: module {module!r} (stream {stream!r}) is planned for reuse but nothing is cached for it; the "
                "step that should have filled the cache did not run in this sampling run."
            )
        return found

    def note_scores(self, module: str, stream: str, module_input: Tensor) -> None:
        """Keep the token scores of a module's input on a stream (the first seen wins)."""
        if stream in self.tokens and stream not in self.scores.setdefault(module, {}):
            self.scores[module][stream] = token_scores(module_input, self.score, self.groups)  # (B, N_s)

    def joint_scores(self, module: str, streams: Sequence[str], rows: int) -> Tensor:
        """Scores in the module's joint order (B, N): zeros on streams without image tokens, whose tokens always
        stay, and wherever no input was seen."""
        parts = []
        for s in streams:
            if s not in self.tokens:
                continue
            kept = self.scores.get(module, {}).get(s)
            parts.append(kept if kept is not None else torch.zeros(rows, self.tokens[s].total))
        device = next((p.device for p in parts if p.device.type != "cpu"), torch.device("cpu"))
        return torch.cat([p.to(device) for p in parts], dim=1)  # (B, N)

    def joint_positions(self, module: str, streams: Sequence[str], ratio: float) -> Tensor:
        """Each row's recomputed positions in the module's joint order (B, n), from its image stream's scores."""
        if module not in self.positions:
            seen = next(iter(self.scores.get(module, {}).values()), None)
            if seen is None:
                raise RuntimeError(f"SODA: no input of module {module!r} was seen before its tokens were chosen.")
            scores = self.joint_scores(module, streams, int(seen.shape[0]))  # (B, N)
            self.positions[module] = recompute_positions(scores, self.layout_of(streams), ratio)
        return self.positions[module]

    def stream_positions(self, module: str, streams: Sequence[str], stream: str, ratio: float) -> Tensor | None:
        """The module's recomputed positions that fall in ``stream``, relative to it (B, n_s); None: all of them."""
        if self.tokens[stream].image == 0:
            return None  # a stream without image tokens is always recomputed whole
        offset = 0
        for s in streams:
            if s == stream:
                break
            offset += self.tokens[s].total if s in self.tokens else 0
        joint = self.joint_positions(module, streams, ratio)  # (B, n)
        inside = (joint >= offset) & (joint < offset + self.tokens[stream].total)
        return joint[inside].view(joint.shape[0], -1) - offset  # (B, n_s)
