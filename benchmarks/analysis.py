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

from .methods import COMPENSATION_PAIRS, SODA


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


def psnr_at(methods: list[dict[str, Any]], family: str, speedup: float, key: str, tolerance: float = 0.05) -> Any:
    """A family's PSNR at ``speedup`` (on the axis ``key``: ``speedup_wall`` or ``flops_speedup``).

    The best point within ``±tolerance`` of it, else the linear interpolation between the family's nearest points
    on either side (``"interpolated"``), else None (the family does not reach that speed-up)."""
    points = sorted(
        (m[key], m["fidelity"]["psnr"], m["name"])
        for m in methods
        if m["family"] == family and m.get(key) and (m.get("fidelity") or {}).get("psnr") is not None
    )
    near = [p for p in points if abs(p[0] / speedup - 1.0) <= tolerance]
    if near:
        best = max(near, key=lambda p: p[1])
        return {"psnr": best[1], "speedup": best[0], "method": best[2], "how": "measured"}
    below = [p for p in points if p[0] < speedup]
    above = [p for p in points if p[0] > speedup]
    if not below or not above:
        return None
    (x0, y0, n0), (x1, y1, n1) = below[-1], above[0]
    value = y0 + (y1 - y0) * (speedup - x0) / (x1 - x0)
    return {"psnr": value, "speedup": speedup, "method": f"{n0} .. {n1}", "how": "interpolated"}


def matched_speedups(
    methods: list[dict[str, Any]],
    families: tuple[str, ...],
    rivals: tuple[str, ...],
    modes: tuple[str, ...] = (SODA,),
    speedups: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0),
) -> list[dict[str, Any]]:
    """Per speed-up and axis: each family's PSNR (``psnr_at``) and SODA's margin over the best of ``rivals`` (the
    other methods; SODA's ablations are shown but are not rivals). SODA's figure is the best of its ``modes`` (what
    a user can choose on the node: plain, with compensation, cache only); ``soda_plain_margin_db`` is plain SODA's."""
    rows = []
    for key in ("speedup_wall", "flops_speedup"):
        for speedup in speedups:
            values = {family: psnr_at(methods, family, speedup, key) for family in families}
            others = [(v["psnr"], f) for f, v in values.items() if f in rivals and v is not None]
            best_other = max(others) if others else None
            own = [(v["psnr"], f) for f, v in values.items() if f in modes and v is not None]
            best = max(own) if own else None
            plain = values.get(SODA)
            rows.append(
                {
                    "axis": key,
                    "speedup": speedup,
                    "families": values,
                    "best_other": None if best_other is None else {"family": best_other[1], "psnr": best_other[0]},
                    "soda_best": None if best is None else {"family": best[1], "psnr": best[0]},
                    "soda_margin_db": None if best is None or best_other is None else best[0] - best_other[0],
                    "soda_plain_margin_db": None
                    if plain is None or best_other is None
                    else plain["psnr"] - best_other[0],
                }
            )
    return rows


MARGIN_DB = {2.0: 2.0, 3.0: 3.0, 4.0: 3.0}  # the targets: SODA's best mode over the best other method


