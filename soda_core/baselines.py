"""The paper's baselines as SODA schedules, so they run on the same runtime, FLOP count and token machinery.

* FORA (static caching): a full step every ``n`` steps, every module reused whole in between
  (``Schedule.uniform``).
* ToCa (token-wise caching, Zou et al. 2024), its final form: full steps every ``n`` steps after the first
  ``first_full``; on the steps in between the attention is reused whole and the MLP recomputes a *fresh ratio* of
  the image tokens, scaled per block kind (ToCa's FLUX code: 0.4x in double-stream and 1.6x in single-stream
  blocks). Defaults are ToCa's FLUX settings: ``n = 4``, fresh ratio 0.10, the first 3 steps full.

Differences from ToCa's release, stated so the comparison is read right: tokens are ranked by SODA's feature-mean
score of the module input (ToCa's attention-map score needs attention probabilities that fused kernels do not return;
its FLUX code also falls back to proxies), without ToCa's staleness and spatial-spread bonuses.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .layout import ModelLayout
from .schedule import Schedule


TOCA_INTERVAL = 4
TOCA_FRESH_RATIO = 0.10
TOCA_FIRST_FULL = 3
TOCA_KIND_FACTORS: Mapping[str, float] = {"double_block": 0.4, "single_block": 1.6}  # ToCa's FLUX factors
TOCA_MODULES = ("mlp",)  # modules that recompute fresh tokens; the others are reused whole


def toca(
    layout: ModelLayout,
    sigmas: torch.Tensor,
    interval: int = TOCA_INTERVAL,
    fresh_ratio: float = TOCA_FRESH_RATIO,
    first_full: int = TOCA_FIRST_FULL,
    kind_factors: Mapping[str, float] = TOCA_KIND_FACTORS,
) -> Schedule:
    """ToCa-style schedule: anchors ``0..first_full-1`` and every ``interval`` steps after; on the other steps
    ``recompute[t, l, mlp] = min(fresh_ratio · kind_factors[kind of l], 1)`` and 0 for the other modules."""
    if interval < 1 or not 0.0 <= fresh_ratio <= 1.0 or first_full < 1:
        raise ValueError(
            f"ToCa schedule: interval={interval}, fresh_ratio={fresh_ratio}, first_full={first_full}; expected "
            "interval >= 1, 0 <= fresh_ratio <= 1 and first_full >= 1 (e.g. ToCa's FLUX defaults 4, 0.10, 3)."
        )
    steps = sigmas.numel() - 1
    anchors = tuple(sorted({*range(min(first_full, steps)), *range(first_full, steps, interval)}))
    ratios = torch.tensor([min(fresh_ratio * kind_factors.get(b.kind, 1.0), 1.0) for b in layout.blocks])  # (L,)
    recompute = torch.zeros(steps, layout.num_layers, layout.num_modules)
    for m, module in enumerate(layout.modules):
        if module in TOCA_MODULES:
            recompute[:, :, m] = ratios
    recompute[list(anchors)] = 1.0
    note = f"ToCa-style: full every {interval} steps after {first_full}, MLP fresh ratio {fresh_ratio:g}"
    return Schedule(layout, sigmas.double().cpu(), anchors, recompute, notes=(note,))
