"""OFS: offline sensitivity profiling, streamed while ComfyUI samples at full compute.

For every step t, layer l and module m the full-compute output D[t, l, m] (before its gate) is compared with the
outputs of the same module k = 1..K steps earlier, which a ring buffer keeps:

  * caching error  E_c(t, l, m, k) = 1 - cos(D[t-k], D[t])
  * pruning error  E_p(t, l, m, k, r) = 1 - cos(M_r D[t] + (1 - M_r) D[t-k], D[t])

where M_r selects the text and reference tokens plus the top ``r`` share of image tokens, ranked by the score of
the module input at step t (per sample; the cond and uncond rows of a sample share one ranking). A partial recompute at step t gives *exactly* D[t] on the selected tokens: the MLP is
token-wise, and for attention the selected queries attend to the keys and values of every current token, so each
selected row of the attention output is the full computation's row. E_p therefore needs no extra forward pass: it
is this mix. (It would not hold if keys and values were pruned too; SODA never does that.)

The cosine is taken per sample over the flattened tokens x channels tensor and averaged over the batch rows, both
CFG branches and every call at that step. With per-token sums the whole r grid costs one sort and prefix sums.

Memory: the ring holds K outputs of every module of every stream:
    bytes = K * L * M * rows * N * C * itemsize
(rows = batch rows over all CFG streams, N tokens, C channels; itemsize 2 when stored in half precision).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from .flops import FlopModel
from .layout import ModelLayout
from .profile import SensitivityProfile
from .tokens import TokenLayout, TokenScore, image_token_ranking


logger = logging.getLogger(__name__)

Tensor = torch.Tensor
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ProfileConfig:
    max_distance: int = 8  # K: longest reuse distance profiled
    prune_ratios: tuple[float, ...] = DEFAULT_RATIOS  # recompute shares for E_p
    measure_pruning: bool = True
    score: TokenScore = TokenScore.MEAN
    memory_limit_mb: float = 4096.0  # bound on the ring buffer, checked before profiling starts
    half_precision_ring: bool | None = None  # None: half precision on CPU offload when the model is on a GPU

    def __post_init__(self) -> None:
        if not 1 <= self.max_distance <= 32:
            raise ValueError(f"max_distance={self.max_distance}: expected 1..32 reuse steps.")
        if self.measure_pruning and not all(0.0 < r < 1.0 for r in self.prune_ratios):
            raise ValueError(f"prune_ratios={self.prune_ratios}: every ratio must lie strictly between 0 and 1.")
        if self.memory_limit_mb <= 0:
            raise ValueError(f"memory_limit_mb={self.memory_limit_mb}: expected a positive number of megabytes.")


def ring_bytes(
    layout: ModelLayout, config: ProfileConfig, rows: int, tokens: int, channels: int, itemsize: int
) -> int:
    """Memory of the ring buffer: K * L * M * rows * N * C * itemsize bytes."""
    return config.max_distance * layout.num_layers * layout.num_modules * rows * tokens * channels * itemsize


def check_memory(
    layout: ModelLayout, config: ProfileConfig, rows: int, tokens: int, channels: int, itemsize: int
) -> int:
    """Raise before profiling when the ring would exceed the user's bound; returns the bytes it will use."""
    need = ring_bytes(layout, config, rows, tokens, channels, itemsize)
    if need > config.memory_limit_mb * 2**20:
        raise ValueError(
            f"Profiling this run needs {need / 2**20:.0f} MB for its ring of the last {config.max_distance} module "
            f"outputs ({layout.num_layers} layers x {layout.num_modules} modules x {rows} rows x {tokens} tokens x "
            f"{channels} channels), above memory_limit_mb={config.memory_limit_mb:.0f}. Raise the limit, lower "
            "max_distance, or profile with a smaller latent or batch."
        )
    return need


