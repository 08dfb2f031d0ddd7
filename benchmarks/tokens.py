"""Token recompute (UAS): SODA with pruning against SODA cache-only, at equal FLOPs targets and at equal wall time.

    python benchmarks/tokens.py [--model digits32|reference] [--steps 20] [--targets 1.5,2,3] [--repeats 3]
                                [--batch N] [--curve 1.25,2.5,4] [--threads N] [--quick] [--out FILE.json]

Set-up of the model's benchmark setting (``benchmarks/settings.py``: its batch of labelled digits, or ``--batch``
digits, N/10 of each; new noise per repeat, the profile measured on the calibration seed). At each target the planner makes two plans from one profile:
cache only (``pruning=False``) and cache + partial recompute (``pruning=True``, attention whole as the benchmark's
SODA); ``--curve`` adds cache-only points so a cache-only PSNR can be read at any wall-time speed-up in between.
Every repeat samples full compute first, then every plan in an order rotated from repeat to repeat; the wall
speed-up is the median over repeats of full / plan. Figures per plan: PSNR / SSIM of the latent previews against
full compute over all repeats' samples, classifier accuracy and FID-style distance, the FLOPs SODA's runtime
counted. Matched FLOPs: same target (both plans' counted FLOPs given), and the cache-only PSNR interpolated at the
pruned plan's counted FLOPs. Matched wall time: the cache-only PSNR at the pruning plan's wall speed-up, interpolated (linear in log
speed-up) between the cache-only points that bracket it (none outside their range). Writes
``benchmarks/results/tokens_<model>.json``. ``--quick`` (the test) is 10 digits, 4 steps, one repeat.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402


logger = logging.getLogger("benchmarks.tokens")
MODELS = ("digits32", "reference")  # benchmark settings of trained models


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="digits32", help="benchmark setting of the model")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--targets", type=str, default="1.5,2,3", help="FLOPs targets of both plans")
    parser.add_argument("--repeats", type=int, default=3, help="batches, each with new noise")
    parser.add_argument("--batch", type=int, default=None, help="digits per repeat (multiple of 10; setting's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--curve", type=str, default="1.25,2.5,4", help="extra cache-only targets ('' for none)")
    parser.add_argument("--quick", action="store_true", help="10 digits, 4 steps, 1 repeat, target 2 (tests)")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/tokens_<model>.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.targets, args.repeats, args.curve = 4, "2", 1, ""
    if args.quick:
        args.batch = 10
    if args.steps < 2 or args.repeats < 1 or (args.batch is not None and (args.batch < 10 or args.batch % 10)):
        parser.error("--steps must be >= 2, --repeats >= 1, --batch a positive multiple of 10")
    args.out = args.out or env.ROOT / "benchmarks" / "results" / f"tokens_{args.model}.json"
    return args


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _setting(args: argparse.Namespace) -> Any:
    from benchmarks import settings

    setting = dataclasses.replace(settings.SETTINGS[args.model], repeats=args.repeats)
    if args.batch is not None:
        path = settings.DIGITS32_MODEL if args.model == "digits32" else settings.REFERENCE_MODEL
        labels = tuple(c % 10 for c in range(args.batch))
        shape = (len(labels), *setting.latent_shape[1:])
        setting = dataclasses.replace(setting, build=settings._build_reference(labels, path), labels=labels)
        setting = dataclasses.replace(setting, latent_shape=shape)
    if args.quick:
        setting = dataclasses.replace(setting, max_distance=3)
    return setting


@dataclasses.dataclass
class Plan:
    name: str
    target: float
    pruning: bool
    model: Any
    schedule: Any
    seconds: list[float] = dataclasses.field(default_factory=list)
    latents: list[Any] = dataclasses.field(default_factory=list)
    reports: list[Any] = dataclasses.field(default_factory=list)


def _plans(args: argparse.Namespace, model: Any, profile: Any) -> list[Plan]:
    from comfyui_soda.nodes.model_patch import SODAModelPatch
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig

    specs = [(t, p) for t in _floats(args.targets) for p in (False, True)]
    specs += [(t, False) for t in _floats(args.curve) if t not in _floats(args.targets)]
    plans = []
    for target, pruning in specs:
        soda_plan = plan_schedule(profile, PlanConfig(target=target, pruning=pruning), prune_attention=False)
        patched = SODAModelPatch.execute(model, soda_plan).result[0]
        name = f"SODA {target:g}x " + ("cache + prune" if pruning else "cache only")
        plans.append(Plan(name, target, pruning, patched, soda_plan.schedule))
    return plans


def _judged(latent_format: Any, full: Any, latents: Any, labels: Any) -> dict[str, Any]:
    from benchmarks.digits import Judge, to_gray
    from benchmarks.measure import fidelity, preview

    scores = Judge().evaluate(to_gray(preview(latent_format, latents)), labels)
    return {**fidelity(latent_format, full, latents), **scores}


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    """y at x on the polyline through (x, y) points, linear in log x; None outside their range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            w = 0.0 if x1 == x0 else (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + w * (y1 - y0)
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from benchmarks.measure import Context, sample
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    setting = _setting(args)
    model, positive, negative = setting.build()
    ctx = Context.create(model, setting, args.steps, positive, negative)
    calibration = SamplingSettings(setting.profile_seed, ctx.steps, ctx.cfg, ctx.sampler, ctx.scheduler)
    config = ProfileConfig(max_distance=min(setting.max_distance, args.steps - 1))
    profile, _ = profile_model(model, positive, negative, {"samples": ctx.latent}, calibration, config)
    plans, full_seconds, full_latents = _plans(args, model, profile), [], []
    for r in range(args.repeats):
        result = sample(model, ctx, r)
        full_seconds.append(result.seconds)
        full_latents.append(result.latent)
        shift = (r * len(plans)) // args.repeats
        for plan in plans[shift:] + plans[:shift]:
            result = sample(plan.model, ctx, r)
            plan.seconds.append(result.seconds)
            plan.latents.append(result.latent)
            plan.reports.append(plan.model.model_options["transformer_options"]["soda"].reports[-1])
            logger.info("repeat %d/%d: %-26s %.2f s (full %.2f s)", r + 1, args.repeats, plan.name,
                        result.seconds, full_seconds[-1])  # fmt: skip
    latent_format = model.model.latent_format
    labels = torch.tensor(setting.labels).repeat(args.repeats)
    full = torch.cat(full_latents)
    rows = []
    for plan in plans:
        report = plan.reports[0]
        ratios = [f / s for f, s in zip(full_seconds, plan.seconds)]
        rows.append({
            "name": plan.name,
            "target": plan.target,
            "pruning": plan.pruning,
            "flops_ratio": report.flops_ratio,
            "modules": {"full": report.full_modules, "partial": report.partial_modules,
                        "reused": report.reused_modules},
            "full_steps": list(plan.schedule.anchors),
            "wall_seconds": statistics.median(plan.seconds),
            "wall_speedup": statistics.median(ratios),
            "wall_speedup_runs": ratios,
            **_judged(latent_format, full, torch.cat(plan.latents), labels),
        })  # fmt: skip
    return {
        "model": args.model,
        "setting": setting.description,
        "steps": args.steps,
        "repeats": args.repeats,
        "samples": len(labels),
        "image_tokens": (ctx.latent.shape[-1] // 2) * (ctx.latent.shape[-2] // 2),
        "full_compute": {
            "wall_seconds": statistics.median(full_seconds),
            "wall_seconds_runs": full_seconds,
            **_judged(latent_format, full, full, labels),
        },
        "rows": rows,
        **compare(rows),
    }


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pruning against cache only at the same FLOPs target, and at the pruning plan's wall speed-up."""
    cache = [r for r in rows if not r["pruning"]]
    curve = [(r["wall_speedup"], r["psnr"]) for r in cache if r["psnr"] is not None]
    by_flops = [(r["flops_ratio"], r["psnr"]) for r in cache if r["psnr"] is not None]
    flops, wall = [], []
    for pruned in (r for r in rows if r["pruning"]):
        same = next(r for r in cache if r["target"] == pruned["target"])
        flops.append({
            "target": pruned["target"],
            "flops_ratio": [same["flops_ratio"], pruned["flops_ratio"]],
            "psnr": [same["psnr"], pruned["psnr"]],
            "ssim": [same["ssim"], pruned["ssim"]],
            "accuracy": [same["accuracy"], pruned["accuracy"]],
            "wall_speedup": [same["wall_speedup"], pruned["wall_speedup"]],
            "psnr_gain_db": None if None in (same["psnr"], pruned["psnr"]) else pruned["psnr"] - same["psnr"],
            # the planner's cache-only plan rarely lands on the target: cache only at the pruned plan's counted FLOPs
            "cache_only_psnr_at_same_flops": _interpolate(by_flops, pruned["flops_ratio"]),
        })  # fmt: skip
        cache_psnr = _interpolate(curve, pruned["wall_speedup"])
        gain = None if cache_psnr is None or pruned["psnr"] is None else pruned["psnr"] - cache_psnr
        wall.append({"target": pruned["target"], "wall_speedup": pruned["wall_speedup"], "psnr": pruned["psnr"],
                     "cache_only_psnr_at_same_wall": cache_psnr, "psnr_gain_db": gain})  # fmt: skip
    return {"matched_flops": flops, "matched_wall": wall}


def table(result: dict[str, Any]) -> str:
    lines = [
        "| plan | FLOPs | wall speed-up | PSNR (dB) | SSIM | accuracy |",
        "| :--- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        psnr = "inf" if r["psnr"] is None else f"{r['psnr']:.2f}"
        lines.append(
            f"| {r['name']} | {r['flops_ratio']:.2f}x | {r['wall_speedup']:.2f}x | {psnr} | {r['ssim']:.4f} | "
            f"{100 * r['accuracy']:.1f} % |"
        )
    for m in result["matched_wall"]:
        at = m["cache_only_psnr_at_same_wall"]
        lines.append(
            f"matched wall {m['wall_speedup']:.2f}x (target {m['target']:g}): prune {m['psnr'] or math.inf:.2f} dB, "
            f"cache only " + ("outside its measured range" if at is None else f"{at:.2f} dB")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    env.setup()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load_start = env.load_average()
    result = run(args)
    result["command"] = shlex.join(["python", "benchmarks/tokens.py", *(sys.argv[1:] if argv is None else argv)])
    result.update({"hardware": env.hardware(), "load_start": load_start, "load_end": env.load_average()})
    result["threads"] = args.threads
    logger.info("pruning vs cache only:\n%s", table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
