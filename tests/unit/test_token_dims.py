"""Token streams whose tokens span several dims, (B, T, H, W, C) as Cosmos Predict2's blocks carry them: counted,
checked, cached, recomputed per token and observed as (B, N, C), with module outputs in either shape."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from comfyui_soda.soda_core.adapters.check import check_program
from comfyui_soda.soda_core.adapters.patterns import SubmoduleProgram
from comfyui_soda.soda_core.adapters.spec import BlockSpec, Module, Out, Role, Submodules
from comfyui_soda.soda_core.adapters.step import BlockCall, BlockStep, Cache, stream_layouts
from comfyui_soda.soda_core.tokens import as_tokens, token_count


B, T, H, W, C = 2, 2, 3, 4, 8
N = T * H * W


class VideoBlock(torch.nn.Module):
    """A block on (B, T, H, W, C): a token-mixing step projected per token on (B, N, C), then a per-token MLP on the
    5-D tensor itself."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(C, C)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(C, 16), torch.nn.GELU(), torch.nn.Linear(16, C))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = as_tokens(x).cumsum(1) / torch.arange(1, N + 1).view(1, -1, 1)  # (B, N, C) mixes tokens
        x = x + self.proj(mixed).view(x.shape)  # the module output is (B, N, C)
        return x + self.mlp(x)  # the module output is (B, T, H, W, C)


SPEC = BlockSpec(
    kind="block",
    blocks="blocks",
    streams={"x": Role.IMAGE},
    returns=("x",),
    program=Submodules(
        (
            Module("attn", outputs=(Out("proj", ("x",), tokenwise=True),)),
            Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
        )
    ),
)


@contextmanager
def _taps(block: torch.nn.Module, program: SubmoduleProgram, step: BlockStep) -> Iterator[None]:
    """Route the block's intercepted submodules to the program (what the runtime's TapSeams do)."""
    originals = {}
    for index, (path, _) in enumerate(program.taps):
        sub = block.get_submodule(path)
        original = type(sub).forward.__get__(sub)
        originals[path] = sub

        def tap(*args: Any, _i: int = index, _f: Any = original, **kwargs: Any) -> Any:
            return program.tap(step, _i, _f, args, kwargs)

        sub.forward = tap  # type: ignore[method-assign]
    try:
        yield
    finally:
        for sub in originals.values():
            del sub.forward


def _setup() -> tuple[VideoBlock, SubmoduleProgram, BlockCall]:
    block = VideoBlock()
    assert SPEC.program is not None and isinstance(SPEC.program, Submodules)
    x = torch.randn(B, T, H, W, C, generator=torch.Generator().manual_seed(1))
    return block, SubmoduleProgram(SPEC.program), BlockCall(SPEC, block.forward, (x,), {})


def _make_step(call: BlockCall) -> Any:
    def make(ratios: dict[str, float], cache: Cache, record: bool) -> BlockStep:
        return BlockStep(0, ratios, cache, stream_layouts(call, N, 0), record=record)

    return make


def _run(block: VideoBlock) -> Any:
    def run(program: Any, step: BlockStep, call: BlockCall) -> Any:
        with _taps(block, program, step):
            return program.run(step, call)

    return run


def test_a_stream_of_several_token_dims_counts_all_its_tokens():
    _, _, call = _setup()
    assert token_count(call.inputs()["x"]) == N
    assert stream_layouts(call, N, 0)["x"].image == N


def test_the_behavioural_check_passes_with_partial_recompute_on_5d_streams():
    block, program, call = _setup()
    assert check_program(program, call, _make_step(call), _run(block)) == ("", frozenset())


def test_cached_outputs_of_either_shape_fit_the_stream_and_are_observed_as_tokens():
    block, program, call = _setup()
    seen: dict[str, tuple[int, ...]] = {}

    def observe(module: str, output: torch.Tensor, scores: torch.Tensor, tokens: Any) -> None:
        seen[module] = (*output.shape, *scores.shape, tokens.image)

    step = _make_step(call)(dict.fromkeys(program.modules, 1.0), {}, True)
    step.observe = observe
    _run(block)(program, step, call.cloned())
    assert {m: tuple(t.shape) for m, t in ((m, s["x"]) for m, s in step.cache.items())} == {
        "attn": (B, N, C),
        "mlp": (B, T, H, W, C),
    }
    assert seen == {"attn": (B, N, C, B, N, N), "mlp": (B, N, C, B, N, N)}
    reuse = _make_step(call)({"attn": 0.0, "mlp": 0.3}, step.cache, False)
    assert program.fits(reuse, call)
