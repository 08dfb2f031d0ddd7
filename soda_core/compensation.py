"""Compensation on reuse steps: serve a forecast of a module's output instead of its stale cached value.

Per (layer, module) the runtime keeps the outputs of the last anchors (full-compute steps) a_1 (newest), a_2, a_3 at
steps s_1 > s_2 > s_3. On a reuse step t, k = t - s_1 steps after the last anchor, a cell's predictor serves

    none      a_1                                                  (SODA as published: plain reuse)
    taylor1   a_1 + (k / d) (a_1 - a_2),  d = s_1 - s_2            (TaylorSeer, order 1: exact on linear paths)
    taylor2   the quadratic through (s_i, a_i), i = 1..3, at t     (order 2: exact on quadratic paths)
    goc       a_1 + w (a_1 - a_2)                                  (GOC: w fitted on the calibration run)

Every forecast is an affine combination ``Σ c_i a_i`` with ``Σ c_i = 1`` (``coefficients``), so it keeps biases and
the profiler can price it from inner products of the outputs alone (``compensation_fit``). The planner chooses a
predictor per (step, layer, module) cell (``auto``: the one with the least profiled error) and stores it in the
schedule; this module's ``AnchorHistory`` is the runtime state that serves it.

GOC's weight is stored as the effective coefficient of the difference at each cell, ``w = g (k / d)`` with ``g``
fitted per (layer, module) by gradient descent (``compensation_fit.fit_goc``), and 0 (no correction) at the cells
where the calibration trajectory turns (cos(D_t - a_1, a_1 - a_2) < 0: GOC's inflection points).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .layout import BLOCK_MODULES


if TYPE_CHECKING:
    from .schedule import Schedule


Tensor = torch.Tensor
Cache = dict[str, dict[str, Tensor]]  # entry (module) -> stream -> output (B, N_s, C)
Cells = dict[str, tuple[int, float]]  # entry (module) -> (predictor code, GOC weight)

MODES = ("none", "taylor1", "taylor2", "goc", "auto")
NONE, TAYLOR1, TAYLOR2, GOC = 0, 1, 2, 3
PREDICTORS = ("none", "taylor1", "taylor2", "goc")  # index = code stored in a schedule
MEASURED = ("taylor1", "taylor2", "goc")  # rows of a profile's forecast_error, in this order
DEPTH = {NONE: 1, TAYLOR1: 2, TAYLOR2: 3, GOC: 2}  # anchors a predictor reads


def check_mode(mode: object, where: str = "compensation") -> str:
    """``mode`` if it is one of ``MODES``, else a ValueError naming the value, the choices and the fix."""
    if not isinstance(mode, str) or mode not in MODES:
        raise ValueError(
            f"{where}={mode!r} is not a compensation mode: expected one of {', '.join(MODES)}. Fix: pass 'none' "
            "(plain reuse, SODA as published), 'taylor1'/'taylor2' (forecast from the last anchors), 'goc' (fitted "
            "correction) or 'auto' (the least profiled error per cell)."
        )
    return mode


@dataclass(frozen=True)
class CompensationConfig:
    """Which predictor serves reuse steps (``MODES``); validated on construction."""

    mode: str = "none"

    def __post_init__(self) -> None:
        check_mode(self.mode)

    @property
    def active(self) -> bool:
        return self.mode != "none"


# ------------------------------------------------------------------------------------------------ predictors


def taylor1(target: float, steps: Sequence[float]) -> tuple[float, ...]:
    """Coefficients of a_1, a_2 for the line through (s_1, a_1), (s_2, a_2) at ``target``."""
    s1, s2 = steps[0], steps[1]
    r = (target - s1) / (s1 - s2)
    return (1.0 + r, -r)


def taylor2(target: float, steps: Sequence[float]) -> tuple[float, ...]:
    """Coefficients of a_1, a_2, a_3 for the quadratic through (s_i, a_i) at ``target`` (Lagrange's basis)."""
    coefficients = []
    for i, si in enumerate(steps[:3]):
        c = 1.0
        for j, sj in enumerate(steps[:3]):
            if j != i:
                c *= (target - sj) / (si - sj)
        coefficients.append(c)
    return tuple(coefficients)


def goc(weight: float) -> tuple[float, ...]:
    """Coefficients of a_1, a_2 for GOC's ``a_1 + w (a_1 - a_2)``."""
    return (1.0 + weight, -weight)


def coefficients(code: int, target: float, steps: Sequence[float], weight: float = 0.0) -> tuple[float, ...]:
    """The forecast of predictor ``code`` at step ``target`` from anchors at ``steps`` (newest first); with one
    anchor, plain reuse ``(1,)``; taylor2 with two, taylor1."""
    if code == NONE or len(steps) < 2:
        return (1.0,)
    if code == TAYLOR2 and len(steps) >= 3:
        return taylor2(target, steps)
    if code in (TAYLOR1, TAYLOR2):  # taylor2 with two anchors only: the line through them
        return taylor1(target, steps)
    return goc(weight)


def combine(anchors: Sequence[Tensor], coefficients: Sequence[float]) -> Tensor:
    """``Σ c_i a_i`` over anchors (B, N, C) each, newest first, in the anchors' dtype (accumulated in float32)."""
    if len(coefficients) == 1:
        return anchors[0].clone()
    out = anchors[0].float() * coefficients[0]  # (B, N, C)
    for a, c in zip(anchors[1:], coefficients[1:], strict=False):
        out.add_(a.float(), alpha=c)
    return out.to(anchors[0].dtype)


# ------------------------------------------------------------------------------------------------ runtime state


@dataclass
class AnchorHistory:
    """The last anchors' outputs of one block call identity: ``entries[entry][stream]`` = [(step, output)], newest
    first, at most ``depth`` long. The newest is the cache tensor itself; the older ones are what compensation adds
    to memory (``extra_bytes``)."""

    depth: int
    entries: dict[str, dict[str, list[tuple[int, Tensor]]]] = field(default_factory=dict)

    def reset(self) -> None:
        self.entries.clear()

    def push(self, step: int, cache: Cache) -> None:
        """Take the outputs an anchor step just wrote into ``cache``."""
        for entry, streams in cache.items():
            kept = self.entries.setdefault(entry, {})
            for stream, tensor in streams.items():
                chain = [e for e in kept.get(stream, []) if e[0] != step]  # a second call of the step: the newest
                kept[stream] = [(step, tensor), *chain][: self.depth]

    def forecast(self, cache: Cache, step: int, cells: Cells, partial: frozenset[str] = frozenset()) -> Cache:
        """The cache a reuse step reads: entries whose cell has a predictor get their forecast (new tensors), the
        others are the cache's own (so partial recomputes update it as without compensation). A ``partial`` entry
        is about to be updated in place: the history keeps its own copy of that anchor output first."""
        served: Cache = {}
        for entry, streams in cache.items():
            code, weight = cells.get(entry, (NONE, 0.0))
            chains = self.entries.get(entry, {})
            if code == NONE or not streams:
                if entry in partial:
                    for stream, tensor in streams.items():
                        chain = chains.get(stream)
                        if chain and chain[0][1] is tensor:
                            chain[0] = (chain[0][0], tensor.clone())
                served[entry] = streams
                continue
            out: dict[str, Tensor] = {}
            for stream, tensor in streams.items():
                chain = chains.get(stream, [])
                if not chain or chain[0][1].shape != tensor.shape:
                    out[stream] = tensor  # no anchor output of this shape: plain reuse
                    continue
                c = coefficients(code, float(step), [float(s) for s, _ in chain], weight)
                out[stream] = combine([t for _, t in chain[: len(c)]], c)
            served[entry] = out
        return served

    def extra_bytes(self, cache: Cache) -> int:
        """Bytes of the kept outputs that are not the cache's own tensors."""
        return sum(
            t.numel() * t.element_size()
            for entry, chains in self.entries.items()
            for stream, chain in chains.items()
            for _, t in chain
            if t is not cache.get(entry, {}).get(stream)
        )


class Compensator:
    """The run's compensation: one ``AnchorHistory`` per block call identity, and the peak extra memory."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.histories: dict[Hashable, AnchorHistory] = {}
        self.peak_bytes = 0
        self._bytes: dict[Hashable, int] = {}

    def reset(self) -> None:
        self.histories.clear()
        self._bytes.clear()

    def history(self, key: Hashable) -> AnchorHistory:
        if key not in self.histories:
            self.histories[key] = AnchorHistory(self.depth)
        return self.histories[key]

    def recorded(self, key: Hashable, step: int, cache: Cache) -> None:
        """A step computed in full wrote ``cache``: keep its outputs."""
        history = self.history(key)
        history.push(step, cache)
        self._count(key, cache)

    def served(self, key: Hashable, cache: Cache, step: int, cells: Cells, partial: frozenset[str]) -> Cache:
        """What a reuse step reads (``AnchorHistory.forecast``)."""
        history = self.history(key)
        out = history.forecast(cache, step, cells, partial)
        if partial:
            self._count(key, cache)
        return out

    def _count(self, key: Hashable, cache: Cache) -> None:
        self._bytes[key] = self.histories[key].extra_bytes(cache)
        self.peak_bytes = max(self.peak_bytes, sum(self._bytes.values()))


def memory_note(extra_bytes: int) -> str:
    """What compensation held beyond the cache in a run, for the user's summary ("" without compensation)."""
    return f"; compensation kept {extra_bytes / 2**20:.1f} MB of older full-step outputs" if extra_bytes else ""


def needed_anchors(anchors: Sequence[int], steps: int, depth_at: Sequence[int]) -> set[int]:
    """Anchors whose outputs some reuse step reads: the last ``depth_at[t]`` anchors before each reuse step t."""
    needed: set[int] = set()
    anchor_set = set(anchors)
    for t in range(steps):
        if t in anchor_set or depth_at[t] <= 0:
            continue
        before = [a for a in anchors if a < t]
        needed.update(before[-depth_at[t] :])
    return needed


def run_cells(schedule: Schedule) -> tuple[list[list[Cells]], set[int], int]:
    """A compensated schedule as the runtime reads it: per step and layer ``{module: (code, weight)}``, the anchors
    whose outputs some forecast reads (recorded even where an anchor follows), and the history depth."""
    modules = schedule.layout.modules
    codes, weights = schedule.compensation.tolist(), schedule.weights.tolist()
    cells = [
        [{m: (int(c), float(w)) for m, c, w in zip(modules, cs, ws, strict=True)} for cs, ws in zip(cl, wl)]
        for cl, wl in zip(codes, weights, strict=True)
    ]
    depth_at = [max(DEPTH[c] for row in step for c in row) for step in codes]  # (T,) 1: plain reuse only
    needed = needed_anchors(schedule.anchors, schedule.steps, [d if d > 1 else 0 for d in depth_at])
    return cells, needed, max(depth_at)


def entry_cells(row: Cells, layout: tuple[str, ...], program: Any) -> Cells:
    """Predictor and weight of each cache entry of a block ``program`` from its layer's ``row``: a module's own; a
    block-granularity program of a module layout: the first module's; a program's own entries (``owners``, e.g.
    the fused block's update): their owner module's."""
    if program.modules == BLOCK_MODULES and layout != BLOCK_MODULES:
        return {BLOCK_MODULES[0]: row[layout[0]]}
    owners: dict[str, str] = getattr(program, "owners", {})
    return {**row, **{entry: row[module] for entry, module in owners.items() if module in row}}


def partial_entries(ratios: dict[str, float], program: Any) -> frozenset[str]:
    """Cache entries a block call updates in place: those of modules recomputing selected tokens (and their
    ``owners`` entries)."""
    partial = {m for m, r in ratios.items() if 0.0 < r < 1.0}
    owners: dict[str, str] = getattr(program, "owners", {})
    return frozenset(partial | {entry for entry, module in owners.items() if module in partial})
