"""Wall-time planning (``PlanConfig.speedup_in="wall"``) against FLOPs planning at the same target, on flux160m.

    python benchmarks/wall_plan.py [--target 2] [--repeats 3] [--out benchmarks/results/wall_plan.json]

One profiling run (which also times the blocks: ``soda_core/timing_probe.py``), then two plans at ``--target``:
in transformer FLOPs and in the wall time the profile's ``TimeModel`` predicts. Each round samples full compute,
then both plans in a rotated order, through SODA Model Patch; every figure is the median over rounds of the ratio
within a round (full-compute seconds / plan seconds), so load from other processes on the machine cancels as far
as it can. FLOPs speed-up: as SODA's runtime counted it; PSNR / SSIM of the latent previews against full compute.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402


logger = logging.getLogger("benchmarks.wall_plan")
RESULT = Path(__file__).resolve().parent / "results" / "wall_plan.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", type=str, default="flux160m")
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of full compute + both plans")
    parser.add_argument("--out", type=Path, default=RESULT, help="write the figures as JSON here")
    parser.add_argument("--profile", type=Path, default=None, help="plan from this profile file (no profiling run)")
    parser.add_argument("--save-profile", type=Path, default=None, help="keep the profile measured here")
    return parser.parse_args(argv)


def _time_model(profile: Any) -> dict[str, Any]:
    time_model = profile.time
    cost = time_model.cost_model(profile.flops)
    return {
        "base_seconds": time_model.base,
        "block_seconds": time_model.block.tolist(),
        "reuse_seconds": time_model.reuse.tolist(),
        "full_seconds": time_model.full.tolist(),
        "partial_fixed_seconds": time_model.fixed.tolist(),
        "partial_per_ratio_seconds": time_model.per_ratio.tolist(),
        "partial_limit": time_model.partial_limit().clamp(max=1e9).tolist(),
        "step_full_seconds": cost.step_full,
        "reuse_step_seconds": cost.base,
        "reuse_over_anchor_wall": cost.base / cost.step_full,
        "reuse_over_anchor_flops": profile.flops.base / profile.flops.step_full,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.measure import Context, fidelity, sample
    from benchmarks.settings import SETTINGS
    from comfyui_soda.nodes.model_patch import SODAModelPatch
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig
    from comfyui_soda.soda_core.profiler import ProfileConfig

    setting = SETTINGS[args.setting]
    steps = setting.steps[0]
    model, positive, negative = setting.build()
    ctx = Context.create(model, setting, steps, positive, negative)
    calibration = SamplingSettings(setting.profile_seed or setting.seed, steps, ctx.cfg, ctx.sampler, ctx.scheduler)
    from comfyui_soda.soda_core.profile import SensitivityProfile

    start = time.perf_counter()
    if args.profile is not None:
        profile, profiled = SensitivityProfile.load(args.profile), math.nan
    else:
        profile, _ = profile_model(
            model, positive, negative, {"samples": ctx.latent}, calibration, ProfileConfig(max_distance=8)
        )
        profiled = time.perf_counter() - start
        if args.save_profile is not None:
            profile.save(args.save_profile)
    logger.info("profiled in %.1f s; time model: %s", profiled, profile.time.describe(profile.flops))
    plans = {
        unit: plan_schedule(profile, PlanConfig(target=args.target, speedup_in=unit), prune_attention=False)
        for unit in ("flops", "wall")
    }
    patched = {unit: SODAModelPatch.execute(model, p).result[0] for unit, p in plans.items()}
    for unit, p in plans.items():
        logger.info("%s plan: %s", unit, p.schedule.summary().replace("\n", "; "))
    seconds: dict[str, list[float]] = {"full": [], "flops": [], "wall": []}
    latents: dict[str, torch.Tensor] = {}
    flops_ratio: dict[str, float] = {}
    order = ["flops", "wall"]
    for r in range(args.repeats):
        full = sample(model, ctx, 0)
        seconds["full"].append(full.seconds)
        latents["full"] = full.latent
        for unit in order[r % 2 :] + order[: r % 2]:
            run_ = sample(patched[unit], ctx, 0)
            seconds[unit].append(run_.seconds)
            latents[unit] = run_.latent
            flops_ratio[unit] = patched[unit].model_options["transformer_options"]["soda"].reports[-1].flops_ratio
        logger.info(
            "round %d: full %.2f s, flops plan %.2f s, wall plan %.2f s",
            r,
            seconds["full"][-1],
            seconds["flops"][-1],
            seconds["wall"][-1],
        )
    rows = {}
    for unit in order:
        wall = [f / s for f, s in zip(seconds["full"], seconds[unit], strict=True)]
        schedule = plans[unit].schedule
        judged = fidelity(model.model.latent_format, latents["full"], latents[unit])
        rows[unit] = {
            "wall_speedup": statistics.median(wall),
            "wall_speedups": wall,
            "flops_speedup": flops_ratio[unit],
            "wall_over_flops": statistics.median(w / flops_ratio[unit] for w in wall),
            "predicted_flops_speedup": schedule.predicted_flops_ratio,
            "predicted_wall_speedup": schedule.predicted_wall_ratio,
            "psnr": judged["psnr"],
            "ssim": judged["ssim"],
            "rel_l2_latent": judged["rel_l2_latent"],
            "full_steps": list(schedule.anchors),
            "partial_cells": int(((schedule.recompute > 0) & (schedule.recompute < 1)).sum()),
            "notes": list(schedule.notes),
        }
    wall_vs_flops = [w / f for w, f in zip(seconds["flops"], seconds["wall"], strict=True)]
    return {
        "setting": args.setting,
        "steps": steps,
        "target": args.target,
        "repeats": args.repeats,
        "profile_seconds": profiled,
        "seconds": seconds,
        "plans": rows,
        "wall_plan_speedup_over_flops_plan": statistics.median(wall_vs_flops),
        "targets": {
            "wall_plan_wall_over_flops_at_least_0.9": rows["wall"]["wall_over_flops"] >= 0.9,
            "wall_plan_never_slower_than_flops_plan": all(v >= 1.0 for v in wall_vs_flops),
        },
        "time_model": _time_model(profile),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    env.setup()
    load_before, started = env.load_average(), time.time()
    result = run(args)
    result["command"] = "python benchmarks/wall_plan.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result["hardware"] = env.hardware()
    result["load_average"] = {"start": load_before, "end": env.load_average()}
    result["minutes"] = (time.time() - started) / 60
    for unit, row in result["plans"].items():
        logger.info(
            "%s plan: wall %.3fx, FLOPs %.3fx, wall/FLOPs %.3f, PSNR %s dB, full steps %s",
            unit,
            row["wall_speedup"],
            row["flops_speedup"],
            row["wall_over_flops"],
            row["psnr"],
            row["full_steps"],
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
