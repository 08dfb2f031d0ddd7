"""An attention module whose queries are split over several attention calls (LTXV's guide mask on ComfyUI 0.33
attends noisy and guide queries separately): on a partial step each call runs in full and the output projection
still recomputes the selected tokens only, instead of gathering positions a sub-call does not have."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from comfyui_soda.soda_core.adapters.check import check_program
from comfyui_soda.soda_core.adapters.patterns import AttentionCall, SubmoduleProgram
from comfyui_soda.soda_core.adapters.spec import BlockSpec, In, Module, Out, Role, Submodules
from comfyui_soda.soda_core.adapters.step import BlockCall, BlockStep, Cache, stream_layouts


B, N, C = 2, 10, 8
ROUTE: list[tuple[SubmoduleProgram, BlockStep]] = []  # the program and step a call is served by (the override)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **kwargs: Any) -> torch.Tensor:
    """ComfyUI's attention signature on (B, N, H*D), one head."""
    return torch.softmax(q @ k.transpose(1, 2) / C**0.5, dim=-1) @ v


def optimized_attention(*args: Any) -> torch.Tensor:
    if not ROUTE:
        return attention(*args)
    program, step = ROUTE[-1]
    return program.attention(step, AttentionCall(attention, args, {}))  # type: ignore[no-any-return]


class SplitQueries(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(C, C) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        first = optimized_attention(q[:, :4], k, v, 1)  # (B, 4, C)
        rest = optimized_attention(q[:, 4:], k, v, 1)  # (B, N - 4, C)
        return x + self.o(torch.cat([first, rest], dim=1))


SPEC = BlockSpec(
    kind="block",
    blocks="blocks",
    streams={"x": Role.IMAGE},
    returns=("x",),
    program=Submodules(
        (
            Module(
                "attn",
                outputs=(Out("o", ("x",), tokenwise=True),),
                inputs=(In("q", "x"), In("k", "x"), In("v", "x")),
            ),
        )
    ),
)


@contextmanager
def _served(block: torch.nn.Module, program: SubmoduleProgram, step: BlockStep) -> Iterator[None]:
    for index, (path, _) in enumerate(program.taps):
        sub = block.get_submodule(path)
        original = type(sub).forward.__get__(sub)

        def tap(*args: Any, _i: int = index, _f: Any = original, **kwargs: Any) -> Any:
            return program.tap(step, _i, _f, args, kwargs)

        sub.forward = tap  # type: ignore[method-assign]
    ROUTE.append((program, step))
    try:
        yield
    finally:
        ROUTE.pop()
        for path, _ in program.taps:
            del block.get_submodule(path).forward


def test_an_attention_split_over_its_queries_keeps_partial_recompute():
    block = SplitQueries()
    assert isinstance(SPEC.program, Submodules)
    program = SubmoduleProgram(SPEC.program)
    x = torch.randn(B, N, C, generator=torch.Generator().manual_seed(1))
    call = BlockCall(SPEC, block.forward, (x,), {})

    def make_step(ratios: dict[str, float], cache: Cache, record: bool) -> BlockStep:
        return BlockStep(0, ratios, cache, stream_layouts(call, N, 0), record=record)

    def run(program: Any, step: BlockStep, call: BlockCall) -> Any:
        with _served(block, program, step):
            return program.run(step, call)

    assert check_program(program, call, make_step, run) == ("", frozenset())
