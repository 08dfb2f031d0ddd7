"""soda_core.weights.seed_parameters: deterministic, finite weights for models built without initialisation."""

import torch

from comfyui_soda.soda_core.weights import seed_parameters


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 32)
        self.conv = torch.nn.Conv2d(4, 8, 3)
        self.norm = torch.nn.LayerNorm(32)
        self.scale = torch.nn.Parameter(torch.empty(16))
        for parameter in self.parameters():  # what comfy.ops.disable_weight_init leaves behind, at worst
            torch.nn.init.constant_(parameter, float("nan"))


def _seeded(seed: int) -> dict[str, torch.Tensor]:
    block = _Block()
    seed_parameters(block, seed)
    return {name: p.detach().clone() for name, p in block.named_parameters()}


def test_same_seed_same_values() -> None:
    first, second = _seeded(7), _seeded(7)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_every_parameter_is_overwritten_and_finite() -> None:
    assert all(torch.isfinite(v).all() for v in _seeded(0).values())


def test_different_seeds_differ() -> None:
    first, second = _seeded(0), _seeded(1)
    assert all(not torch.equal(first[k], second[k]) for k in first)


def test_scales_follow_the_rules() -> None:
    values = _seeded(3)
    # >=2-D: randn / sqrt(fan_in)
    assert abs(values["linear.weight"].std().item() - 64**-0.5) < 0.02
    assert abs(values["conv.weight"].std().item() - (4 * 3 * 3) ** -0.5) < 0.05
    # 1-D named weight / scale: near 1; biases: near 0
    for name in ("norm.weight", "scale"):
        assert (values[name] - 1.0).abs().max().item() < 0.1
    for name in ("linear.bias", "conv.bias", "norm.bias"):
        assert values[name].abs().max().item() < 0.1


def test_dtype_and_device_are_kept() -> None:
    block = _Block().to(torch.float16)
    seed_parameters(block, 0)
    assert all(p.dtype == torch.float16 and torch.isfinite(p).all() for p in block.parameters())
    reference = _seeded(0)
    assert torch.equal(block.linear.weight, reference["linear.weight"].to(torch.float16))
