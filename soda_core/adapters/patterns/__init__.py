"""Block programs: how SODA runs one call of a block at the ratios the plan sets (see ``..spec`` for the patterns).

A program lists the block's submodules it intercepts (``taps``, paths relative to the block) and handles their
calls (``tap``) and the attention calls between them (``attention``) while the block runs its own forward
(``run``). ``effective`` says what it really computes for planned ratios (a module that cannot recompute selected
tokens computes them all), so FLOPs are counted from what ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..spec import BlockSpec, Fused, Submodules
from ..step import BlockCall, BlockStep
from .attention import AttentionCall
from .fused import FusedProgram
from .residual import ResidualProgram
from .submodules import SubmoduleProgram


__all__ = ["AttentionCall", "BlockProgram", "FusedProgram", "ResidualProgram", "SubmoduleProgram", "program_for"]


class BlockProgram(Protocol):
    @property
    def modules(self) -> tuple[str, ...]: ...

    @property
    def taps(self) -> tuple[tuple[str, bool], ...]: ...  # (path relative to the block, optional)

    @property
    def partial(self) -> frozenset[str]: ...  # modules that can recompute selected tokens only

    def effective(self, ratios: dict[str, float]) -> dict[str, float]: ...

    def fits(self, step: BlockStep, call: BlockCall) -> bool: ...

    def run(self, step: BlockStep, call: BlockCall) -> Any: ...

    def tap(
        self,
        step: BlockStep,
        index: int,
        original: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any: ...

    def attention(self, step: BlockStep, call: AttentionCall) -> Any: ...


def program_for(spec: BlockSpec, module_granularity: bool) -> BlockProgram:
    """The program of a block kind: its module program, or block granularity."""
    program = spec.program
    if not module_granularity or program is None:
        return ResidualProgram(spec)
    if isinstance(program, Submodules):
        return SubmoduleProgram(program)
    if isinstance(program, Fused):
        return FusedProgram(program)
    raise TypeError(f"SODA: unknown block program {type(program).__name__} for {spec.kind}.")
