"""An attention call as ComfyUI's ``optimized_attention_override`` receives it: ``func(q, k, v, heads, mask=None,
attn_precision=None, skip_reshape=False, skip_output_reshape=False, **kwargs)`` (``comfy/ldm/modules/attention.py``).

q, k, v are (B, H, N, D) with ``skip_reshape``, else (B, N, H*D); the output is (B, H, N, D) with
``skip_output_reshape``, else (B, N, H*D).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...accounting import attention_flops


Tensor = torch.Tensor


def _reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    mask: Tensor | None = None,
    attn_precision: Any = None,
    skip_reshape: bool = False,
    skip_output_reshape: bool = False,
    **kwargs: Any,
) -> None:
    """The signature of ComfyUI's attention functions, to read a call's arguments by name."""


_SIGNATURE = inspect.signature(_reference)


@dataclass
class AttentionCall:
    """One attention call: the function ComfyUI chose and its arguments."""

    func: Callable[..., Tensor]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __post_init__(self) -> None:
        self._arguments = _SIGNATURE.bind(*self.args, **self.kwargs).arguments

    def run(self) -> Tensor:
        return self.func(*self.args, **self.kwargs)

    @property
    def query(self) -> Tensor:
        return self._arguments["q"]  # type: ignore[no-any-return]

    @property
    def skip_reshape(self) -> bool:
        return bool(self._arguments.get("skip_reshape", False))

    @property
    def skip_output_reshape(self) -> bool:
        return bool(self._arguments.get("skip_output_reshape", False))

    @property
    def query_tokens(self) -> int:
        return int(self.query.shape[2] if self.skip_reshape else self.query.shape[1])

    def flops(self) -> float:
        return attention_flops(self.query, self._arguments["k"], self.skip_reshape, int(self._arguments["heads"]))

    def zeros(self, tokens: int | None = None) -> Tensor:
        """A zero output of this call's shape (with ``tokens`` query tokens)."""
        q, heads = self.query, int(self._arguments["heads"])
        n = self.query_tokens if tokens is None else tokens
        if self.skip_reshape:
            b, h, _, d = q.shape
        else:
            b, _, hd = q.shape
            h, d = heads, hd // heads
        shape = (b, h, n, d) if self.skip_output_reshape else (b, n, h * d)
        return q.new_zeros(shape, dtype=self._arguments["v"].dtype)

    def on_queries(self, positions: Tensor) -> Tensor:
        """The output rows of the queries at ``positions`` (B, n) against every key, scattered into zeros: the rows
        a full call gives, without computing the others."""
        token_dim = 2 if self.skip_reshape else 1
        q = self.query
        bound = _SIGNATURE.bind(*self.args, **self.kwargs)
        bound.arguments["q"] = q.gather(token_dim, _token_index(positions, token_dim, q))  # (B, H, n, D) / (B, n, C)
        mask = bound.arguments.get("mask")
        if torch.is_tensor(mask) and mask.dim() >= 2 and mask.shape[-2] == self.query_tokens > 1:
            bound.arguments["mask"] = _query_rows(mask, positions)
        out = self.func(*bound.args, **bound.kwargs)  # (B, n, C) or (B, H, n, D)
        out_dim = 2 if self.skip_output_reshape else 1
        return self.zeros().scatter_(out_dim, _token_index(positions, out_dim, out), out)


def _token_index(positions: Tensor, token_dim: int, like: Tensor) -> Tensor:
    """``positions`` (B, n) as a gather/scatter index for a tensor shaped like ``like`` along ``token_dim``."""
    shape = (positions.shape[0],) + (1,) * (token_dim - 1) + (positions.shape[1], 1)
    return positions.reshape(shape).expand(*like.shape[:token_dim], positions.shape[1], like.shape[-1])


def _query_rows(mask: Tensor, positions: Tensor) -> Tensor:
    """Rows ``positions`` (B, n) of an attention mask over (queries, keys), shaped as ComfyUI broadcasts masks
    ((N, N) -> (1, 1, N, N), (B, N, N) -> (B, 1, N, N)): (B, H or 1, n, N_k)."""
    while mask.dim() < 4:
        mask = mask.unsqueeze(0) if mask.dim() == 2 else mask.unsqueeze(1)
    mask = mask.expand(positions.shape[0], *mask.shape[1:])
    index = positions[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[-1])
    return mask.gather(2, index)
