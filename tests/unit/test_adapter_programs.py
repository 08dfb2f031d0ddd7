"""Block programs on toy blocks (torch only): how a record names a block's streams and submodules, checked by the
same behavioural check ComfyUI's blocks get on their first call."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from comfyui_soda.soda_core.adapters.check import check_program
from comfyui_soda.soda_core.adapters.patterns import AttentionCall, program_for
from comfyui_soda.soda_core.adapters.spec import BlockSpec, In, Module, Out, Role, Submodules
from comfyui_soda.soda_core.adapters.step import BlockCall, BlockStep, stream_layouts
from comfyui_soda.soda_core.seams import AttentionSeam, RunSlot, TapSeam


def _joint(context: torch.Tensor, x: torch.Tensor, c: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    return context + c, x * scale + c


class Wrapper(nn.Module):
    """A block whose forward only passes its arguments on (as SD3's ``JointBlock`` does)."""

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return _joint(*args, **kwargs)


WRAPPER = BlockSpec(
    "joint_block", "blocks", {"context": Role.TEXT, "x": Role.IMAGE}, ("context", "x"), positional=("context", "x")
)


def test_positional_streams_of_a_forward_that_takes_args():
    block = Wrapper()
    context, x, c = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 1, 4)
    call = BlockCall(WRAPPER, block.forward, (context, x), {"c": c, "scale": 2.0})
    assert set(call.inputs()) == {"context", "x"}
    assert call.inputs()["x"] is x and call.inputs()["context"] is context
    replaced = call.with_streams({"x": torch.zeros_like(x)})
    assert torch.equal(replaced.run()[1], c.expand_as(x))
    assert torch.equal(replaced.run()[0], context + c)  # the other arguments pass on unchanged
    outputs = call.outputs(call.cloned().run())
    assert torch.equal(outputs["x"], 2.0 * x + c) and torch.equal(outputs["context"], context + c)
    unnamed = BlockCall(
        BlockSpec("joint_block", "blocks", WRAPPER.streams, WRAPPER.returns), block.forward, (context, x), {"c": c}
    )
    assert unnamed.inputs() == {}  # without ``positional`` the streams are not found


