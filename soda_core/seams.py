"""The callables ComfyUI's seams call into: a patched model's block ``forward``s, the ``forward``s of the block
submodules its programs intercept, and its attention override. Each hands the call to the sampling run in progress
(``RunSlot``) and is a plain pass-through when no SODA run is active, so a patched model that is sampled without
SODA, or a failed run, computes exactly as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .runtime import SodaRun


class Shared:
    """Kept by reference when ComfyUI deep-copies model options (``ModelPatcher.clone`` does): every clone of a
    patched model must reach the same run slot as the object patches it shares."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Shared:
        return self

    def __copy__(self) -> Shared:
        return self


@dataclass(eq=False)
class RunSlot(Shared):
    """The SODA run a patched model is sampling in, if any (set and cleared by the OUTER_SAMPLE wrapper)."""

    run: SodaRun | None = None


class BlockSeam(Shared):
    """Stands in for a block's ``forward``."""

    def __init__(self, slot: RunSlot, layer: int, forward: Callable[..., Any]) -> None:
        self.slot, self.layer, self.forward = slot, layer, forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = self.slot.run
        if run is None:
            return self.forward(*args, **kwargs)
        return run.run_block(self.layer, self.forward, args, kwargs)


class TapSeam(Shared):
    """Stands in for the ``forward`` of a block submodule a program intercepts (tap ``index`` of the program)."""

    def __init__(self, slot: RunSlot, layer: int, index: int, forward: Callable[..., Any]) -> None:
        self.slot, self.layer, self.index, self.forward = slot, layer, index, forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = self.slot.run
        if run is None:
            return self.forward(*args, **kwargs)
        return run.tap(self.layer, self.index, self.forward, args, kwargs)


class AttentionSeam(Shared):
    """An ``optimized_attention_override``: ``(func, *args, **kwargs)``; calls an override that was set before it."""

    def __init__(self, slot: RunSlot, previous: Callable[..., Any] | None = None) -> None:
        self.slot, self.previous = slot, previous

    def __call__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        inner = func if self.previous is None else _Chained(self.previous, func)
        run = self.slot.run
        if run is None:
            return inner(*args, **kwargs)
        return run.attention(inner, args, kwargs)


@dataclass(frozen=True)
class _Chained(Shared):
    previous: Callable[..., Any]
    func: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.previous(self.func, *args, **kwargs)
