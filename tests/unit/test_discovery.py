"""Discovery of the block lists of a diffusion model without a record (``soda_core/adapters/discovery.py``), on
small torch models shaped like ComfyUI's: which lists are served, and that nested lists are served by their path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from comfyui_soda.soda_core.adapters import serve
from comfyui_soda.soda_core.adapters.discovery import block_lists, calls_attention, discover


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A family's own attention wrapper (as Flux's ``comfy.ldm.flux.math.attention``)."""
    return F.scaled_dot_product_attention(q, k, v)


class SelfAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.out(attention(q, k, v))


class Block(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn, self.mlp = SelfAttention(dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class SdpaBlock(nn.Module):
    """Attention through torch directly, in a helper method."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(*self.qkv(x).chunk(3, dim=-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._attend(x)


class Processor:
    """A diffusers-style attention processor: a plain object the attention module calls (ACE-Step)."""

    def __call__(self, attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


class ProcessorAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.to_out, self.processor = nn.Linear(dim, dim), Processor()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_out(self.processor(self, x))


class PixelHead(nn.Module):
    """A per-token MLP head (Chroma Radiance's NeRF blocks): linear layers, no attention."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


class Inner(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project_in = nn.Linear(dim, dim)
        self.layers = nn.ModuleList([Block(dim) for _ in range(3)])


class Flat(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.double_blocks = nn.ModuleList([Block(dim) for _ in range(2)])
        self.single_blocks = nn.ModuleList([SdpaBlock(dim) for _ in range(2)])
        self.projectors = nn.ModuleList([nn.Sequential(nn.Linear(dim, dim), nn.SiLU()) for _ in range(2)])
        self.nerf_blocks = nn.ModuleList([PixelHead(dim) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.mixed = nn.ModuleList([Block(dim), SdpaBlock(dim)])
        self.encoder = Inner(dim)  # a sub-model: deeper than the model's own block lists


class Nested(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.transformer = Inner(dim)
        self.heads = nn.ModuleList([PixelHead(dim)])


class HeadsOnly(nn.Module):
    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.layers = nn.ModuleList([PixelHead(dim) for _ in range(2)])


def test_attention_is_found_through_wrappers_helpers_and_submodules():
    assert calls_attention(Block(8)) and calls_attention(SdpaBlock(8)) and calls_attention(ProcessorAttention(8))
    assert not calls_attention(PixelHead(8)) and not calls_attention(nn.Sequential(nn.Linear(8, 8)))


def test_only_lists_of_attending_blocks_at_the_shallowest_depth_are_served():
    assert block_lists(Flat()) == ["double_blocks", "single_blocks"]


def test_nested_block_lists_are_served_by_their_path():
    model = Nested()
    assert block_lists(model) == ["transformer.layers"]
    served = serve(model)
    assert [layer.path for layer in served.layers] == [f"transformer.layers.{i}" for i in range(3)]
    assert all(layer.block is model.transformer.layers[i] for i, layer in enumerate(served.layers))
    assert served.layout.modules == ("block",)
    assert "transformer.layers (3 x Block)" in discover(model).notes[0]
    assert discover(Nested()).blocks[0] is served.family.blocks[0]  # the check's verdicts are kept per spec


def test_without_recognisable_attention_the_linear_lists_are_served():
    assert block_lists(HeadsOnly()) == ["layers"]


class SwapBlock(nn.Module):
    """A dual-stream block returning its streams in the other order, both of one shape (Lens, Qwen-Image return
    ``(txt, img)``; a prompt may have as many tokens as the image)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.img, self.txt = SelfAttention(dim), SelfAttention(dim)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return txt + 0.1 * self.txt(txt) * vec, img + 0.1 * self.img(img) * vec


class SwapModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([SwapBlock()])


def _call(block: nn.Module, *args: torch.Tensor):
    from comfyui_soda.soda_core.adapters.step import BlockCall

    return BlockCall(discover(SwapModel()).blocks[0], block.forward, args, {})


@torch.no_grad()
def test_a_discovered_block_is_recorded_observed_and_reused_in_its_own_return_order():
    from comfyui_soda.soda_core.adapters.patterns import ResidualProgram
    from comfyui_soda.soda_core.adapters.step import BlockStep, stream_layouts

    torch.manual_seed(0)
    block, vec = SwapBlock(), torch.ones(1, 1, 8)
    img, txt = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    call = _call(block, img, txt, vec)
    assert list(call.outputs(block(img, txt, vec))) == ["txt", "img"]  # same shapes: each matched to its own input
    program, seen = ResidualProgram(call.spec), []
    tokens = stream_layouts(call, image=4, text=0)
    step = BlockStep(0, {"block": 1.0}, {}, tokens, record=True, observe=lambda *a: seen.append(a))
    program.run(step, call)
    assert list(step.cache["block"]) == ["txt", "img"] and seen and seen[0][1].shape == (1, 8, 8)
    img2, txt2 = img + 0.01, txt - 0.01  # the next step's inputs
    reused = program.run(BlockStep(0, {"block": 0.0}, step.cache, tokens), _call(block, img2, txt2, vec))
    expected = block(img, txt, vec)
    assert torch.allclose(reused[0], expected[0] - txt + txt2) and torch.allclose(reused[1], expected[1] - img + img2)