class _Run:
    """Stands in for a sampling run: hands the calls of intercepted submodules to the program that is running."""

    def __init__(self) -> None:
        self.active: tuple[BlockStep, Any] | None = None

    def tap(self, layer: int, index: int, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.active is None:
            return original(*args, **kwargs)
        step, program = self.active
        return program.tap(step, index, original, args, kwargs)

    def attention(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.active is None:
            return func(*args, **kwargs)
        step, program = self.active
        return program.attention(step, AttentionCall(func, args, kwargs))

    def run_program(self, program: Any, step: BlockStep, call: BlockCall) -> Any:
        self.active = (step, program)
        try:
            return program.run(step, call)
        finally:
            self.active = None


def _serve(spec: BlockSpec, block: nn.Module, *args: Any) -> tuple[Any, BlockCall, Any, _Run]:
    """``spec``'s module program on ``block`` with its submodules intercepted (as ``nodes.patching.install`` does),
    the call ``block(*args)`` and a ``make_step`` for the behavioural check; a ``dict`` argument gets SODA's
    attention override (as ComfyUI's ``transformer_options``)."""
    program, slot, run = program_for(spec, True), RunSlot(), _Run()
    for options in (a for a in args if isinstance(a, dict)):
        options["optimized_attention_override"] = AttentionSeam(slot)
    slot.run = run  # type: ignore[assignment]
    for index, (path, _) in enumerate(program.taps):
        if path in dict(block.named_modules()):
            submodule = block.get_submodule(path)
            submodule.forward = TapSeam(slot, 0, index, type(submodule).forward.__get__(submodule))  # type: ignore[method-assign]
    call = BlockCall(spec, type(block).forward.__get__(block), args, {})
    tokens = stream_layouts(call, int(args[0].shape[1]), 0)

    def make_step(ratios: dict[str, float], cache: Any, record: bool) -> BlockStep:
        return BlockStep(0, ratios, cache, tokens, record=record)

    return program, call, make_step, run


class PackedAttention(nn.Module):
    """Mixes tokens and returns its output in a 1-tuple (as HunyuanDiT's attention modules do)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.proj(x).softmax(dim=1),)  # (B, N, C)


class PackedBlock(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.attn, self.mlp = PackedAttention(width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)[0]
        return x + self.mlp(x)


def _packed_spec(packed: bool) -> BlockSpec:
    modules = (
        Module("attn", outputs=(Out("attn", ("x",), packed=packed),)),
        Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
    )
    return BlockSpec("block", "blocks", {"x": Role.IMAGE}, ("x",), program=Submodules(modules))


def test_a_packed_output_is_served_as_the_tuple_its_submodule_returns():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)  # two samples: a tensor served for (out,) would index the batch
    for packed, expected in (
        (True, ""),
        (False, "served from its own cache it does not reproduce the block's output"),
    ):
        program, call, make_step, run = _serve(_packed_spec(packed), PackedBlock(), x)
        with torch.no_grad():
            reason, no_partial = check_program(program, call, make_step, run.run_program)
        assert (reason, no_partial) == (expected, frozenset())


class MaybeBlock(nn.Module):
    """A block kind whose extra MLP only some instances have (as SD3.5's ``attn2`` in its first layers)."""

    def __init__(self, extra: bool, width: int = 8) -> None:
        super().__init__()
        self.mlp = nn.Linear(width, width)
        if extra:
            self.extra = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "extra"):
            x = x + self.extra(x)
        return x + self.mlp(x)


MAYBE = BlockSpec(
    "block",
    "blocks",
    {"x": Role.IMAGE},
    ("x",),
    program=Submodules(
        (
            Module("extra", outputs=(Out("extra", ("x",), tokenwise=True, optional=True),)),
            Module("mlp", outputs=(Out("mlp", ("x",), tokenwise=True),)),
        )
    ),
)


def test_a_module_the_block_does_not_have_is_reused_without_a_cache_miss():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 8)
    for extra in (True, False):
        program, call, make_step, run = _serve(MAYBE, MaybeBlock(extra), x)
        with torch.no_grad():
            assert check_program(program, call, make_step, run.run_program) == ("", frozenset())
            cache: dict[str, dict[str, torch.Tensor]] = {}
            reference = run.run_program(program, make_step({"extra": 1.0, "mlp": 1.0}, cache, True), call.cloned())
            assert set(cache) == {"extra", "mlp"} and bool(cache["extra"]) is extra  # absent: recorded as empty
            reuse = make_step({"extra": 0.0, "mlp": 0.0}, cache, False)
            assert program.fits(reuse, call)
            assert torch.allclose(run.run_program(program, reuse, call.cloned()), reference)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, **kwargs: Any) -> torch.Tensor:
    """An attention function with ComfyUI's signature: (B, N, C) in and out."""
    return torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v


class SplitBlock(nn.Module):
    """Split attention (qkv linear, attention call, output projection); only some instances have a second one (as
    SD3.5's ``x_block.attn2``)."""

    def __init__(self, extra: bool, width: int = 8) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        if extra:
            self.qkv2, self.proj2 = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor, transformer_options: dict[str, Any]) -> torch.Tensor:
        override = transformer_options["optimized_attention_override"]
        x = x + self.proj(override(_attention, *self.qkv(x).chunk(3, dim=-1), 1))
        if hasattr(self, "qkv2"):
            x = x + self.proj2(override(_attention, *self.qkv2(x).chunk(3, dim=-1), 1))
        return x


SPLIT = BlockSpec(
    "block",
    "blocks",
    {"x": Role.IMAGE},
    ("x",),
    program=Submodules(
        (
            Module("attn", outputs=(Out("proj", ("x",), tokenwise=True),), inputs=(In("qkv", "x"),)),
            Module(
                "attn2",
                outputs=(Out("proj2", ("x",), tokenwise=True, optional=True),),
                inputs=(In("qkv2", "x", optional=True),),
            ),
        )
    ),
)


def test_an_attention_the_block_does_not_have_need_not_reach_the_override():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 8)
    for extra in (True, False):
        program, call, make_step, run = _serve(SPLIT, SplitBlock(extra), x, {})
        with torch.no_grad():
            assert check_program(program, call, make_step, run.run_program) == ("", frozenset())
