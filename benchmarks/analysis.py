"""Where the wall time goes: per-step FLOPs of a SODA schedule against the per-step seconds measured.

A reuse step's FLOPs (planner's FlopModel) may be a small fraction of a full step's, but it still pays work the
FLOP model does not count (norms, modulation, gathers, scatters, token ranking, the sampler). Fitting

    seconds(step) = fixed + per_gflop * GFLOPs(step)

over every step of every SODA run separates the two: ``fixed`` is the per-step cost no schedule removes, and
``fixed / seconds(full step)`` bounds how far the wall speed-up can follow the FLOPs speed-up.
"""

from __future__ import annotations

import statistics
from typing import Any


def step_flops(profile: Any, schedule: Any) -> list[float]:
    """Predicted FLOPs of every step of ``schedule`` (one batch row), from the profile's FlopModel."""
    flops = profile.flops
    anchors = set(schedule.anchors)
    out = []
    for t in range(schedule.steps):
        if t in anchors:
            record = flops.record if schedule.needs_cache_after(t) else 0.0
            out.append(flops.step_full + record)
        else:
            out.append(flops.base + float(flops.partial(schedule.recompute[t].double()).sum()))
    return out


def median_steps(runs: list[list[float]]) -> list[float]:
    """Per-step median over repeats (runs of equal length)."""
    return [statistics.median(values) for values in zip(*runs)] if runs else []


def min_steps(runs: list[list[float]]) -> list[float]:
    """Per-step minimum over repeats: the least-disturbed time of each step when other processes share the CPU."""
    return [min(values) for values in zip(*runs)] if runs else []


def by_kind(schedule: Any, seconds: list[float], flops: list[float]) -> dict[str, Any]:
    """Mean seconds and FLOPs of anchor, recording-anchor and reuse steps (step 0 left out: it holds set-up)."""
    groups: dict[str, list[int]] = {"anchor": [], "reuse": []}
    for t in range(1, schedule.steps):
        groups["anchor" if t in schedule.anchors else "reuse"].append(t)
    out: dict[str, Any] = {}
    for kind, steps in groups.items():
        if steps:
            out[kind] = {
                "steps": len(steps),
                "mean_seconds": statistics.fmean(seconds[t] for t in steps),
                "mean_gflops": statistics.fmean(flops[t] for t in steps) / 1e9,
            }
    return out


def fit(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Least squares ``seconds = fixed + per_gflop * gflops`` over (gflops, seconds) points."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    fixed = my - slope * mx
    ss_res = sum((y - fixed - slope * x) ** 2 for x, y in points)
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {
        "fixed_seconds": fixed,
        "seconds_per_gflop": slope,
        "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0,
        "points": len(points),
    }


def step_time_fit(methods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pooled fit over the steps (except step 0, per-step minimum over repeats) of every SODA-kind method."""
    points = []
    for method in methods:
        seconds, flops = method.get("step_seconds_min"), method.get("step_gflops")
        if seconds and flops:
            points.extend((f, s) for f, s in list(zip(flops, seconds))[1:])
    return fit(points)


def wall_bound(full_step_seconds: float, fixed_seconds: float, flops_speedup: float) -> float:
    """Wall speed-up a schedule with ``flops_speedup`` reaches if every step also pays ``fixed_seconds``."""
    variable = max(full_step_seconds - fixed_seconds, 0.0)
    return full_step_seconds / (fixed_seconds + variable / flops_speedup)
