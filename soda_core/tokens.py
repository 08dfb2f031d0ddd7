"""Token bookkeeping for partial recompute: which tokens may be pruned, how they are ranked, gather and scatter.

A module output is kept in its *joint token order*: the tokens of its streams concatenated in the order the module's
record lists them (``adapters.spec``). Text tokens come first for most families (Flux, SD3, Qwen-Image); a module
may also hold image tokens first (``TokenLayout.image_first``) or image tokens only (Wan). Reference-image tokens
follow the image tokens of their stream (Flux Kontext, Qwen Edit) or precede them (``TokenLayout.reference_first``:
HunyuanVideo's ref_latent, OmniGen2). Only image tokens are ever pruned; text and reference tokens are always
recomputed on a partial step.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch


class TokenScore(str, enum.Enum):
    """How tokens are ranked for recompute. SODA ranks by a feature mean because fused attention kernels do not
    expose attention maps; the paper does not say which tensor, so both readings are offered."""

    MEAN = "mean"  # mean of the module's input features per token
    ABS_MEAN = "abs_mean"  # mean of their absolute values


@dataclass(frozen=True)
class TokenLayout:
    """Token counts of one module output in joint order: ``[text][image][reference]``, or with ``image_first``
    ``[image][reference][text]``; ``reference_first`` puts the reference tokens before the image tokens
    (``[text][reference][image]``: HunyuanVideo's ref_latent, OmniGen2)."""

    text: int
    image: int
    reference: int = 0
    image_first: bool = False
    reference_first: bool = False

    @property
    def total(self) -> int:
        return self.text + self.image + self.reference

    @property
    def image_start(self) -> int:
        return (0 if self.image_first else self.text) + (self.reference if self.reference_first else 0)

    @property
    def image_slice(self) -> slice:
        """Where the prunable image tokens sit in joint order."""
        return slice(self.image_start, self.image_start + self.image)

    @property
    def fixed(self) -> int:
        """Tokens never pruned (text and reference)."""
        return self.text + self.reference


def token_count(x: torch.Tensor) -> int:
    """Tokens of a token tensor: (B, N, C), or (B, *dims, C) whose tokens span several dims (Cosmos' blocks carry
    (B, T, H, W, C))."""
    return math.prod(int(d) for d in x.shape[1:-1])


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """A token tensor (B, *dims, C) as (B, N, C), a view where its strides allow."""
    return x if x.dim() == 3 else x.reshape(x.shape[0], -1, x.shape[-1])


def token_scores(module_input: torch.Tensor, kind: TokenScore, groups: int = 1) -> torch.Tensor:
    """Per-token score of every batch row; the rows of one sample in the ``groups`` CFG chunks of the batch
    (``[cond rows; uncond rows]``, as ComfyUI batches them) share the mean of their scores, so cond and uncond of a
    sample recompute the same tokens while different samples choose their own.

    module_input: (B, N, C) or (B, *dims, C) -> (B, N) float32
    """
    module_input = as_tokens(module_input)
    per_token = module_input.abs().mean(-1) if kind is TokenScore.ABS_MEAN else module_input.mean(-1)  # (B, N)
    per_token = per_token.float()
    if groups > 1:
        shared = per_token.view(groups, -1, per_token.shape[-1]).mean(0)  # (B / groups, N)
        per_token = shared.repeat(groups, 1)  # (B, N)
    return per_token


def image_token_ranking(scores: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Joint-order positions of each row's image tokens, most sensitive (highest score) first.
    scores: (B, N) -> (B, N_img)"""
    image_scores = scores[:, layout.image_slice]  # (B, N_img)
    return torch.argsort(image_scores, dim=-1, descending=True, stable=True) + layout.image_start


def recompute_positions(scores: torch.Tensor, layout: TokenLayout, ratio: float) -> torch.Tensor:
    """Joint-order positions recomputed at ``ratio``, per row: all text and reference tokens plus the row's top
    ``ratio`` share of image tokens, in increasing order (gathers keep the sequence order, so every row holds the
    same number of positions in each stream). scores: (B, N) -> (B, n) int64"""
    keep = round(ratio * layout.image)
    ranked = image_token_ranking(scores, layout)[:, :keep]  # (B, keep)
    image = layout.image_slice
    always = torch.cat([torch.arange(0, image.start), torch.arange(image.stop, layout.total)])
    always = always.to(ranked.device).expand(ranked.shape[0], -1)  # (B, text + reference)
    return torch.sort(torch.cat([always, ranked], dim=1), dim=1).values


def gather_tokens(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows ``positions`` (B, n) of each sample of ``x`` (B, N, C) -> (B, n, C)."""
    return x.gather(1, positions[..., None].expand(-1, -1, x.shape[-1]))


def scatter_tokens(cache: torch.Tensor, positions: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """Write ``fresh`` (B, n, C) into ``cache`` (B, N, C) at each row's token ``positions`` (B, n), in place;
    returns cache."""
    index = positions[..., None].expand(-1, -1, cache.shape[-1])  # (B, n, C)
    return cache.scatter_(1, index, fresh.to(cache.dtype))
