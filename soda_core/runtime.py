"""SODA during sampling: per-run state that the ComfyUI hooks consult on every model call and block call.

One ``SodaRun`` lives exactly as long as one sampling run (ComfyUI creates it in its OUTER_SAMPLE wrapper and drops
it in ``finally``). It knows the step from the sigma of each model call, keeps one module-output cache per CFG
stream, runs each block as the schedule says, and counts the FLOPs it actually spends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .adapters.base import BlockStep, Granularity, ModelAdapter, ModuleCosts, Observer
from .flops import FlopModel, linear_flops
from .schedule import Schedule
from .tokens import TokenLayout, TokenScore


logger = logging.getLogger(__name__)

Tensor = torch.Tensor
Stream = tuple[int, ...]
# (step, layer, module, stream, output (B, N, C), scores (B, N), token layout)
StepObserver = Callable[[int, int, str, Stream, Tensor, Tensor, TokenLayout], None]


def step_of_sigma(sigmas: Sequence[float], sigma: float) -> int:
    """Index of the sampling step whose interval [sigma_{i+1}, sigma_i] holds ``sigma``; ``sigmas`` is the run's
    decreasing grid (T+1 values, plain floats so the lookup touches no tensor).

    Samplers that call the model between two sigmas (Heun, DPM-2) get the step that interval belongs to; a call at
    exactly sigma_i belongs to step i.
    """
    threshold = sigma - 1e-5 * max(1.0, abs(sigma))
    step = 0
    for i, value in enumerate(sigmas[:-1]):
        if value < threshold:
            break
        step = i
    return step


@dataclass
class RunReport:
    """What a run did, for the log line and the nodes' summaries."""

    steps: int = 0
    model_calls: int = 0
    flops: float = 0.0
    full_flops: float = 0.0
    seconds: float = 0.0
    reused_modules: int = 0
    partial_modules: int = 0
    full_modules: int = 0
    cache_misses: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def flops_ratio(self) -> float:
        return self.full_flops / self.flops if self.flops else 1.0

    def summary(self) -> str:
        return (
            f"{self.model_calls} model calls over {self.steps} steps in {self.seconds:.1f} s; "
            f"transformer FLOPs {self.flops / 1e9:.2f} G of {self.full_flops / 1e9:.2f} G full "
            f"({self.flops_ratio:.2f}x); modules full/partial/reused: "
            f"{self.full_modules}/{self.partial_modules}/{self.reused_modules}"
            + (f"; {self.cache_misses} cache misses computed fully" if self.cache_misses else "")
        )


