"""Results to files: ``<name>.json`` (every number, non-finite values as null) and ``<name>.md`` (the tables)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(json_safe(result), indent=1, sort_keys=False) + "\n")


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "–"
    return f"{value:.{digits}f}{suffix}"


def _g(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}"


def _psnr(method: dict[str, Any]) -> str:
    fid = method.get("fidelity") or {}
    if fid.get("identical"):
        return "identical"
    return _f(fid.get("psnr"))


TABLE_HEADER = (
    "| Method | Full steps | Wall s (median) | Wall speed-up | CPU-time speed-up | Wall speed-up (Σ step min) "
    "| FLOPs speed-up (measured) | FLOPs speed-up (predicted) | Wall / FLOPs | PSNR dB | SSIM | Rel. L2 (latent) "
    "| Peak RSS Δ MB |"
)
JUDGED_HEADER = " Accuracy | FID-style |"


def _header(judged: bool) -> str:
    columns = TABLE_HEADER + (JUDGED_HEADER if judged else "")
    return columns + "\n| --- |" + " ---: |" * (columns.count("|") - 2)


def _judged_cells(m: dict[str, Any]) -> str:
    judged = m.get("judged") or {}
    accuracy = judged.get("accuracy")
    return f" {_f(None if accuracy is None else 100 * accuracy, 1, ' %')} | {_f(judged.get('fid'), 3)} |"


def _row(m: dict[str, Any], steps: int, judged: bool = False) -> str:
    fid = m.get("fidelity") or {}
    full_steps = m.get("full_steps")
    predicted = _f(m.get("predicted_flops_speedup"), 2, "x")  # None for EasyCache and LazyCache
    return (
        f"| {m['name']} | {'–' if full_steps is None else f'{full_steps}/{steps}'} | {_f(m['wall_seconds'])} | "
        f"{_f(m.get('speedup_wall'), 2, 'x')} | {_f(m.get('speedup_cpu'), 2, 'x')} | "
        f"{_f(m.get('speedup_wall_step_min'), 2, 'x')} | {_f(m.get('flops_speedup'), 2, 'x')} | {predicted} | "
        f"{_f(m.get('wall_over_flops'))} | {_psnr(m)} | {_f(fid.get('ssim'), 4)} | {_g(fid.get('rel_l2_latent'))} | "
        f"{_f(m.get('peak_rss_mb'), 1)} |" + (_judged_cells(m) if judged else "")
    )


def _matched_section(run: dict[str, Any]) -> list[str]:
    rows = run.get("matched") or []
    if not rows:
        return []
    families = list(rows[0]["families"])
    lines = [
        "",
        "### At matched speed-up",
        "",
        "PSNR of each method family at the speed-up: its best run within ±5 %, else interpolated (*) between its "
        "runs on either side; – where the family does not reach it. Margin: the best SODA mode a user can pick "
        "(SODA and cache only, each with and without compensation) minus the best of FORA, ToCa, EasyCache, LazyCache, MagCache-like "
        "and TeaCache-like; plain: SODA without compensation minus the same.",
        "",
        "| Speed-up | " + " | ".join(families) + " | SODA margin | plain |",
        "| --- |" + " ---: |" * (len(families) + 2),
    ]
    for row in rows:
        axis = "wall" if row["axis"] == "speedup_wall" else "FLOPs"
        cells = []
        for family in families:
            value = row["families"][family]
            cells.append(
                "–" if value is None else f"{value['psnr']:.2f}" + ("*" if value["how"] != "measured" else "")
            )
        margins = [row.get(k) for k in ("soda_margin_db", "soda_plain_margin_db")]
        lines.append(
            f"| {row['speedup']:g}x {axis} | "
            + " | ".join(cells)
            + "".join(f" | {'–' if m is None else f'{m:+.2f} dB'}" for m in margins)
            + " |"
        )
    return lines


def _targets_section(run: dict[str, Any]) -> list[str]:
    rows = run.get("targets") or []
    if not rows:
        return []
    lines = ["", "### Targets", "", "| Target | Measured | Met |", "| --- | --- | --- |"]
    for row in rows:
        met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    return lines


def _abs_profile(run: dict[str, Any]) -> str:
    seconds = run["profile"].get("abs_mean_seconds")
    return "" if seconds is None else f", {seconds:.1f} s (score abs_mean, for its ablation)"


def _peer_line(run: dict[str, Any]) -> list[str]:
    cal = run.get("peer_calibration")
    if not cal:
        return []
    return [
        f"- MagCache-like / TeaCache-like calibration (one full-compute run, seed {cal['seed']}): "
        f"{cal['seconds']:.1f} s; magnitude ratios {min(cal['mag_ratios']):.3f}..{max(cal['mag_ratios']):.3f}; "
        f"TeaCache rescaling polynomial of degree {len(cal['tea_coefficients']) - 1}"
    ]


def _samples_line(run: dict[str, Any]) -> list[str]:
    base = run["baseline"]
    line = (
        f"- Fidelity over {run['samples']} samples per method (seeds {run['seeds'][0]}..{run['seeds'][-1]}, one "
        f"batch per timed repeat); profile calibrated on seed {run['profile_seed']}"
    )
    if base.get("judged"):
        judged = base["judged"]
        line += (
            f"; full compute: {100 * judged['accuracy']:.1f} % recognised by the digits classifier, FID-style "
            f"distance to the real digits {judged['fid']:.3f}"
        )
    return [line]


def _time_section(run: dict[str, Any]) -> list[str]:
    from .analysis import wall_bound

    fit, base = run.get("step_time_fit"), run["baseline"]
    per_step = base["step_seconds_min"][1:]
    full_step = sum(per_step) / max(len(per_step), 1)
    lines = ["", "### Where the wall time goes", ""]
    lines.append(
        f"Per-step times below are the minimum over repeats of each step (the least-disturbed measurement when "
        f"other processes share the CPU). Full compute: {full_step:.3f} s per step (steps 1..{run['steps'] - 1}), "
        f"{run['profile']['step_full_gflops']:.1f} GFLOPs per step (SODA's FLOP model)."
    )
    if fit:
        lines.append(
            f"Least-squares fit over every step (except step 0) of every SODA run: seconds = "
            f"{fit['fixed_seconds']:.3f} + {fit['seconds_per_gflop'] * 1e3:.3f} ms x GFLOPs "
            f"(r² = {fit['r2']:.3f}, {fit['points']} steps): a per-step cost of {fit['fixed_seconds']:.3f} s "
            f"({fit['fixed_seconds'] / full_step:.1%} of a full step) that does not shrink with FLOPs; with it a "
            f"2x-FLOPs schedule reaches at most {wall_bound(full_step, fit['fixed_seconds'], 2.0):.2f}x wall."
        )
    lines += [
        "",
        "| Method | Anchor step s | Anchor GFLOPs | Reuse step s | Reuse GFLOPs | Reuse/anchor wall | Reuse/anchor FLOPs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in run["methods"]:
        kinds = m.get("step_kinds") or {}
        anchor, reuse = kinds.get("anchor"), kinds.get("reuse")
        if not (anchor and reuse):
            continue
        lines.append(
            f"| {m['name']} | {anchor['mean_seconds']:.3f} | {anchor['mean_gflops']:.3g} | "
            f"{reuse['mean_seconds']:.3f} | {reuse['mean_gflops']:.3g} | "
            f"{reuse['mean_seconds'] / anchor['mean_seconds']:.3f} | {reuse['mean_gflops'] / anchor['mean_gflops']:.3f} |"
        )
    return lines


def _run_section(run: dict[str, Any]) -> list[str]:
    base, steps = run["baseline"], run["steps"]
    judged = bool(base.get("judged"))
    counted, runtime = base.get("flops"), base.get("runtime_full_flops")
    agreement = (
        f"; SODA's runtime counts {runtime / 1e12:.3f} TFLOPs for it ({runtime / counted - 1:+.2%})" if runtime else ""
    )
    lines = [
        f"## {steps} steps ({run['sampler']}/{run['scheduler']}, cfg {run['cfg']:g}, seed {run['seed']}, "
        f"{run['image_tokens']} image + {run['text_tokens']} text tokens)"
        + (" — core methods" if run.get("core") else ""),
        "",
        f"- Full compute: {_f(base['wall_seconds'])} s median of {len(base['wall_seconds_runs'])} runs "
        f"({', '.join(f'{s:.2f}' for s in base['wall_seconds_runs'])}); {counted / 1e12:.3f} TFLOPs per run "
        f"(FlopCounterMode){agreement}",
        f"- SODA profiling (one full-compute run with the recorder): {run['profile']['seconds']:.1f} s "
        f"(score mean){_abs_profile(run)}; max distance "
        f"{run['profile']['max_distance']}; peak RSS Δ of full compute {_f(base['peak_rss_mb'], 1)} MB",
        *_peer_line(run),
        f"- Benchmark of this step count: {run['seconds'] / 60:.1f} min",
        *_samples_line(run),
        "",
        _header(judged),
        *(_row(m, steps, judged) for m in ([{**base, "name": "full compute"}] if judged else []) + run["methods"]),
    ]
    if run.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{s['name']} ({s['reason']})" for s in run["skipped"])]
    not_det = [m["name"] for m in [base, *run["methods"]] if m.get("deterministic") is False]
    if not_det:
        lines += ["", f"Not bit-identical across repeats: {', '.join(not_det)}."]
    lines += _matched_section(run) + _targets_section(run)
    lines += _time_section(run)
    lines += ["", "### SODA schedules (full-compute steps)", "", "| Method | Full steps |", "| --- | --- |"]
    lines += [f"| {m['name']} | {m['anchors']} |" for m in run["methods"] if m.get("anchors") is not None]
    return lines


def markdown(result: dict[str, Any]) -> str:
    hw = result["hardware"]
    lines = [f"# SODA benchmark: {result['setting']}", "", result["description"].rstrip(".") + ".", ""]
    if result.get("random_weights"):
        lines += [
            "**Random weights.** This model has seeded random weights: time and FLOPs are real, but PSNR, SSIM "
            "and relative L2 only measure how far each method drifts numerically from full compute, not image "
            "quality.",
            "",
        ]
    lines += [
        f"- Command: `{result['command']}`",
        f"- Started {result['started']}; total wall time {result['wall_seconds'] / 60:.1f} min",
        f"- Hardware: {hw['cpu']}, {hw['cores']} cores (torch threads {hw['torch_threads']}), no GPU; torch "
        f"{hw['torch']}, ComfyUI {hw['comfyui']}, Python {hw['python']}",
        f"- Load average (1/5/15 min) at start {result['load_start']}, at end {result['load_end']}",
        "- Wall seconds: median over repeats of the whole `comfy.sample.sample` call; each round runs full compute "
        "first, then every method in a rotated order. Speed-ups are full-compute median / method median. "
        "CPU-time speed-up: the same with the process CPU time (all threads). Σ step min: each step's minimum "
        "over repeats, summed (robust to other load on the machine).",
        "- FLOPs: SODA methods as counted by SODA's runtime (`reports[-1].flops`), other methods by "
        "`torch.utils.flop_counter.FlopCounterMode` on one extra run; full compute by FlopCounterMode. "
        "Predicted: the planner's ratio (FORA and ToCa: the same FLOP model on their fixed schedules; "
        "MagCache-like and TeaCache-like: steps / steps their rule computes on the calibration run).",
        "- Fidelity against full compute: PSNR/SSIM of the latent preview decode (`latent_preview_rgb`, 1 pixel "
        "per latent pixel), relative L2 of the final latents. Peak RSS Δ: high-water mark above the RSS at the "
        f"start of the run ({result['runs'][0]['rss_method'] if result['runs'] else ''}), median over repeats.",
        "",
    ]
    across = result.get("across_runs") or []
    if across:
        lines += ["## Few steps against 20 steps", "", "| Target | Measured | Met |", "| --- | --- | --- |"]
        for row in across:
            met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
            lines.append(f"| {row['target']} | {row['measured']} | {met} |")
        lines.append("")
    for run in result["runs"]:
        lines += _run_section(run) + [""]
    if result.get("plots"):
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in result["plots"]] + [""]
    return "\n".join(lines)


def write_markdown(result: dict[str, Any], path: Path) -> None:
    path.write_text(markdown(result))
