"""FLOPs of a SODA run: measured once per block and shape, attributed to SODA's modules, counted for every call.

The first call of each shape runs under ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and attention,
2 FLOPs per multiply-add). ``FlopMeter`` splits what it counts inside a block call between the modules whose
submodules run (``enter`` / ``exit`` around each intercepted call, nested calls charge the innermost owner) and the
block's own remainder (modulation), which runs whatever the plan. Attention kernels FlopCounterMode does not know
(custom CUDA kernels) are priced from their shapes instead. Everything outside the served blocks (embedders, final
layer, blocks SODA does not serve) is the model's ``base``.

For partial recompute each module's FLOPs are split into a part that shrinks with the share ``r`` of image tokens
recomputed (``per_ratio``: its image rows) and a part that does not (``fixed``: text and reference rows, and keys and
values of every token for attention): ``cost(r) = fixed + r * per_ratio``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .flops import FlopModel
from .layout import ModelLayout


@dataclass(frozen=True)
class ModuleCosts:
    """FLOPs of one block call, per module (see the module docstring)."""

    full: dict[str, float]
    fixed: dict[str, float]
    per_ratio: dict[str, float]
    base: float  # computed whatever the plan (modulation)

    def of(self, module: str, ratio: float) -> float:
        if ratio >= 1.0:
            return self.full.get(module, 0.0)
        if ratio <= 0.0:
            return 0.0
        return self.fixed.get(module, 0.0) + ratio * self.per_ratio.get(module, 0.0)

    @property
    def total(self) -> float:
        return self.base + sum(self.full.values())


class FlopMeter:
    """Attributes the FLOPs a counter sees during one block call to the module whose code is running."""

    def __init__(self, total: Callable[[], float]) -> None:
        self._total = total
        self._last = total()
        self._stack: list[tuple[str | None, float]] = []
        self.full: dict[str, float] = {}
        self.prunable: dict[str, float] = {}
        self.base = 0.0

    def enter(self, owner: str | None, share: float = 0.0) -> None:
        """A call owned by module ``owner`` starts; ``share`` of its FLOPs shrinks with the recompute ratio."""
        self._charge()
        self._stack.append((owner, share))

    def exit(self, at_least: float = 0.0) -> None:
        """The innermost call ends; ``at_least``: its FLOPs by shape, used when the counter saw none."""
        self._charge(at_least)
        self._stack.pop()

    @contextlib.contextmanager
    def ignoring(self) -> Iterator[None]:
        """FLOPs counted inside this block are nobody's (the profiler's observer: sketches and sums)."""
        self._charge()
        try:
            yield
        finally:
            self._last = float(self._total())

    def costs(self) -> ModuleCosts:
        self._charge()
        fixed = {m: f - self.prunable.get(m, 0.0) for m, f in self.full.items()}
        return ModuleCosts(dict(self.full), fixed, dict(self.prunable), self.base)

    def _charge(self, at_least: float = 0.0) -> None:
        now = float(self._total())
        delta, self._last = now - self._last, now
        if delta < 0.5 * at_least:
            delta = at_least
        owner, share = self._stack[-1] if self._stack else (None, 0.0)
        if owner is None:
            self.base += delta
        else:
            self.full[owner] = self.full.get(owner, 0.0) + delta
            self.prunable[owner] = self.prunable.get(owner, 0.0) + delta * share


def attention_flops(q: torch.Tensor, k: torch.Tensor, skip_reshape: bool, heads: int) -> float:
    """``softmax(Q K^T) V`` from the shapes of q and k (B, H, N, D) or (B, N, H*D): 4 * B * H * N_q * N_k * D."""
    if skip_reshape:
        b, h, n_q, d = q.shape
        n_k = k.shape[2]
    else:
        b, n_q, hd = q.shape
        n_k, h, d = k.shape[1], heads, hd // max(heads, 1)
    return 4.0 * b * h * n_q * n_k * d


@dataclass
class FlopLedger:
    """Measured costs of a run's blocks and model calls, and the FLOPs its calls spent."""

    blocks: dict[tuple[int, tuple[int, ...]], ModuleCosts] = field(default_factory=dict)  # (layer, shape) -> costs
    calls: dict[tuple[int, ...], float] = field(default_factory=dict)  # call shape -> base FLOPs of a call
    flops: float = 0.0
    full_flops: float = 0.0
    full_modules: int = 0
    partial_modules: int = 0
    reused_modules: int = 0

    def count_call(self, shape: tuple[int, ...]) -> None:
        base = self.calls.get(shape, 0.0)
        self.flops += base
        self.full_flops += base

    def count_block(self, costs: ModuleCosts, ratios: dict[str, float]) -> None:
        self.flops += costs.base + sum(costs.of(m, r) for m, r in ratios.items())
        self.full_flops += costs.total
        for module, r in ratios.items():
            if costs.full.get(module, 0.0) <= 0.0:
                continue  # a module this block does not have
            if r >= 1.0:
                self.full_modules += 1
            elif r <= 0.0:
                self.reused_modules += 1
            else:
                self.partial_modules += 1

    def flop_model(self, layout: ModelLayout) -> FlopModel:
        """The per-batch-row FlopModel of the shapes this run measured (first shape of every layer), for a profile.

        Rows are the model call's batch rows: a block may see more (PixelDiT's pixel blocks run on every patch of
        every sample as one batch), and its FLOPs are still spent once per sample."""
        full = torch.zeros(layout.num_layers, layout.num_modules, dtype=torch.float64)
        fixed, per_ratio = torch.zeros_like(full), torch.zeros_like(full)
        base, seen = 0.0, set()
        call = next(iter(self.calls.items()), None)
        for (layer, shape), costs in self.blocks.items():
            if layer in seen:
                continue
            seen.add(layer)
            rows = call[0][0] if call is not None else shape[0]
            for i, m in enumerate(layout.modules):
                full[layer, i] = costs.full.get(m, 0.0) / rows
                fixed[layer, i] = costs.fixed.get(m, 0.0) / rows
                per_ratio[layer, i] = costs.per_ratio.get(m, 0.0) / rows
            base += costs.base / rows
        if len(seen) != layout.num_layers:
            missing = [str(layout.blocks[i]) for i in range(layout.num_layers) if i not in seen]
            raise RuntimeError(
                f"SODA profiling saw {len(seen)} of {layout.num_layers} blocks (never called: {', '.join(missing)}); "
                "the model's blocks do not match its layout."
            )
        if call is not None:
            base += call[1] / call[0][0]
        return FlopModel(full, fixed, per_ratio, base, 0.0)
