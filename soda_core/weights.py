"""Deterministic parameter initialisation for models built without weight init.

ComfyUI builds its diffusion models with ``comfy.ops.disable_weight_init``, which skips ``reset_parameters``: a
freshly built model holds whatever ``torch.empty`` returned (often NaN). :func:`seed_parameters` fills every
parameter from one seeded generator, so the same architecture and seed always give the same weights, on any machine.
"""

import math

import torch


_NORM_NAME_SUFFIXES = ("weight", "scale")


def _is_norm_gain(name: str) -> bool:
    """True for 1-D parameters that multiply activations (norm weights, RMSNorm scales), which start near 1."""
    return name.rsplit(".", 1)[-1].endswith(_NORM_NAME_SUFFIXES)


@torch.no_grad()
def seed_parameters(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter of ``module`` deterministically from ``seed``, in ``named_parameters()`` order.

    - tensors with 2 or more dimensions (linear / conv weights): ``randn / sqrt(fan_in)``, where
      ``fan_in = shape[1] * prod(shape[2:])``, which keeps activations at unit scale through the layer;
    - 1-D tensors named like ``*weight`` / ``*scale`` (norm gains): ``1 + 0.02 * randn``;
    - every other 1-D or 0-D tensor (biases, learned offsets): ``0.02 * randn``.

    Values are drawn in float32 on the CPU from a ``torch.Generator`` seeded with ``seed`` and then copied into the
    parameter's own dtype and device, so the result does not depend on where the module lives.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    for name, parameter in module.named_parameters():
        values = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
        if parameter.dim() >= 2:
            fan_in = parameter.shape[1] * math.prod(parameter.shape[2:])
            values = values / fan_in**0.5
        elif _is_norm_gain(name):
            values = 1.0 + 0.02 * values
        else:
            values = 0.02 * values
        parameter.copy_(values)