class SodaRun:
    """The state of one sampling run under a SODA schedule."""

    def __init__(
        self,
        adapter: ModelAdapter,
        schedule: Schedule,
        ops: dict[str, Callable[..., Any]],
        score: TokenScore = TokenScore.MEAN,
        observer: StepObserver | None = None,
    ) -> None:
        self.adapter, self.schedule, self.ops, self.score = adapter, schedule, ops, score
        granularity = Granularity.BLOCK if schedule.layout.modules == ("block",) else Granularity.MODULE
        self.programs = adapter.programs_for(granularity)
        self.observer = observer
        self.layers = {(b.kind, b.index): layer for layer, b in enumerate(schedule.layout.blocks)}
        # per step and layer: {module: recompute ratio}, read once here instead of indexing tensors per block call
        modules = schedule.layout.modules
        self._ratios = [[dict(zip(modules, row, strict=True)) for row in step] for step in schedule.recompute.tolist()]
        self._sigmas = schedule.sigmas.tolist()
        self._distance = [schedule.distance(t) for t in range(schedule.steps)]
        self._records = [schedule.needs_cache_after(t) for t in range(schedule.steps)]
        self.report = RunReport(steps=schedule.steps)
        self._caches: dict[Stream, dict[int, dict[str, Tensor]]] = {}
        self._costs: dict[tuple[int, tuple[int, ...]], ModuleCosts] = {}
        self._base_flops: dict[tuple[int, ...], float] = {}
        self._started = time.perf_counter()
        self._model: torch.nn.Module | None = None
        self._lists = {kind: attribute for attribute, kind in adapter.block_lists}
        self.step = 0
        self.stream: Stream = ()
        self.groups = 1  # CFG chunks of the current call ([cond rows; uncond rows]); they share recomputed tokens
        self.tokens = TokenLayout(0, 0)

    # ---------------------------------------------------------------- calls

    def begin_call(
        self, diffusion_model: torch.nn.Module, x: Tensor, sigma: float, context: Tensor | None, stream: Stream
    ) -> None:
        """A model call starts: find its step, its CFG stream and its token layout; count the non-block FLOPs."""
        self.step = step_of_sigma(self._sigmas, sigma)
        self.stream = (*stream, x.shape[0])
        self.groups = len(stream) if len(stream) > 1 and x.shape[0] % len(stream) == 0 else 1
        patch = int(getattr(diffusion_model, self.adapter.patch_size_attr, 1))
        text = int(context.shape[1]) if context is not None else 0
        self.tokens = TokenLayout(text=text, image=self.adapter.image_tokens(x.shape, patch))
        self.report.model_calls += 1
        self._model = diffusion_model
        key = (x.shape[0], *x.shape[2:], text)
        if key not in self._base_flops:
            self._base_flops[key] = _base_flops(self.adapter, diffusion_model, self.tokens, x.shape[0])
        self.report.flops += self._base_flops[key]
        self.report.full_flops += self._base_flops[key]

    def run_block(
        self,
        kind: str,
        index: int,
        block: torch.nn.Module,
        args: dict[str, Any],
        original: Callable[[dict[str, Any]], dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """One block call, as the schedule plans it for the current step."""
        layer = self.layers.get((kind, index))
        if layer is None:  # a block the schedule does not cover runs as ComfyUI would run it
            return original(args)
        tokens = self._complete_tokens(kind, args)
        program = self.programs[kind]
        costs = self._block_costs(layer, program, block, args, tokens)
        anchor = self._distance[self.step] == 0
        record = anchor and self._records[self.step]
        modules = self.schedule.layout.modules
        ratios = self._ratios[self.step][layer]
        cache = self._caches.setdefault(self.stream, {}).setdefault(layer, {})
        if not anchor and not _cache_fits(cache, ratios, args):
            self.report.cache_misses += 1
            if self.report.cache_misses == 1:
                logger.warning("SODA: no usable cache for a reuse step (new CFG stream or shape); computing fully.")
            ratios, record = dict.fromkeys(modules, 1.0), True
        self._count(costs, ratios, record or self.observer is not None)
        if all(r >= 1.0 for r in ratios.values()) and not record and self.observer is None:
            return original(args)  # plain anchor: the block's own forward, bit-exact and without overhead
        step = BlockStep(
            ratios,
            cache,
            tokens,
            self.ops,
            record=record,
            score=self.score,
            observe=self._observer_for(layer, tokens),
            original=original,
            groups=self.groups,
        )
        return program.run(block, args, step)

    def block_module(self, kind: str, index: int) -> torch.nn.Module:
        """The block ``(kind, index)`` of the model this call runs."""
        if self._model is None:
            raise RuntimeError("SODA: a block ran before the model call was announced (APPLY_MODEL wrapper missing).")
        return getattr(self._model, self._lists[kind])[index]  # type: ignore[no-any-return]

    def finish(self) -> RunReport:
        self.report.seconds = time.perf_counter() - self._started
        self._caches.clear()
        return self.report

    def flop_model(self) -> FlopModel:
        """The per-batch-row FlopModel of the shapes this run saw (first call of every layer), for a profile."""
        layout = self.schedule.layout
        full = torch.zeros(layout.num_layers, layout.num_modules, dtype=torch.float64)
        fixed, per_ratio = torch.zeros_like(full), torch.zeros_like(full)
        base, record, seen = 0.0, 0.0, set()
        for (layer, shape), costs in self._costs.items():
            if layer in seen:
                continue
            seen.add(layer)
            batch = shape[0]
            for i, m in enumerate(layout.modules):
                full[layer, i] = costs.full[m] / batch
                fixed[layer, i] = costs.fixed[m] / batch
                per_ratio[layer, i] = costs.per_ratio[m] / batch
            base += costs.base / batch
            record += costs.record / batch
        if len(seen) != layout.num_layers:
            raise RuntimeError(
                f"SODA profiling saw {len(seen)} of {layout.num_layers} blocks; the layout does not match."
            )
        model_base = next(iter(self._base_flops.items()), None)
        if model_base is not None:
            base += model_base[1] / model_base[0][0]
        return FlopModel(full, fixed, per_ratio, base, record)

    # -------------------------------------------------------------- helpers

    def _complete_tokens(self, kind: str, args: dict[str, Any]) -> TokenLayout:
        """Reference-image tokens (e.g. Flux Kontext) follow the image tokens in the image stream."""
        stream_tokens = int(args["img"].shape[1]) - (self.tokens.text if "txt" not in args else 0)
        reference = max(stream_tokens - self.tokens.image, 0)
        return TokenLayout(self.tokens.text, self.tokens.image, reference)

    def _block_costs(
        self, layer: int, program: Any, block: torch.nn.Module, args: dict[str, Any], tokens: TokenLayout
    ) -> ModuleCosts:
        key = (layer, (int(args["img"].shape[0]), tokens.text, tokens.image, tokens.reference))
        if key not in self._costs:
            self._costs[key] = program.costs(block, args, tokens)
        return self._costs[key]

    def _count(self, costs: ModuleCosts, ratios: dict[str, float], record: bool) -> None:
        full = sum(costs.full.values())
        spent = costs.base + sum(costs.of(m, r) for m, r in ratios.items())
        if record and all(r >= 1.0 for r in ratios.values()):
            spent += costs.record
        self.report.flops += spent
        self.report.full_flops += costs.base + full
        for r in ratios.values():
            if r >= 1.0:
                self.report.full_modules += 1
            elif r <= 0.0:
                self.report.reused_modules += 1
            else:
                self.report.partial_modules += 1

    def _observer_for(self, layer: int, tokens: TokenLayout) -> Observer | None:
        if self.observer is None:
            return None
        observer, step, stream = self.observer, self.step, self.stream

        def observe(module: str, output: Tensor, scores: Tensor) -> None:
            observer(step, layer, module, stream, output, scores, tokens)

        return observe


def _cache_fits(cache: dict[str, Tensor], ratios: dict[str, float], args: dict[str, Any]) -> bool:
    batch = args["img"].shape[0]
    return all(m in cache and cache[m].shape[0] == batch for m, r in ratios.items() if r < 1.0)


def _base_flops(adapter: ModelAdapter, model: torch.nn.Module, tokens: TokenLayout, batch: int) -> float:
    """Linear layers outside the transformer blocks (embedders, final layer), counted from their shapes."""
    block_lists = {name for name, _ in adapter.block_lists}
    rows_of = {"image": tokens.image + tokens.reference, "text": tokens.text}
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.split(".")[0] in block_lists:
            continue
        kind = next((k for prefix, k in adapter.token_rows.items() if name == prefix), None)
        rows = rows_of[kind] if kind else 1
        total += linear_flops(batch * rows, module.in_features, module.out_features)
    return float(total)
