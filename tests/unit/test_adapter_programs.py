"""Block programs on toy blocks (torch only): how a record names a block's streams and submodules, checked by the
same behavioural check ComfyUI's blocks get on their first call."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from comfyui_soda.soda_core.adapters.spec import BlockSpec, Role
from comfyui_soda.soda_core.adapters.step import BlockCall


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
