"""OFS: offline sensitivity profiling, streamed while ComfyUI samples at full compute.

For every step t, layer l and module m the full-compute output D[t, l, m] (before its gate) is compared with the
outputs of the same module k = 1..K steps earlier, which a ring buffer keeps:

  * caching error  E_c(t, l, m, k) = 1 - cos(D[t-k], D[t])
  * pruning error  E_p(t, l, m, k, r) = 1 - cos(M_r D[t] + (1 - M_r) D[t-k], D[t])

where M_r selects the text and reference tokens plus the top ``r`` share of image tokens, ranked by the score of
the module input at step t (per sample; the cond and uncond rows of a sample share one ranking). A partial
recompute at step t gives *exactly* D[t] on the selected tokens: the MLP is token-wise, and for attention the
selected queries attend to the keys and values of every current token, so each selected row of the attention
output is the full computation's row. E_p therefore needs no extra forward pass: it is this mix. (It would not
hold if keys and values were pruned too; SODA never does that.)

The cosine is taken per sample over the flattened tokens x channels tensor and averaged over the batch rows, both
CFG branches and every call at that step. With per-token sums the whole r grid costs one sort and prefix sums.

Sketched profiling (``sketch_dim = d > 0``, the default): the ring keeps D P instead of D, a fixed seeded
Gaussian projection P (C, d) of every token's channels (``sketch.py``: the estimator, why the token mix stays exact
and why the relative error of small 1 - cos stays ~ sqrt(2/d) or less). ``sketch_dim=0`` keeps the outputs whole
(exact; for tests and small models). Memory: ``profiler_memory.py`` (one formula for every buffer; Flux at 1024^2
with 19 + 38 blocks, K = 8, d = 64, batch 1: 1.04 GiB held sketched, 1.42 GiB with the working copies of the widest
output, 2.82 GiB with CFG; exact, the ring alone is 24 GiB at the hidden width).

Nothing leaves the device per call: sketches, per-token norms and the E_c / E_p sums are device tensors, the
counts come from shapes on the host, and ``result`` copies the sums to the host once. (The exact mode's ring goes
to the host in half precision when the model is on a GPU, unless ``half_precision_ring=False``.)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from .compensation_fit import forecast_tables
from .flops import FlopModel
from .layout import ModelLayout
from .profile import SensitivityProfile
from .profiler_memory import ProfilingMemory, check_memory, profiling_bytes, profiling_memory
from .sketch import Sketcher
from .tokens import TokenLayout, TokenScore, image_token_ranking


logger = logging.getLogger(__name__)

Tensor = torch.Tensor
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_SKETCH_DIM = 4096

__all__ = [
    "ProfileConfig",
    "ProfilingMemory",
    "SensitivityRecorder",
    "check_memory",
    "profiling_bytes",
    "profiling_memory",
]


@dataclass(frozen=True)
class ProfileConfig:
    max_distance: int = 8  # K: longest reuse distance profiled
    prune_ratios: tuple[float, ...] = DEFAULT_RATIOS  # recompute shares for E_p
    measure_pruning: bool = True
    score: TokenScore = TokenScore.MEAN
    memory_limit_mb: float = 4096.0  # bound on every buffer profiling holds (profiler_memory), checked up front
    half_precision_ring: bool | None = None  # exact mode: None = half precision on the host when on a GPU
    sketch_dim: int = 64  # d numbers kept per token (seeded random projection); 0 = keep outputs whole (exact)
    sketch_seed: int = 0  # seed of the projections (one per output width)
    time_repeats: int = 3  # timed calls per block configuration for the profile's TimeModel (timing); 0: not timed

    def __post_init__(self) -> None:
        if not 1 <= self.max_distance <= 32:
            raise ValueError(f"max_distance={self.max_distance}: expected 1..32 reuse steps.")
        if self.measure_pruning and not all(0.0 < r < 1.0 for r in self.prune_ratios):
            raise ValueError(f"prune_ratios={self.prune_ratios}: every ratio must lie strictly between 0 and 1.")
        if self.memory_limit_mb <= 0:
            raise ValueError(f"memory_limit_mb={self.memory_limit_mb}: expected a positive number of megabytes.")
        dim = self.sketch_dim
        if isinstance(dim, bool) or not isinstance(dim, int) or not (dim == 0 or 8 <= dim <= MAX_SKETCH_DIM):
            raise ValueError(
                f"sketch_dim={dim!r}: expected 0 (keep module outputs whole: exact, for small models) or an integer "
                f"from 8 to {MAX_SKETCH_DIM} (numbers kept per token; the error of E_c shrinks like "
                "1/sqrt(sketch_dim)). Fix: use 64, the default."
            )
        if isinstance(self.sketch_seed, bool) or not isinstance(self.sketch_seed, int) or self.sketch_seed < 0:
            raise ValueError(f"sketch_seed={self.sketch_seed!r}: expected a non-negative integer, e.g. 0.")
        repeats = self.time_repeats
        if isinstance(repeats, bool) or not isinstance(repeats, int) or not 0 <= repeats <= 100:
            raise ValueError(
                f"time_repeats={repeats!r}: expected an integer from 0 (do not time the blocks; the profile then "
                "cannot plan for wall time) to 100. Fix: use 3, the default."
            )


@dataclass
class _Entry:
    """One past output of one module of one stream, as the ring keeps it."""

    step: int
    stored: Tensor  # (B, N, W): the sketch (float32) or the output itself (exact)
    norms: Tensor  # (B, N) |stored[token]|^2, accumulator dtype, on the output's device


class SensitivityRecorder:
    """Accumulates E_c and E_p from the module outputs a profiling run observes."""

    def __init__(self, layout: ModelLayout, steps: int, config: ProfileConfig) -> None:
        self.layout, self.steps, self.config = layout, steps, config
        k, r = config.max_distance, len(config.prune_ratios) if config.measure_pruning else 0
        self._shape = (steps, layout.num_layers, layout.num_modules, k)
        self._count = torch.zeros(self._shape, dtype=torch.float64)  # host: counts follow from shapes
        self._cache_sum: Tensor | None = None  # (T, L, M, K) on the outputs' device, made on the first call
        self._prune_sum: Tensor | None = None  # (T, L, M, K, R)
        self._ring: dict[tuple[Hashable, int, int], list[_Entry]] = {}
        self._streams: dict[Hashable, tuple[int, int, int, int]] = {}  # stream -> rows, tokens, channels, itemsize
        self._module_index = {m: i for i, m in enumerate(layout.modules)}
        self._ratios = torch.tensor(config.prune_ratios if config.measure_pruning else (), dtype=torch.float64)
        self._num_ratios = r
        self._keep: dict[tuple[int, torch.device], Tensor] = {}  # (N_img, device) -> (R,) recomputed image tokens
        self._sketch = Sketcher(config.sketch_dim, config.sketch_seed) if config.sketch_dim else None
        # (run, stream, layer, module) -> (T, K+1, B) <D_t, D_{t-j}> per row, for the predictors' errors
        self._gram: dict[tuple[int, Hashable, int, int], Tensor] = {}
        self._run = 0

    def new_run(self) -> None:
        """A new calibration run starts at step 0: forget the previous run's outputs (keep the sums)."""
        self._ring.clear()
        self._run += 1

    def observe(
        self,
        step: int,
        layer: int,
        module: str,
        stream: Hashable,
        output: Tensor,
        scores: Tensor,
        tokens: TokenLayout,
    ) -> None:
        """Take the full-compute output (B, N, C) of one module at one step."""
        if stream not in self._streams:
            self._check_stream(stream, output)
        m = self._module_index[module]
        ring = self._ring.setdefault((stream, layer, m), [])
        if ring and ring[-1].step == step:  # a second call in the same step (e.g. Heun): keep the newest
            ring.pop()
        output = output.detach()
        now = self._sketch(output) if self._sketch is not None else output.float()  # (B, N, W) float32
        stats = _TokenStats.of(now, scores, tokens, self.config.measure_pruning)
        self._sums(now.device, stats.norms.dtype)
        gram = self._gram_of(stream, layer, m, stats.total)
        gram[step, 0] = stats.total
        for entry in ring:
            k = step - entry.step
            if 1 <= k <= self.config.max_distance:
                gram[step, k] = self._accumulate(step, layer, m, k, now, stats, entry)
        ring[:] = [e for e in ring if e.step > step - self.config.max_distance]  # the next steps need no older
        ring.append(self._entry(step, output, now, stats.norms))

    def result(self, sigmas: Tensor, flops: FlopModel, meta: dict[str, Any]) -> SensitivityProfile:
        count = self._count.clamp(min=1.0)
        missing = self._count == 0
        cache_sum, prune_sum = self._sums_on_host()
        cache_error = (cache_sum / count).float().masked_fill(missing, float("nan"))
        prune_error = (prune_sum / count.unsqueeze(-1)).float()
        prune_error = prune_error.masked_fill(missing.unsqueeze(-1), float("nan"))
        forecast_error, forecast_weight = forecast_tables(self._grams_by_cell(), *self._shape)
        return SensitivityProfile(
            layout=self.layout,
            sigmas=sigmas.double().cpu(),
            cache_error=cache_error,
            prune_error=prune_error,
            prune_ratios=self._ratios.float(),
            flops=flops,
            forecast_error=forecast_error,
            forecast_weight=forecast_weight,
            meta={
                **meta,
                "score": self.config.score.value,
                "max_distance": self.config.max_distance,
                "sketch_dim": self.config.sketch_dim,
                "sketch_seed": self.config.sketch_seed,
            },
        )

    def held_bytes(self) -> ProfilingMemory:
        """Bytes of the tensors this recorder holds now, in the parts of ``profiler_memory`` (working = 0)."""
        entries = [e for ring in self._ring.values() for e in ring]
        sums = [t for t in (self._cache_sum, self._prune_sum) if t is not None]
        projections = self._sketch.held() if self._sketch is not None else []
        return ProfilingMemory(
            ring=_storage_bytes([e.stored for e in entries]),
            norms=_storage_bytes([e.norms for e in entries]),
            accumulators=_storage_bytes([self._count, *sums, *self._gram.values()]),
            projections=_storage_bytes(projections),
            working=0,
        )

    # -------------------------------------------------------------- internals

    def _check_stream(self, stream: Hashable, output: Tensor) -> None:
        """Bound the buffers of every stream seen so far (rows add up; tokens and channels: the largest)."""
        rows, tokens, channels = output.shape
        self._streams[stream] = (int(rows), int(tokens), int(channels), self._stored_itemsize(output))
        shapes = list(self._streams.values())
        total_rows = sum(s[0] for s in shapes)
        tokens, channels, itemsize = (max(s[i] for s in shapes) for i in (1, 2, 3))
        check_memory(self.layout, self.config, total_rows, tokens, channels, itemsize, self.steps)

    def _gram_of(self, stream: Hashable, layer: int, m: int, like: Tensor) -> Tensor:
        key = (self._run, stream, layer, m)
        if key not in self._gram:
            shape = (self.steps, self.config.max_distance + 1, like.shape[0])
            self._gram[key] = torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)
        return self._gram[key]

    def _grams_by_cell(self) -> dict[tuple[int, int], Tensor]:
        """Every run's and stream's rows of each (layer, module), side by side (T, K+1, B_total), on the host."""
        cells: dict[tuple[int, int], list[Tensor]] = {}
        for (_, _, layer, m), gram in self._gram.items():
            cells.setdefault((layer, m), []).append(gram.double().cpu())
        return {cell: torch.cat(grams, dim=2) for cell, grams in cells.items()}

    def _offload(self, x: Tensor) -> bool:
        return self._sketch is None and self.config.half_precision_ring is None and x.device.type != "cpu"

    def _stored_itemsize(self, output: Tensor) -> int:
        if self._sketch is not None:
            return 4
        return 2 if self.config.half_precision_ring or self._offload(output) else output.element_size()

    def _entry(self, step: int, output: Tensor, now: Tensor, norms: Tensor) -> _Entry:
        """What the ring keeps of this output: the sketch, the output itself, or its half-precision copy (with the
        norms of exactly what is kept, so that cosines against it stay consistent)."""
        if self._sketch is not None:
            return _Entry(step, now, norms)
        if self.config.half_precision_ring or self._offload(output):
            half = output.to(torch.float16)  # (B, N, C)
            rounded = half.float()
            norms = torch.einsum("bnc,bnc->bn", rounded, rounded).to(norms.dtype)
            del rounded
            return _Entry(step, half.to("cpu") if self._offload(output) else half, norms)
        owns = output.is_contiguous() and output.untyped_storage().nbytes() == output.numel() * output.element_size()
        return _Entry(step, output if owns else output.clone(memory_format=torch.contiguous_format), norms)

    def _sums(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        if self._cache_sum is None or self._prune_sum is None:
            self._cache_sum = torch.zeros(self._shape, dtype=dtype, device=device)
            self._prune_sum = torch.zeros((*self._shape, self._num_ratios), dtype=dtype, device=device)
        return self._cache_sum, self._prune_sum

    def _sums_on_host(self) -> tuple[Tensor, Tensor]:
        if self._cache_sum is None or self._prune_sum is None:
            empty = torch.zeros(self._shape, dtype=torch.float64)
            return empty, torch.zeros((*self._shape, self._num_ratios), dtype=torch.float64)
        return self._cache_sum.double().cpu(), self._prune_sum.double().cpu()

    def _keep_counts(self, image: int, device: torch.device) -> Tensor:
        """(R,) number of image tokens recomputed at each ratio (Python's rounding, as ``recompute_positions``)."""
        key = (image, device)
        if key not in self._keep:
            counts = [round(r * image) for r in self.config.prune_ratios] if self.config.measure_pruning else []
            self._keep[key] = torch.tensor(counts, dtype=torch.long, device=device)
        return self._keep[key]

    def _accumulate(
        self, step: int, layer: int, m: int, k: int, now: Tensor, stats: _TokenStats, entry: _Entry
    ) -> Tensor:
        """Add E_c and E_p of serving ``now`` (B, N, W) from ``entry``, k steps earlier, from per-token sums;
        returns the rows' inner products <D_t, D_{t-k}> (B,)."""
        past = entry.stored.to(now.device, now.dtype, non_blocking=True)  # (B, N, W)
        past_norms = entry.norms  # (B, N)
        cache_sum, prune_sum = self._sums(now.device, stats.norms.dtype)
        dot = torch.einsum("bnw,bnw->bn", now, past).to(stats.norms.dtype)  # (B, N) <D_t, D_{t-k}> per token
        cos = dot.sum(-1) / (past_norms.sum(-1) * stats.total).sqrt().clamp(min=1e-30)  # (B,)
        cache_sum[step, layer, m, k - 1] += (1 - cos).sum()
        self._count[step, layer, m, k - 1] += now.shape[0]
        if stats.order is None or not self._num_ratios:
            return dot.sum(-1)
        c_dot, c_past = stats.prefix(dot), stats.prefix(past_norms)  # (B, N_img + 1)
        keep = self._keep_counts(c_dot.shape[1] - 1, now.device)  # (R,)
        fresh = stats.fixed[:, None] + stats.prefix_norms[:, keep]  # (B, R) |D_t|^2 of the recomputed tokens
        numerator = fresh + (c_dot[:, -1:] - c_dot[:, keep])  # <mix, D_t>
        mixed_norm = fresh + (c_past[:, -1:] - c_past[:, keep])  # |mix|^2
        cos_r = numerator / (mixed_norm * stats.total[:, None]).sqrt().clamp(min=1e-30)  # (B, R)
        prune_sum[step, layer, m, k - 1] += (1 - cos_r).sum(0)
        return dot.sum(-1)


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for the per-token sums, except where the device has none (Apple MPS: float32)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _storage_bytes(tensors: list[Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (storages without data, e.g. on the meta device, count
    once per tensor)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[(t.device, storage.data_ptr() or id(t))] = storage.nbytes()
    return sum(storages.values())


@dataclass(frozen=True)
class _TokenStats:
    """Per-token sums of one module output D_t (or its sketch) that every reuse distance shares."""

    norms: Tensor  # (B, N) |D_t[token]|^2, accumulator dtype
    total: Tensor  # (B,) |D_t|^2
    fixed: Tensor  # (B,) |D_t|^2 over text and reference tokens (always recomputed)
    order: Tensor | None  # (B, N_img) joint positions of each row's image tokens, most sensitive first
    prefix_norms: Tensor  # (B, N_img + 1) |D_t|^2 over the top-j image tokens

    @classmethod
    def of(cls, now: Tensor, scores: Tensor, tokens: TokenLayout, pruning: bool) -> _TokenStats:
        norms = torch.einsum("bnw,bnw->bn", now, now).to(accumulator_dtype(now.device))  # (B, N)
        total = norms.sum(-1)  # (B,)
        fixed = total - norms[:, tokens.image_slice].sum(-1)  # (B,) no boolean mask: no device sync
        order = image_token_ranking(scores, tokens).to(now.device) if pruning else None
        stats = cls(norms, total, fixed, order, norms[:, :0])
        return cls(norms, total, fixed, order, stats.prefix(norms)) if order is not None else stats

    def prefix(self, x: Tensor) -> Tensor:
        """(B, N) -> (B, N_img + 1): sums of ``x`` over the top-j image tokens, j = 0..N_img."""
        assert self.order is not None
        return torch.nn.functional.pad(x.gather(1, self.order).cumsum(-1), (1, 0))
