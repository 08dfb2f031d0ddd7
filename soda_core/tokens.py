"""Token bookkeeping for partial recompute: which tokens may be pruned, how they are ranked, gather and scatter.

Module outputs are kept in *joint token order*: text tokens first, then the image stream (image tokens followed by
reference-image tokens, e.g. Flux Kontext). Only image tokens are ever pruned; text and reference tokens are always
recomputed on a partial step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class TokenScore(str, enum.Enum):
    """How tokens are ranked for recompute. SODA ranks by a feature mean because fused attention kernels do not
    expose attention maps; the paper does not say which tensor, so both readings are offered."""

    MEAN = "mean"  # mean of the module's input features per token
    ABS_MEAN = "abs_mean"  # mean of their absolute values


@dataclass(frozen=True)
class TokenLayout:
    """Token counts of one model call."""

    text: int
    image: int
    reference: int = 0

    @property
    def total(self) -> int:
        return self.text + self.image + self.reference

    @property
    def image_slice(self) -> slice:
        """Where the prunable image tokens sit in joint order."""
        return slice(self.text, self.text + self.image)


def token_scores(module_input: torch.Tensor, kind: TokenScore) -> torch.Tensor:
    """Per-token score shared by every row of the batch (so cond and uncond use the same tokens).

    module_input: (B, N, C) -> (N,)
    """
    per_token = module_input.abs().mean(-1) if kind is TokenScore.ABS_MEAN else module_input.mean(-1)  # (B, N)
    return per_token.float().mean(0)  # (N,)


def image_token_ranking(scores: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Joint-order positions of the image tokens, most sensitive (highest score) first. scores: (N,) -> (N_img,)"""
    image_scores = scores[layout.image_slice]  # (N_img,)
    return torch.argsort(image_scores, descending=True, stable=True) + layout.text


def recompute_positions(scores: torch.Tensor, layout: TokenLayout, ratio: float) -> torch.Tensor:
    """Joint-order positions recomputed at ``ratio``: all text and reference tokens plus the top ``ratio`` share of
    the image tokens, in increasing order (so gathers keep the sequence order). -> (n,) int64"""
    keep = round(ratio * layout.image)
    ranked = image_token_ranking(scores, layout)[:keep]  # (keep,)
    always = torch.cat([torch.arange(0, layout.text), torch.arange(layout.text + layout.image, layout.total)]).to(
        ranked.device
    )
    return torch.sort(torch.cat([always, ranked])).values


def scatter_tokens(cache: torch.Tensor, positions: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """Write ``fresh`` (B, n, C) into ``cache`` (B, N, C) at token ``positions`` (n,), in place; returns cache."""
    cache[:, positions] = fresh.to(cache.dtype)
    return cache
