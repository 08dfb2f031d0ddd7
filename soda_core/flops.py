"""FLOPs counted from shapes, per module, the way ``torch.utils.flop_counter.FlopCounterMode`` counts them.

Only matrix products are counted (linear layers and attention), 2 FLOPs per multiply-add, as FlopCounterMode does;
element-wise work (norms, modulation, activations, rope, gathers) is not. A test checks these counts against
FlopCounterMode on a real sampling run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def linear_flops(rows: int, in_features: int, out_features: int) -> int:
    """``x @ W.T`` for ``rows`` input rows: 2 * rows * in * out."""
    return 2 * rows * in_features * out_features


def attention_flops(batch_heads: int, q_tokens: int, kv_tokens: int, head_dim: int) -> int:
    """Scaled dot-product attention: ``Q K^T`` plus ``softmax(.) V``, each 2 * q * kv * d per head."""
    return 4 * batch_heads * q_tokens * kv_tokens * head_dim


@dataclass(frozen=True)
class FlopModel:
    """Transformer FLOPs of one model call (one batch row), split so the planner can price any schedule.

    For layer ``l`` and module ``m``:
      * ``full[l, m]``: computing the module for every token;
      * a partial recompute of a fraction ``r`` of the prunable (image) tokens costs
        ``fixed[l, m] + r * per_ratio[l, m]``; ``fixed`` holds what does not shrink with ``r`` (text tokens, which are
        never pruned; keys and values of all tokens for attention);
      * ``base``: work done at every step whatever the schedule (embedders, modulation, final layer);
      * ``record``: extra work of an anchor step that fills the cache for the reuse steps after it.
    """

    full: torch.Tensor  # (L, M) float64
    fixed: torch.Tensor  # (L, M) float64
    per_ratio: torch.Tensor  # (L, M) float64
    base: float
    record: float

    @property
    def step_full(self) -> float:
        """FLOPs of one full-compute step without recording: what the unpatched model spends."""
        return self.base + float(self.full.sum())

    def partial(self, ratio: torch.Tensor) -> torch.Tensor:
        """Cost of each (l, m) at recompute ratio ``ratio`` (broadcasts; 0 means reuse and costs nothing)."""
        cost = self.fixed + ratio * self.per_ratio
        return torch.where(ratio > 0, cost, torch.zeros_like(cost))

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "flops.full": self.full,
            "flops.fixed": self.fixed,
            "flops.per_ratio": self.per_ratio,
            "flops.scalars": torch.tensor([self.base, self.record], dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> FlopModel:
        base, record = tensors["flops.scalars"].tolist()
        return cls(
            tensors["flops.full"].double(),
            tensors["flops.fixed"].double(),
            tensors["flops.per_ratio"].double(),
            float(base),
            float(record),
        )
