"""Timing the real blocks during a profiling run, for the ``TimeModel`` (``timing``).

At one step of the profiling run (``TimeProbe.step``, 1 by default: step 0 measures FLOPs) the first call of each
*kind* of block (its block list and input shapes: Flux's double and single blocks are two kinds) is timed before it
runs for real, on copies of its actual inputs, through the runtime's own block programs: a plain call, a recording
call (which fills a private cache), a call reusing every module, each module computed in full with the rest
reused, and each partially recomputable module at a few recompute ratios. Every configuration runs once as a
warm-up and ``repeats`` times; its time is the median. Layers of a timed kind share its times; a layer of a kind
that was not timed (a block SODA serves whole in a module layout) is priced from its FLOPs at the measured seconds
per FLOP.

Besides, the runtime tells the probe how long the served blocks took at every step (``spent``) and how many model
calls each step made (``called``), so that ``base``, what a model call costs outside the served blocks (the sampler,
embedders, unserved blocks, Python), is the median over the steps of what is left of the step's wall time.

None of this changes the profiling run's results: the timed calls run on clones of the inputs with a cache of
their own and no observer, before the real call.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .flops import FlopModel
from .layout import ModelLayout
from .timing import TimeModel, fit_line, median


TIME_RATIOS = (0.25, 0.75)  # recompute ratios a partial pass is timed at (a line is fitted through them)
Cache = dict[str, dict[str, torch.Tensor]]
# (ratios per module or None for the block's own forward, the cache to read and fill, record) -> a ready call
Prepare = Callable[[dict[str, float] | None, Cache, bool], Callable[[], Any]]


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work (GPU kernels run asynchronously), or nothing on the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


@dataclass(frozen=True)
class ProbeCall:
    """One block call to time, as the runtime offers it."""

    modules: tuple[str, ...]  # the program's modules (layout names)
    partial: frozenset[str]  # those that can recompute selected tokens
    effective: Callable[[dict[str, float]], dict[str, float]]  # the program's own ratio rules
    prepare: Prepare
    device: torch.device


@dataclass
class _Times:
    """The measured seconds of one block kind."""

    block: float
    reuse: float
    record: float
    full: dict[str, float] = field(default_factory=dict)
    line: dict[str, tuple[float, float]] = field(default_factory=dict)  # module -> (fixed, per_ratio)


class TimeProbe:
    """Times one call of each block kind at step ``step`` and the blocks' share of every step (see the module)."""

    def __init__(
        self,
        layout: ModelLayout,
        step: int = 1,
        repeats: int = 3,
        ratios: Sequence[float] = TIME_RATIOS,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if repeats < 1 or len(set(ratios)) < 2 or not all(0.0 < r < 1.0 for r in ratios):
            raise ValueError(
                f"TimeProbe(repeats={repeats}, ratios={tuple(ratios)}): expected repeats >= 1 and at least two "
                "different ratios strictly between 0 and 1. Fix: use the defaults (3, (0.25, 0.75))."
            )
        self.layout, self.step, self.repeats, self.ratios, self._clock = layout, step, repeats, tuple(ratios), clock
        self._sync: Callable[[], None] = lambda: None
        self._kinds: dict[int, Hashable] = {}  # layer -> its kind (as seen at the probe step)
        self._times: dict[Hashable, _Times] = {}
        self._calls: Counter[int] = Counter()  # step -> model calls
        self._inside: dict[int, float] = {}  # step -> seconds inside served blocks
        self._probing: dict[int, float] = {}  # step -> seconds spent timing

    # ------------------------------------------------------------------ what the runtime tells

    def clock(self) -> float:
        """Now, after the device's queued work (once the probe knows the device)."""
        self._sync()
        return self._clock()

    def called(self, step: int) -> None:
        self._calls[step] += 1

    def spent(self, step: int, seconds: float) -> None:
        self._inside[step] = self._inside.get(step, 0.0) + seconds

    def wants(self, step: int, layer: int, kind: Hashable, modules: Sequence[str]) -> bool:
        """Whether to time this block call: the first call of a kind at the probe step, with layout modules."""
        if step != self.step or layer in self._kinds:
            return False
        self._kinds[layer] = kind
        return kind not in self._times and all(m in self.layout.modules for m in modules)

    def probe(self, kind: Hashable, call: ProbeCall) -> None:
        self._sync = synchronizer(call.device)
        started = self._clock()
        cache: Cache = {}
        ones, zeros = dict.fromkeys(call.modules, 1.0), dict.fromkeys(call.modules, 0.0)
        configs: list[tuple[str, dict[str, float] | None, bool]] = [
            ("block", None, False),
            ("record", ones, True),  # first: it fills the cache the others read
            ("reuse", zeros, False),
        ]
        configs += [(f"full:{m}", call.effective({**zeros, m: 1.0}), False) for m in call.modules]
        for module in sorted(call.partial & set(call.modules)):
            for r in self.ratios:
                ratios = call.effective({**zeros, module: r})
                if ratios.get(module) == r:  # the program recomputes selected tokens of it at r
                    configs.append((f"partial:{module}:{r!r}", ratios, False))
        seconds = self._medians(call.prepare, configs, cache)
        block, reuse = seconds["block"], seconds["reuse"]
        times = _Times(block, reuse, max(seconds["record"] - block, 0.0))
        for module in call.modules:
            times.full[module] = max(seconds[f"full:{module}"] - reuse, 0.0)
            points = [(r, seconds[f"partial:{module}:{r!r}"] - reuse) for r in self.ratios]
            points = [(r, s) for r, s in points if not math.isnan(s)]
            if len(points) >= 2:
                times.line[module] = fit_line([r for r, _ in points], [s for _, s in points])
        self._times[kind] = times
        self._probing[self.step] = self._probing.get(self.step, 0.0) + self._clock() - started

    def _medians(
        self, prepare: Prepare, configs: list[tuple[str, dict[str, float] | None, bool]], cache: Cache
    ) -> dict[str, float]:
        """Median seconds of each configuration over ``repeats`` rounds after a warm-up round; each round runs every
        configuration once, so a burst of other load on the machine slows all of them, not one."""
        samples: dict[str, list[float]] = {name: [] for name, _, _ in configs}
        for _ in range(1 + self.repeats):
            for name, ratios, record in configs:
                run = prepare(ratios, cache, record)
                self._sync()
                start = self._clock()
                run()
                self._sync()
                samples[name].append(self._clock() - start)
        timed = {name: median(values[1:]) for name, values in samples.items()}
        return defaultdict(lambda: math.nan, timed)

    # ------------------------------------------------------------------ the result

    @property
    def measured(self) -> bool:
        return bool(self._times)

    def result(self, step_seconds: Sequence[float], flops: FlopModel) -> TimeModel | None:
        """The time model of the profiled run (``step_seconds``: its wall time per step), None if nothing was timed
        (a run shorter than the probe step)."""
        if not self._times:
            return None
        layers, modules = self.layout.num_layers, self.layout.num_modules
        full, fixed, per = (torch.zeros(layers, modules, dtype=torch.float64) for _ in range(3))
        reuse, block, record = (torch.zeros(layers, dtype=torch.float64) for _ in range(3))
        untimed = []
        for layer in range(layers):
            times = self._times.get(self._kinds.get(layer, None))
            if times is None:
                untimed.append(layer)
                continue
            reuse[layer], block[layer], record[layer] = times.reuse, times.block, times.record
            for module, seconds in times.full.items():
                m = self.layout.modules.index(module)
                full[layer, m] = seconds
                fixed[layer, m], per[layer, m] = times.line.get(module, (seconds, 0.0))  # no line: never partial
        if untimed:  # priced from FLOPs at the timed layers' seconds per FLOP
            timed = [layer for layer in range(layers) if layer not in untimed]
            timed_flops = float(flops.full[timed].sum()) if timed else 0.0
            per_flop = float(block[timed].sum()) / timed_flops if timed_flops > 0 else 0.0
            for layer in untimed:
                full[layer], fixed[layer] = flops.full[layer] * per_flop, flops.fixed[layer] * per_flop
                per[layer], block[layer] = flops.per_ratio[layer] * per_flop, float(flops.full[layer].sum()) * per_flop
        return TimeModel(full, fixed, per, reuse, block, record, self._base(step_seconds))

    def _base(self, step_seconds: Sequence[float]) -> float:
        """Median over the steps after step 0 (which measures FLOPs) of what a model call costs outside the served
        blocks and the timing; step 0 when there is no other."""

        def left(step: int) -> float:
            spent = step_seconds[step] - self._inside.get(step, 0.0) - self._probing.get(step, 0.0)
            return max(spent / self._calls[step], 0.0)

        steps = [s for s in range(1, len(step_seconds)) if self._calls[s]]
        if not steps:
            steps = [0] if step_seconds and self._calls[0] else []
        return median([left(s) for s in steps]) if steps else 0.0
