"""Mochi's joint blocks in the submodule pattern: partial attention of a module whose attention sees a prefix of its
joint tokens (the image tokens and the prompt's real tokens, not the text padding) gathers only the queries that
exist, and streams of different widths are joined along tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from comfyui_soda.soda_core.adapters.patterns import AttentionCall, SubmoduleProgram
from comfyui_soda.soda_core.adapters.spec import In, Module, Out, Submodules
from comfyui_soda.soda_core.adapters.step import BlockStep
from comfyui_soda.soda_core.tokens import TokenLayout


IMAGE, TEXT, KEPT = 6, 4, 2  # image tokens, text tokens of the stream, text tokens the attention sees


def attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False, **kw):
    """ComfyUI's attention signature on (B, H, N, D) inputs with (B, H, N, D) outputs."""
    return F.scaled_dot_product_attention(q, k, v)


def test_partial_attention_over_a_prefix_of_the_joint_tokens():
    program = SubmoduleProgram(
        Submodules(
            (
                Module(
                    "attn",
                    outputs=(Out("proj_x", ("x",), tokenwise=True), Out("proj_y", ("y",), tokenwise=True)),
                    inputs=(In("qkv_x", "x"), In("qkv_y", "y")),
                ),
            )
        )
    )
    tokens = {"x": TokenLayout(text=0, image=IMAGE), "y": TokenLayout(text=TEXT, image=0)}
    step = BlockStep(0, {"attn": 0.5}, {}, tokens)
    step.open.append("attn")
    step.scores["attn"] = {"x": torch.arange(IMAGE, dtype=torch.float32)[None]}  # (1, IMAGE): the last ones rank first
    q, k, v = (torch.randn(1, 2, IMAGE + KEPT, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    call = AttentionCall(attention, (q, k, v, 2), {"skip_reshape": True, "skip_output_reshape": True})
    out = program.attention(step, call)  # (1, 2, IMAGE + KEPT, 8)
    full = attention(q, k, v, 2)
    recomputed = [IMAGE // 2 + i for i in range(IMAGE // 2)] + [IMAGE + i for i in range(KEPT)]
    assert out.shape == full.shape
    assert torch.allclose(out[:, :, recomputed], full[:, :, recomputed], atol=1e-6)
    assert not out[:, :, : IMAGE // 2].any()


def test_streams_of_different_widths_are_joined_along_tokens():
    from comfyui_soda.soda_core.adapters.patterns.submodules import joint_tokens

    image, text = torch.randn(2, IMAGE, 8), torch.randn(2, TEXT, 4)  # Mochi: the text stream is narrower
    joined = joint_tokens([image, text])
    assert joined.shape == (2, IMAGE + TEXT, 8)
    assert torch.equal(joined[:, :IMAGE], image) and torch.equal(joined[:, IMAGE:, :4], text)
    assert not joined[:, IMAGE:, 4:].any()
    other = joint_tokens([image + 1, text + 1])
    assert torch.isclose((joined - other).norm() ** 2, (image - image - 1).norm() ** 2 + (text - text - 1).norm() ** 2)
