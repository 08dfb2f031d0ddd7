"""The trained reference models, as data: architecture, canvas (data and classifier), files and training defaults.

``scripts/train_reference_model.py --model NAME`` trains one of ``VARIANTS`` with one shared training loop:

* ``digits16`` (the default, the pack's embedded model): digits filling a 16x16 latent, 64 image tokens;
* ``digits32``: the same digits, each in a random quadrant of a 32x32 sheet of paper, 256 image tokens of which most are
  static paper (``benchmarks/digits.py``, ``Canvas``): the model on which token recompute can matter. Same
  architecture, fine-tuned from ``digits16``'s shipped weights: Flux's rotary positions are relative, so the
  digit-drawing transfers and the fine-tune only learns the paper around it and where to put the digit; four times
  the tokens make an iteration four times dearer, and from random weights the 45-minute CPU budget would see a
  tenth of the first model's samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_env import ROOT


@dataclass(frozen=True)
class Variant:
    name: str
    unet_config: dict[str, Any]
    model_file: Path
    report_file: Path
    grid_file: Path
    data: str  # what it was trained on (metadata)
    description: str  # soda.description of the model file
    iterations: int  # default training steps, batch and peak learning rate
    batch: int
    lr: float = 1e-3
    precision: str = "float32"  # of the training passes (--precision)
    init: str | None = None  # start from this variant's shipped weights (None: seeded random, adaLN-Zero)


BASE_CONFIG: dict[str, Any] = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": 64,
    "context_in_dim": 64,
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 2,
    "depth_single_blocks": 4,
    "axes_dim": [16, 24, 24],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": False,
}

VARIANTS = {
    "digits16": Variant(
        name="digits16",
        unet_config=BASE_CONFIG,
        model_file=ROOT / "models" / "soda_reference_digits.safetensors",
        report_file=ROOT / "benchmarks" / "results" / "reference_training.json",
        grid_file=ROOT / "docs" / "images" / "reference_samples.png",
        data="scikit-learn digits, 16x16",
        description="SODA reference model: a small Flux-architecture DiT (hidden 128, 2 heads, 2 double + 4 "
        "single blocks) trained on handwritten digits (scikit-learn's digits, 16x16 latents) by "
        "scripts/train_reference_model.py; caption 'digit N' draws N. Weights: EMA, float16.",
        iterations=4000,
        batch=64,
    ),
    "digits32": Variant(
        name="digits32",
        unet_config=BASE_CONFIG,
        model_file=ROOT / "models" / "soda_reference_digits32.safetensors",
        report_file=ROOT / "benchmarks" / "results" / "reference_digits32_training.json",
        grid_file=ROOT / "docs" / "images" / "reference_digits32_samples.png",
        data="scikit-learn digits, 16x16, in a random quadrant of a 32x32 sheet of paper",
        description="SODA reference model, 32x32: a small Flux-architecture DiT (hidden 128, 2 heads, 2 double + "
        "4 single blocks) trained on handwritten digits (scikit-learn's digits, 16x16, each in a random quadrant of a "
        "32x32 latent of paper: 256 image tokens) by scripts/train_reference_model.py --model digits32; caption "
        "'digit N' draws N. Weights: EMA, float16.",
        iterations=3800,  # bfloat16 passes: 1.8x the float32 iterations in the same ~40 minutes
        batch=32,
        lr=1e-3,
        precision="bfloat16",
        init="digits16",
    ),
}
