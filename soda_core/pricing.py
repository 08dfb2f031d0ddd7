"""What a schedule costs under a ``FlopModel``: FLOPs, or seconds for the cost model of a ``timing.TimeModel``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .flops import FlopModel


def anchor_flops(flops: FlopModel, anchors: Sequence[int], steps: int) -> float:
    """FLOPs of a schedule that reuses whole modules: an anchor costs ``base + Σ full`` (+ ``record`` when the next
    step reuses), a reuse step ``base``."""
    anchor_set = set(anchors)
    records = sum(1 for a in anchor_set if a + 1 < steps and a + 1 not in anchor_set)
    return len(anchor_set) * flops.step_full + records * flops.record + (steps - len(anchor_set)) * flops.base


def schedule_flops(flops: FlopModel, anchors: Sequence[int], recompute: torch.Tensor) -> float:
    """``Σ_t FLOPs(t)``: ``anchor_flops`` plus ``Σ_{l,m} flops.partial(recompute[t, l, m])`` on every reuse step."""
    reuse = torch.ones(recompute.shape[0], dtype=torch.bool)
    reuse[list(anchors)] = False
    partial = flops.partial(recompute[reuse].double())  # (n_reuse, L, M)
    return anchor_flops(flops, anchors, recompute.shape[0]) + float(partial.sum())


def reuse_steps(anchors: Sequence[int], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reuse steps (n,) and their distances to the last anchor before them (n,)."""
    index = torch.arange(steps)
    is_anchor = torch.zeros(steps, dtype=torch.bool)
    is_anchor[list(anchors)] = True
    last = torch.cummax(torch.where(is_anchor, index, 0), dim=0).values  # (T,)
    return index[~is_anchor], (index - last)[~is_anchor]