def _soda(methods: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    return next((m for m in methods if m["family"] == SODA and m["params"].get("target") == target), None)


def targets(run: dict[str, Any], judged: bool, matched: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets that this run can check, each with the measured value and whether it is met."""
    methods, base = run["methods"], run["baseline"]
    rows = []
    for m in methods:
        if m["family"] == SODA and m.get("flops_speedup"):
            target = m["params"]["target"]
            error = m["flops_speedup"] / target - 1.0
            rows.append(_row(f"FLOPs ratio within 3 % of the {target:g}x target", f"{error:+.2%}", abs(error) <= 0.03))
    profiling = (run.get("profile") or {}).get("seconds")
    if profiling:
        runs = profiling / base["wall_seconds"]
        rows.append(_row("profiling costs <= 3 full sampling runs", f"{runs:.2f} runs ({profiling:.1f} s)", runs <= 3))
    soda2 = _soda(methods, 2.0)
    if soda2 and soda2.get("wall_over_flops"):
        value = soda2["wall_over_flops"]
        rows.append(_row("wall speed-up >= 0.85 x FLOPs speed-up at 2x", f"{value:.2f}", value >= 0.85))
    if judged and soda2 and soda2.get("judged") and base.get("judged"):
        gap = 100 * (base["judged"]["accuracy"] - soda2["judged"]["accuracy"])
        text = f"{100 * soda2['judged']['accuracy']:.1f} % vs {100 * base['judged']['accuracy']:.1f} % ({gap:+.1f})"
        rows.append(_row("classifier accuracy within 2 points of full compute at 2x", text, gap <= 2.0))
    rows += _compensation_rows(methods)
    if judged:
        for row in matched:
            axis = "wall" if row["axis"] == "speedup_wall" else "FLOPs"
            margin, rival, best = row["soda_margin_db"], row["best_other"], row["soda_best"]
            need = MARGIN_DB.get(row["speedup"])
            if need is None:
                continue
            text = "–" if margin is None else f"{margin:+.2f} dB ({best['family']}) vs {rival['family']}"
            name = f"SODA >= {need:g} dB above every other method at {row['speedup']:g}x ({axis} speed-up)"
            rows.append(_row(name, text, None if margin is None else margin >= need))
    return rows


def few_step_rows(runs: list[dict[str, Any]], speedups: tuple[float, ...] = (1.5, 2.0)) -> list[dict[str, Any]]:
    """SODA's margin (FLOPs axis) in each few-step run (<= 8 steps) against the same cfg's 20-step run: within 1 dB
    of it is the issue's target."""
    rows = []
    for few in (r for r in runs if r["steps"] <= 8):
        ref = next((r for r in runs if r["steps"] == 20 and r["cfg"] == few["cfg"]), None)
        if ref is None:
            continue
        for speedup in speedups:
            margins = [_margin(r, speedup) for r in (few, ref)]
            if None in margins:
                rows.append(_row(f"{few['steps']}-step margin at {speedup:g}x within 1 dB of 20 steps'", "–", None))
                continue
            drop = margins[1] - margins[0]
            text = f"{margins[0]:+.2f} dB vs {margins[1]:+.2f} dB ({-drop:+.2f})"
            name = f"{few['steps']}-step margin at {speedup:g}x within 1 dB of 20 steps'"
            rows.append(_row(name, text, drop <= 1.0))
    return rows


def _margin(run: dict[str, Any], speedup: float) -> float | None:
    row = next((r for r in run.get("matched") or [] if r["axis"] == "flops_speedup" and r["speedup"] == speedup), None)
    return None if row is None else row["soda_margin_db"]


def _compensation_rows(methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compensation ``auto`` against the same mode without it at the same target (``COMPENSATION_PAIRS``): never
    worse, >= 1 dB better from 3x."""
    rows = []
    for compensated, uncompensated, mode in COMPENSATION_PAIRS:
        plain = {m["params"].get("target"): m for m in methods if m["family"] == uncompensated}
        for m in methods:
            target = m["params"].get("target")
            if m["family"] != compensated or target not in plain:
                continue
            ours, theirs = (x.get("fidelity", {}).get("psnr") for x in (m, plain[target]))
            if ours is None or theirs is None:
                continue
            gain, need = ours - theirs, 1.0 if target >= 3.0 else 0.0
            text = f"{gain:+.2f} dB ({ours:.2f} vs {theirs:.2f}; FLOPs {m.get('flops_speedup') or 0:.2f}x)"
            rows.append(_row(f"compensation auto >= none + {need:g} dB at {target:g}x{mode}", text, gain >= need))
    return rows


def _row(name: str, value: str, met: bool | None) -> dict[str, Any]:
    return {"target": name, "measured": value, "met": met}