class SensitivityRecorder:
    """Accumulates E_c and E_p from the module outputs a profiling run observes."""

    def __init__(self, layout: ModelLayout, steps: int, config: ProfileConfig) -> None:
        self.layout, self.steps, self.config = layout, steps, config
        k, r = config.max_distance, len(config.prune_ratios) if config.measure_pruning else 0
        shape = (steps, layout.num_layers, layout.num_modules, k)
        self._cache_sum = torch.zeros(shape, dtype=torch.float64)
        self._prune_sum = torch.zeros((*shape, r), dtype=torch.float64)
        self._count = torch.zeros(shape, dtype=torch.float64)
        self._ring: dict[tuple[Any, ...], list[tuple[int, Tensor, Tensor]]] = {}
        self._module_index = {m: i for i, m in enumerate(layout.modules)}
        self._checked = False
        self._ratios = torch.tensor(config.prune_ratios if config.measure_pruning else (), dtype=torch.float64)

    def new_run(self) -> None:
        """A new calibration run starts at step 0: forget the previous run's outputs (keep the sums)."""
        self._ring.clear()

    def observe(
        self,
        step: int,
        layer: int,
        module: str,
        stream: tuple[int, ...],
        output: Tensor,
        scores: Tensor,
        tokens: TokenLayout,
    ) -> None:
        """Take the full-compute output (B, N, C) of one module at one step."""
        if not self._checked:
            self._check_first(output)
        m = self._module_index[module]
        ring = self._ring.setdefault((stream, layer, m), [])
        if ring and ring[-1][0] == step:  # a second call in the same step (e.g. Heun): keep the newest
            ring.pop()
        now = output.detach().float()  # (B, N, C)
        stats = _TokenStats.of(now, scores, tokens, self.config.measure_pruning)
        for past_step, past, past_norms in ring:
            k = step - past_step
            if 1 <= k <= self.config.max_distance:
                self._accumulate(step, layer, m, k, now, stats, past.to(now), past_norms.to(stats.norms))
        ring.append((step, self._store(output.detach()), stats.norms))
        del ring[: -self.config.max_distance]

    def result(self, sigmas: Tensor, flops: FlopModel, meta: dict[str, Any]) -> SensitivityProfile:
        count = self._count.clamp(min=1.0)
        missing = self._count == 0
        cache_error = (self._cache_sum / count).float().masked_fill(missing, float("nan"))
        prune_error = (self._prune_sum / count.unsqueeze(-1)).float()
        prune_error = prune_error.masked_fill(missing.unsqueeze(-1), float("nan"))
        return SensitivityProfile(
            layout=self.layout,
            sigmas=sigmas.double().cpu(),
            cache_error=cache_error,
            prune_error=prune_error,
            prune_ratios=self._ratios.float(),
            flops=flops,
            meta={**meta, "score": self.config.score.value, "max_distance": self.config.max_distance},
        )

    # -------------------------------------------------------------- internals

    def _check_first(self, output: Tensor) -> None:
        self._checked = True
        itemsize = 2 if self._half() else output.element_size()
        check_memory(self.layout, self.config, output.shape[0], output.shape[1], output.shape[2], itemsize)

    def _half(self) -> bool:
        return bool(self.config.half_precision_ring)

    def _store(self, x: Tensor) -> Tensor:
        if self.config.half_precision_ring is None and x.device.type != "cpu":
            return x.to("cpu", torch.float16)
        return x.to(torch.float16) if self._half() else x

    def _accumulate(
        self, step: int, layer: int, m: int, k: int, now: Tensor, stats: _TokenStats, past: Tensor, past_norms: Tensor
    ) -> None:
        """Add E_c and E_p of serving ``now`` (B, N, C) from ``past``, k steps earlier, from per-token sums."""
        dot = torch.einsum("bnc,bnc->bn", now, past).double()  # (B, N) <D_t, D_{t-k}> per token
        cos = dot.sum(-1) / (past_norms.sum(-1) * stats.total).sqrt().clamp(min=1e-30)  # (B,)
        self._cache_sum[step, layer, m, k - 1] += float((1 - cos).sum())
        self._count[step, layer, m, k - 1] += now.shape[0]
        if stats.order is None or not self._ratios.numel():
            return
        c_dot, c_past = stats.prefix(dot), stats.prefix(past_norms)  # (B, N_img + 1)
        keep = (self._ratios * (c_dot.shape[1] - 1)).round().long().to(now.device)  # (R,)
        fresh = stats.fixed[:, None] + stats.prefix_norms[:, keep]  # (B, R) |D_t|^2 of the recomputed tokens
        numerator = fresh + (c_dot[:, -1:] - c_dot[:, keep])  # <mix, D_t>
        mixed_norm = fresh + (c_past[:, -1:] - c_past[:, keep])  # |mix|^2
        cos_r = numerator / (mixed_norm * stats.total[:, None]).sqrt().clamp(min=1e-30)  # (B, R)
        self._prune_sum[step, layer, m, k - 1] += (1 - cos_r).sum(0).cpu()


@dataclass(frozen=True)
class _TokenStats:
    """Per-token sums of one module output D_t that every reuse distance shares."""

    norms: Tensor  # (B, N) |D_t[token]|^2, float64
    total: Tensor  # (B,) |D_t|^2
    fixed: Tensor  # (B,) |D_t|^2 over text and reference tokens (always recomputed)
    order: Tensor | None  # (B, N_img) joint positions of each row's image tokens, most sensitive first
    prefix_norms: Tensor  # (B, N_img + 1) |D_t|^2 over the top-j image tokens

    @classmethod
    def of(cls, now: Tensor, scores: Tensor, tokens: TokenLayout, pruning: bool) -> _TokenStats:
        norms = now.square().sum(-1).double()  # (B, N)
        image = torch.zeros(now.shape[1], dtype=torch.bool, device=now.device)
        image[tokens.image_slice] = True
        order = image_token_ranking(scores, tokens).to(now.device) if pruning else None
        stats = cls(norms, norms.sum(-1), norms[:, ~image].sum(-1), order, norms[:, :0])
        return cls(norms, stats.total, stats.fixed, order, stats.prefix(norms)) if order is not None else stats

    def prefix(self, x: Tensor) -> Tensor:
        """(B, N) -> (B, N_img + 1): sums of ``x`` over the top-j image tokens, j = 0..N_img."""
        assert self.order is not None
        return torch.nn.functional.pad(x.gather(1, self.order).cumsum(-1), (1, 0))
