"""Compensation on reuse steps (``soda_core/compensation.py``): PSNR against full compute of SODA with each
predictor, at matched FLOPs targets, on a trained reference model.

    python benchmarks/compensation.py [--setting reference|digits32] [--steps 20] [--targets 2,3,4] [--seeds 3]
                                      [--modes none,taylor1,taylor2,goc,auto] [--pruning] [--max-distance 8]
                                      [--out FILE.json]

Set-up as ``benchmarks/run.py --setting S``: its batches (reference: 50 digits, digits32: 30), euler/simple, cfg 1.0, the
profile measured on the calibration seed 10000 (other noise than the judged runs), each judged seed a new batch of
noise; PSNR / SSIM of the latent previews over all seeds' samples together. Every SODA run goes through the SODA
Model Patch node with ``compensation`` set; the FLOPs ratio is the one SODA's runtime counted in the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402


logger = logging.getLogger("benchmarks.compensation")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--targets", type=str, default="2,3,4")
    parser.add_argument("--setting", choices=("reference", "digits32"), default="reference", help="which model")
    parser.add_argument("--seeds", type=int, default=3, help="judged batches of digits, each with new noise")
    parser.add_argument("--modes", type=str, default="none,taylor1,taylor2,goc,auto")
    parser.add_argument("--pruning", action="store_true", help="cache and prune (UAS); default: cache only")
    parser.add_argument(
        "--max-distance", type=int, default=8, help="profiled reuse distances K (forecasts need k + p <= K)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.measure import Context, fidelity, sample
    from benchmarks.settings import SETTINGS
    from comfyui_soda.nodes.model_patch import SODAModelPatch
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig
    from comfyui_soda.soda_core.profiler import ProfileConfig

    setting = dataclasses.replace(SETTINGS[args.setting], repeats=args.seeds)
    model, positive, negative = setting.build()
    ctx = Context.create(model, setting, args.steps, positive, negative)
    latent_format = model.model.latent_format
    calibration = SamplingSettings(setting.profile_seed, ctx.steps, ctx.cfg, ctx.sampler, ctx.scheduler)
    start = time.perf_counter()
    profile, _ = profile_model(
        model, positive, negative, {"samples": ctx.latent}, calibration, ProfileConfig(max_distance=args.max_distance)
    )
    profiled = time.perf_counter() - start
    full = torch.cat([sample(model, ctx, r).latent for r in range(args.seeds)])
    rows = []
    for target in (float(t) for t in args.targets.split(",")):
        for mode in args.modes.split(","):
            config = PlanConfig(target=target, pruning=args.pruning, compensation=mode)
            soda_plan = plan_schedule(profile, config, prune_attention=False)
            patched = SODAModelPatch.execute(model, soda_plan).result[0]
            latents, reports = [], []
            for r in range(args.seeds):
                latents.append(sample(patched, ctx, r).latent)
                reports.append(patched.model_options["transformer_options"]["soda"].reports[-1])
            judged = fidelity(latent_format, full, torch.cat(latents))
            row = {
                "target": target,
                "compensation": mode,
                "psnr": judged["psnr"],
                "ssim": judged["ssim"],
                "rel_l2_latent": judged["rel_l2_latent"],
                "flops_ratio": reports[-1].flops_ratio,
                "full_steps": list(soda_plan.schedule.anchors),
                "compensated_cells": soda_plan.schedule.compensated_cells(),
                "extra_mb": reports[-1].compensation_bytes / 2**20,
                "finite": bool(torch.isfinite(torch.cat(latents)).all()),
            }
            rows.append(row)
            logger.info(
                "%gx %-8s PSNR %.2f dB  FLOPs %.3fx  full steps %s  extra %.2f MB",
                target,
                mode,
                row["psnr"] or float("inf"),
                row["flops_ratio"],
                row["full_steps"],
                row["extra_mb"],
            )
    return {
        "setting": args.setting,
        "steps": args.steps,
        "seeds": args.seeds,
        "pruning": args.pruning,
        "max_distance": args.max_distance,
        "profile_seconds": profiled,
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    modes = list(dict.fromkeys(r["compensation"] for r in result["rows"]))
    targets = list(dict.fromkeys(r["target"] for r in result["rows"]))
    lines = ["| target | " + " | ".join(modes) + " |", "| ---: |" + " ---: |" * len(modes)]
    for t in targets:
        cells = {r["compensation"]: r for r in result["rows"] if r["target"] == t}
        lines.append(f"| {t:g}x | " + " | ".join(f"{cells[m]['psnr']:.2f}" for m in modes) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    env.setup()
    result = run(args)
    result["command"] = "python benchmarks/compensation.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    logger.info("PSNR (dB) vs full compute:\n%s", table(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
