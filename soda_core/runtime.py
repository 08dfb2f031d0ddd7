"""SODA during sampling: the per-run state that ComfyUI's seams consult on every model call, block call,
intercepted submodule call and attention call.

One ``SodaRun`` lives exactly as long as one sampling run (created in ComfyUI's OUTER_SAMPLE wrapper, dropped in
``finally``). It knows the step from the sigma of each model call, keeps one module-output cache per *call
identity* (which rows, what the call computes, and the how-manieth call of that kind in the step: two different
computations never share a cache), runs each block as the schedule says and counts the FLOPs it spends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .accounting import FlopLedger, FlopMeter, ModuleCosts
from .adapters import Layer, ServedModel
from .adapters.check import Verdict, known_verdict, verdict_for
from .adapters.patterns import AttentionCall
from .adapters.step import BlockCall, BlockStep, Cache, Observer, stream_layouts
from .compensation import Compensator, entry_cells, partial_entries, run_cells
from .flops import FlopModel
from .layout import BLOCK_MODULES, Granularity
from .run_report import RunReport, step_of_sigma
from .schedule import Schedule
from .timing_probe import ProbeCall, TimeProbe
from .tokens import TokenLayout, TokenScore, token_count


logger = logging.getLogger(__name__)

Tensor = torch.Tensor
# (step, layer, module, call identity, output (B, N, C), scores (B, N), token layout)
StepObserver = Callable[[int, int, str, Hashable, Tensor, Tensor, TokenLayout], None]


@dataclass
class _Call:
    """The model call in progress."""

    step: int
    key: Hashable  # cache identity
    shape: tuple[int, ...]  # FLOP measurement key of the call
    image: int  # image tokens of the latent
    text: int  # text tokens (context length, then the length of the text stream blocks see)
    groups: int
    blocks: Counter[int] = field(default_factory=Counter)  # calls of each layer so far (VACE runs one per control)


@dataclass
class CostBook:
    """Measured FLOPs, kept across the runs of one patched model (shapes repeat)."""

    ledger_blocks: dict[tuple[int, tuple[int, ...]], ModuleCosts] = field(default_factory=dict)
    calls: dict[tuple[int, ...], float] = field(default_factory=dict)


class SodaRun:
    """The state of one sampling run under a SODA schedule."""

    def __init__(
        self,
        served: ServedModel,
        schedule: Schedule,
        score: TokenScore = TokenScore.MEAN,
        observer: StepObserver | None = None,
        costs: CostBook | None = None,
        where: str = "this ComfyUI",
        timer: TimeProbe | None = None,
    ) -> None:
        self.served, self.schedule, self.score, self.observer = served, schedule, score, observer
        self.timer = timer  # profiling: times the blocks for the profile's TimeModel (timing_probe)
        self.where = where  # e.g. "ComfyUI 0.33.0", for warnings
        self.costs = costs if costs is not None else CostBook()
        self.ledger = FlopLedger(self.costs.ledger_blocks, self.costs.calls)
        modules = schedule.layout.modules
        # per step and layer: {module: ratio}, read once here instead of indexing tensors per block call
        self._ratios = [[dict(zip(modules, row, strict=True)) for row in step] for step in schedule.recompute.tolist()]
        self._sigmas = schedule.sigmas.tolist()
        self._distance = [schedule.distance(t) for t in range(schedule.steps)]
        self._records = [schedule.needs_cache_after(t) for t in range(schedule.steps)]
        self._compensator: Compensator | None = None
        self._cells: list[list[dict[str, tuple[int, float]]]] = []
        if schedule.compensated:  # the cells' predictors; the anchors a forecast reads are recorded too
            self._cells, needed, depth = run_cells(schedule)
            self._records = [r or t in needed for t, r in enumerate(self._records)]
            self._compensator = Compensator(depth)
        self.report = RunReport(
            steps=schedule.steps,
            full_steps=len(schedule.anchors),
            anchors=schedule.anchors,
            step_seconds=[0.0] * schedule.steps,
        )
        self._clock: tuple[int, float] | None = None  # (step, time) of the last model call
        self._caches: dict[Hashable, dict[tuple[int, int], Cache]] = {}  # call -> (layer, its call in the model call)
        self._seen: dict[Hashable, int] = {}  # calls of one identity in the current step
        self._seen_step = -1
        self._started = time.perf_counter()
        self._call: _Call | None = None
        self._active: tuple[BlockStep, Any] | None = None  # the block call in progress and its program
        self._inside = 0.0  # FLOPs of served block calls during a measured model call
        self._counter: FlopCounterMode | None = None

    @property
    def tokens(self) -> TokenLayout:
        """Token counts of the last model call (for a profile's metadata)."""
        call = self._call
        return TokenLayout(text=call.text, image=call.image) if call else TokenLayout(0, 0)

    # ---------------------------------------------------------------- model calls

    def begin_call(
        self, x: Tensor, sigma: float, context_tokens: int, rows: Sequence[int], computes: Hashable
    ) -> None:
        """A model call starts: its step, its cache identity and its token counts. ``rows`` is ComfyUI's
        ``cond_or_uncond`` (CFG chunks of the batch), ``computes`` what else tells calls apart (see the module)."""
        step = step_of_sigma(self._sigmas, sigma)
        self._tick(step)
        if step != self._seen_step:
            self._seen, self._seen_step = {}, step
        identity = (tuple(rows), int(x.shape[0]), computes)
        occurrence = self._seen.get(identity, 0)
        self._seen[identity] = occurrence + 1
        groups = len(rows) if len(rows) > 1 and x.shape[0] % len(rows) == 0 else 1
        shape = (int(x.shape[0]), *(int(d) for d in x.shape[1:]), context_tokens)
        self._call = _Call(
            step, (*identity, occurrence), shape, self.served.image_tokens(x.shape), context_tokens, groups
        )
        self.report.model_calls += 1
        if self.timer is not None:
            self.timer.called(step)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """Around a model call: the first call of each shape is counted by FlopCounterMode, and what its served
        blocks do not account for is the model's base FLOPs (embedders, final layer, unserved blocks)."""
        call = self._call
        if call is None or call.shape in self.costs.calls:
            yield
            if call is not None:
                self.ledger.count_call(call.shape)
            return
        counter = FlopCounterMode(display=False)
        self._inside, self._counter = 0.0, counter
        try:
            with counter:
                yield
        finally:
            self._counter = None
        self.costs.calls[call.shape] = float(counter.get_total_flops()) - self._inside
        self.ledger.count_call(call.shape)

    # ---------------------------------------------------------------- block calls

    def run_block(self, layer: int, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call of a served block, as the schedule plans it for the current step."""
        served, call = self.served.layers[layer], self._call
        block_call = BlockCall(served.spec, forward, args, kwargs)
        if call is None or self._active is not None:  # outside a model call, or a block inside a block
            return block_call.run()
        outer = self._counter.get_total_flops() if self._counter is not None else 0
        try:
            return self._run_block(layer, served, call, block_call)
        finally:
            if self._counter is not None:
                self._inside += float(self._counter.get_total_flops() - outer)

    def _run_block(self, layer: int, served: Layer, call: _Call, block_call: BlockCall) -> Any:
        occurrence = call.blocks[layer]  # a block called again in the same model call keeps a cache of its own
        call.blocks[layer] += 1
        tokens = stream_layouts(block_call, call.image, call.text)
        text = [t.text for name, t in tokens.items() if t.text and not t.image]
        if text:
            call.text = text[0]  # joint streams of later blocks hold this many text tokens
        verdict = verdict_for(
            served,
            block_call,
            self._granularity,
            lambda r, c, rec: self._step(layer, r, c, tokens, rec),
            self.run_program,
            self.where,
        )
        if verdict.program is None:
            return block_call.run()
        program = verdict.program
        ratios = self._planned(layer, call.step, program, verdict)
        anchor = self._distance[call.step] == 0
        record = anchor and self._records[call.step]
        cache = self._caches.setdefault(call.key, {}).setdefault((layer, occurrence), {})
        step = self._step(layer, ratios, cache, tokens, record)
        if not anchor and not program.fits(step, block_call):
            self._miss()
            step.ratios, step.record = dict.fromkeys(ratios, 1.0), True
        inputs = block_call.inputs().values()
        shape_key = (
            layer,
            (len(next(iter(inputs))) if inputs else 0, *(token_count(t) for t in inputs if t.dim() > 1)),
        )
        costs = self.costs.ledger_blocks.get(shape_key)
        if costs is None and any(r < 1.0 for r in step.ratios.values()):
            step.ratios, step.record = dict.fromkeys(step.ratios, 1.0), True  # a shape first seen on a reuse step
        compensator, history = self._compensator, (call.key, layer, occurrence)
        if compensator is not None and not anchor and not step.record:
            cells = entry_cells(self._cells[call.step][layer], self.schedule.layout.modules, program)
            step.cache = compensator.served(history, cache, call.step, cells, partial_entries(step.ratios, program))
        step.observe = self._observer_for(layer, call, program, occurrence, step)
        plain = all(r >= 1.0 for r in step.ratios.values()) and not step.record and step.observe is None
        timer = self.timer
        if timer is not None and costs is not None and self._counter is None:
            self._time(timer, layer, program, verdict, block_call, tokens, shape_key)
        started = timer.clock() if timer is not None else 0.0
        if costs is None:
            with FlopCounterMode(display=False) as counter:
                step.meter = FlopMeter(counter.get_total_flops)
                out = self.run_program(program, step, block_call)
        elif plain:
            out = block_call.run()  # plain full step: the block's own forward, bit-exact and without overhead
        else:
            out = self.run_program(program, step, block_call)
        if compensator is not None and step.record:  # an anchor, or a cache miss computed in full
            compensator.recorded(history, call.step, cache)
        if costs is None and step.meter is not None:
            costs = self._module_costs(step.meter.costs(), program)
            self.costs.ledger_blocks[shape_key] = costs
        if costs is not None:
            self.ledger.count_block(costs, self._counted(step.ratios, program))
        if timer is not None:
            timer.spent(call.step, timer.clock() - started)
        return out

    def tap(
        self, layer: int, index: int, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A call of an intercepted submodule of block ``layer``."""
        active = self._active
        if active is None or active[0].layer != layer:
            return original(*args, **kwargs)
        step, program = active
        return program.tap(step, index, original, args, kwargs)

    def attention(self, func: Callable[..., Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """An attention call (ComfyUI's ``optimized_attention_override``)."""
        active = self._active
        if active is None:
            return func(*args, **kwargs)
        step, program = active
        return program.attention(step, AttentionCall(func, args, kwargs))

    def _tick(self, step: int | None) -> None:
        """Attribute the wall time since the last model call to that call's step."""
        now = time.perf_counter()
        if self._clock is not None:
            last, since = self._clock
            self.report.step_seconds[last] += now - since
        self._clock = (step, now) if step is not None else None

    def finish(self) -> RunReport:
        self._tick(None)
        report = self.report
        report.seconds = time.perf_counter() - self._started
        report.flops, report.full_flops = self.ledger.flops, self.ledger.full_flops
        report.full_modules, report.partial_modules = self.ledger.full_modules, self.ledger.partial_modules
        report.reused_modules = self.ledger.reused_modules
        self._caches.clear()
        if self._compensator is not None:
            report.compensation_bytes = self._compensator.peak_bytes
            self._compensator.reset()
        return report

    def flop_model(self) -> FlopModel:
        return self.ledger.flop_model(self.schedule.layout)

    # ---------------------------------------------------------------- helpers

    def run_program(self, program: Any, step: BlockStep, call: BlockCall) -> Any:
        self._active = (step, program)
        try:
            return program.run(step, call)
        finally:
            self._active = None

    @property
    def _granularity(self) -> Granularity:
        return self.schedule.layout.granularity

    def _step(
        self, layer: int, ratios: dict[str, float], cache: Cache, tokens: dict[str, TokenLayout], record: bool
    ) -> BlockStep:
        call = self._call
        groups = call.groups if call is not None else 1
        return BlockStep(layer, ratios, cache, tokens, record=record, score=self.score, groups=groups)

    def _planned(self, layer: int, step: int, program: Any, verdict: Verdict) -> dict[str, float]:
        """The plan's ratios for ``program``: a module-granularity plan served at block granularity reuses the block
        only where the plan reuses all its modules; modules that cannot recompute selected tokens compute them all."""
        planned = self._ratios[step][layer]
        if program.modules == BLOCK_MODULES and self.schedule.layout.modules != BLOCK_MODULES:
            planned = {BLOCK_MODULES[0]: max(planned.values())}
        ratios = program.effective({m: planned.get(m, 1.0) for m in program.modules})
        return {m: (1.0 if m in verdict.no_partial and 0.0 < r < 1.0 else r) for m, r in ratios.items()}

    def _counted(self, ratios: dict[str, float], program: Any) -> dict[str, float]:
        """Ratios in the layout's module names (a block-granularity program of a module layout counts as its first
        module, where its costs are kept)."""
        if program.modules == BLOCK_MODULES and self.schedule.layout.modules != BLOCK_MODULES:
            return {self.schedule.layout.modules[0]: ratios[BLOCK_MODULES[0]]}
        return ratios

    def _module_costs(self, costs: ModuleCosts, program: Any) -> ModuleCosts:
        if program.modules == BLOCK_MODULES and self.schedule.layout.modules != BLOCK_MODULES:
            first = self.schedule.layout.modules[0]
            rename = {BLOCK_MODULES[0]: first}
            return ModuleCosts(
                {rename.get(m, m): v for m, v in costs.full.items()},
                {rename.get(m, m): v for m, v in costs.fixed.items()},
                {rename.get(m, m): v for m, v in costs.per_ratio.items()},
                costs.base,
            )
        return costs

    def _time(
        self,
        timer: TimeProbe,
        layer: int,
        program: Any,
        verdict: Verdict,
        block_call: BlockCall,
        tokens: dict[str, TokenLayout],
        shape: tuple[int, tuple[int, ...]],
    ) -> None:
        """Time this block call's configurations on copies of its inputs, if the probe wants this one."""
        call = self._call
        kind = (self.schedule.layout.blocks[layer].kind, shape[1])
        if call is None or not timer.wants(call.step, layer, kind, program.modules):
            return

        def prepare(ratios: dict[str, float] | None, cache: Cache, record: bool) -> Callable[[], Any]:
            clone = block_call.cloned()
            if ratios is None:
                return clone.run
            step = self._step(layer, ratios, cache, tokens, record)
            return lambda: self.run_program(program, step, clone)

        inputs = list(block_call.inputs().values())
        device = inputs[0].device if inputs else torch.device("cpu")
        timer.probe(
            kind, ProbeCall(program.modules, program.partial - verdict.no_partial, program.effective, prepare, device)
        )

    def _miss(self) -> None:
        self.report.cache_misses += 1
        if self.report.cache_misses == 1:
            logger.warning("SODA: no usable cache for a reuse step (a call of a new kind or shape); computing fully.")

    def _observer_for(
        self, layer: int, call: _Call, program: Any, occurrence: int, block_step: BlockStep | None = None
    ) -> Observer | None:
        """The profiler's observer for this block call; its own work is kept out of the block's measured FLOPs."""
        if self.observer is None:
            return None
        observer, step = self.observer, call.step
        key = call.key if occurrence == 0 else (call.key, occurrence)
        block_for_modules = program.modules == BLOCK_MODULES and self.schedule.layout.modules != BLOCK_MODULES
        first = self.schedule.layout.modules[0]

        def observe(module: str, output: Tensor, scores: Tensor, tokens: TokenLayout) -> None:
            meter = block_step.meter if block_step is not None else None
            with meter.ignoring() if meter is not None else contextlib.nullcontext():
                observer(step, layer, first if block_for_modules else module, key, output, scores, tokens)

        return observe

    def prunable(self) -> set[tuple[int, str]]:
        """(layer, module) cells that can recompute selected tokens, as served in this run (a profile marks the
        others as never pruned)."""
        cells: set[tuple[int, str]] = set()
        for layer, served in enumerate(self.served.layers):
            verdict = known_verdict(served, self._granularity)
            if verdict is not None and verdict.program is not None:
                cells.update((layer, m) for m in verdict.program.partial - verdict.no_partial)
        return cells
