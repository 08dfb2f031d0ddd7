"""One benchmark setting at one step count: profile, plan, count FLOPs, then interleaved timed repeats.

Order of work (all in this process, on the same ModelPatcher, with identical seeds, noise and conditioning):
  1. a 2-step warm-up run;
  2. SODA profiles (token score ``mean``, and ``abs_mean`` for its ablation), each one full-compute run on the
     setting's calibration seed (``profile_seed``: other noise than the runs it is judged on);
  3. the MagCache-like and TeaCache-like calibration: one full-compute run on the same calibration seed;
  4. every method is built (plans and peer thresholds are made here) and FlopCounterMode counts one run (repeat 0)
     of full compute and of each method SODA's runtime does not count (EasyCache, LazyCache, MagCache-like,
     TeaCache-like);
  5. ``repeats`` rounds; round ``r`` samples repeat ``r``'s noise with every method, full compute first, then the
     others in an order rotated from round to round, so drift of the machine spreads over all methods.
Fidelity compares each method's final latents with full compute's of the same repeats: of repeat 0 when every
repeat has the same noise, of all repeats' samples together when each has its own (``distinct_repeats``). Judged
settings also score those samples with the digits classifier (accuracy, FID-style distance).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import statistics
import time
from typing import Any

import torch

from . import analysis, peer_caches
from .measure import Context, PeakRss, Sample, count_flops, fidelity, preview, sample
from .methods import (
    ABLATION,
    FAMILIES,
    RIVALS,
    SODA_MODES,
    Method,
    SkipLog,
    baseline_methods,
    external_methods,
    full_method,
    peer_methods,
    soda_methods,
)
from .settings import Built, Run, Setting


logger = logging.getLogger(__name__)


def _profile(model: Any, ctx: Context, setting: Setting, score: str) -> tuple[Any, float]:
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig
    from comfyui_soda.soda_core.tokens import TokenScore

    seed = ctx.seed if setting.profile_seed is None else setting.profile_seed
    settings = SamplingSettings(seed, ctx.steps, ctx.cfg, ctx.sampler, ctx.scheduler)
    config = ProfileConfig(max_distance=setting.max_distance, score=TokenScore(score))
    start = time.perf_counter()
    profile, _ = profile_model(model, ctx.positive, ctx.negative, {"samples": ctx.latent}, settings, config)
    seconds = time.perf_counter() - start
    logger.info("bench: profiled %d steps (score %s) in %.1f s", ctx.steps, score, seconds)
    return profile, seconds


def _calibrate_peers(model: Any, ctx: Context, setting: Setting) -> peer_caches.Calibration:
    """MagCache-like's ratios and TeaCache-like's polynomial from one full-compute run on the calibration seed."""
    seed = ctx.seed if setting.profile_seed is None else setting.profile_seed
    calibration_ctx = dataclasses.replace(ctx, seeds=[seed])
    return peer_caches.calibrate(model, lambda clone: sample(clone, calibration_ctx))


def _hook(method: Method) -> Any:
    return method.model.model_options["transformer_options"]["soda"]


class _Runs:
    """Timed samples and SODA run reports per method."""

    def __init__(self) -> None:
        self.samples: dict[str, list[Sample]] = {}
        self.reports: dict[str, list[Any]] = {}

    def add(self, method: Method, result: Sample) -> None:
        self.samples.setdefault(method.name, []).append(result)
        if method.kind == "soda":
            self.reports.setdefault(method.name, []).append(_hook(method).reports[-1])


def _timed_rounds(methods: list[Method], ctx: Context, repeats: int) -> _Runs:
    runs, full, others = _Runs(), methods[0], methods[1:]
    total, done, started = repeats * len(methods), 0, time.perf_counter()
    for r in range(repeats):
        shift = (r * len(others)) // max(repeats, 1)
        for method in [full, *others[shift:], *others[:shift]]:
            result = sample(method.model, ctx, r)
            runs.add(method, result)
            done += 1
            eta = (time.perf_counter() - started) / done * (total - done)
            where = f"round {r + 1}/{repeats} [{done}/{total}]"
            logger.info(
                "bench: %s %-28s %7.2f s  (load %s, ~%.0f s left)",
                where,
                method.name,
                result.seconds,
                result.load,
                eta,
            )
    return runs


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _soda_figures(method: Method, reports: list[Any], profile: Any, step_seconds: list[float]) -> dict[str, Any]:
    """SODA-only figures; ``step_seconds`` (per-step minimum over repeats) feed the anchor / reuse step means."""
    report = reports[0]
    schedule = method.schedule
    flops = analysis.step_flops(profile, schedule)
    return {
        "flops": report.flops,
        "flops_source": "SODA runtime",
        "runtime_full_flops": report.full_flops,
        "runtime_flops_speedup": report.flops_ratio,
        "full_steps": len(schedule.anchors),
        "anchors": list(schedule.anchors),
        "recompute_mean": [float(schedule.recompute[t].mean()) for t in range(schedule.steps)],
        "modules": {"full": report.full_modules, "partial": report.partial_modules, "reused": report.reused_modules},
        "cache_misses": report.cache_misses,
        "step_gflops": [f / 1e9 for f in flops],
        "step_kinds": analysis.by_kind(schedule, step_seconds, flops),
        "predicted_error": schedule.predicted_error,
        "compensated_cells": schedule.compensated_cells(),  # reuse cells per predictor ({} without compensation)
        "plain_reuse_reasons": schedule.plain_reuse_reasons(profile.max_distance),  # why the rest is not forecast
        "plan_seconds": method.plan_seconds,
    }


def _judged(setting: Setting, latent_format: Any, latents: torch.Tensor) -> dict[str, float]:
    """Digits classifier on the decoded samples: share recognised as their condition, FID-style distance."""
    from .digits import to_gray

    labels = torch.tensor(setting.labels).repeat(latents.shape[0] // len(setting.labels))
    return _judge().evaluate(to_gray(preview(latent_format, latents)), labels)


@functools.cache
def _judge() -> Any:
    """The digits classifier, loaded once per process (every method of every judged run uses it)."""
    from .digits import Judge

    return Judge()


def _latents(setting: Setting, samples: list[Sample]) -> torch.Tensor:
    """The final latents fidelity is measured on: every repeat's (distinct noise) or repeat 0's (same noise)."""
    return torch.cat([s.latent for s in samples]) if setting.distinct_repeats else samples[0].latent


def _figures(
    setting: Setting,
    method: Method,
    runs: _Runs,
    counted: dict[str, tuple[float, torch.Tensor, tuple[int, int] | None]],
    baseline: dict[str, Any],
    profile: Any,
    latent_format: Any,
) -> dict[str, Any]:
    samples = runs.samples[method.name]
    # with the same noise in every repeat, the repeats must agree to the bit; with distinct noise only the
    # FlopCounterMode run of repeat 0 can be compared (below)
    deterministic = (
        None if setting.distinct_repeats else all(torch.equal(samples[0].latent, s.latent) for s in samples)
    )
    seconds = [s.seconds for s in samples]
    step_seconds = analysis.median_steps([s.step_seconds for s in samples])
    step_min = analysis.min_steps([s.step_seconds for s in samples])
    out: dict[str, Any] = {
        "name": method.name,
        "family": method.family,
        "kind": method.kind,
        "params": method.params,
        "wall_seconds": _median(seconds),
        "wall_seconds_runs": seconds,
        "cpu_seconds": _median([s.cpu_seconds for s in samples]),
        "step_seconds": step_seconds,
        "step_seconds_min": step_min,
        "wall_seconds_step_min": sum(step_min),
        "load": [s.load for s in samples],
        "peak_rss_mb": _median([s.peak_rss_mb for s in samples]),
        "deterministic": deterministic,
        "predicted_flops_speedup": method.predicted_flops_speedup,
        "notes": method.notes,
    }
    if method.kind == "soda":
        out.update(_soda_figures(method, runs.reports[method.name], profile, step_min))
    elif method.name in counted:
        flops, latent, skips = counted[method.name]
        out.update({"flops": flops, "flops_source": "FlopCounterMode"})
        out["deterministic"] = (deterministic is not False) and torch.equal(latent, samples[0].latent)
        if skips is not None:
            out["full_steps"] = skips[1] - skips[0]
    if baseline:
        out["speedup_wall"] = baseline["wall_seconds"] / out["wall_seconds"]
        out["speedup_cpu"] = baseline["cpu_seconds"] / out["cpu_seconds"]
        out["speedup_wall_step_min"] = baseline["wall_seconds_step_min"] / out["wall_seconds_step_min"]
        out["flops_speedup"] = baseline["flops"] / out["flops"] if out.get("flops") else None
        if out["flops_speedup"]:
            out["wall_over_flops"] = out["speedup_wall"] / out["flops_speedup"]
        out["fidelity"] = fidelity(latent_format, baseline["latent"], _latents(setting, samples))
    out["samples"] = int(_latents(setting, samples).shape[0])
    if setting.judged:
        out["judged"] = _judged(setting, latent_format, _latents(setting, samples))
    return out


def run(setting: Setting, built: Built, spec: Run) -> dict[str, Any]:
    """Benchmark ``setting`` at one sampling set-up; returns the JSON-ready record of this run."""
    model, positive, negative = built
    steps, core = spec.steps, spec.core
    setting = setting.for_run(spec)
    ctx = Context.create(model, setting, steps, positive, negative)
    if spec.cfg is not None:
        ctx = dataclasses.replace(ctx, cfg=spec.cfg)
    started = time.perf_counter()
    sample(model, dataclasses.replace(ctx, steps=2))  # warm-up: model load, first-call allocations
    profile, profile_seconds = _profile(model, ctx, setting, "mean")
    abs_profile, abs_seconds = (
        (None, None) if setting.ablation_target is None or core else _profile(model, ctx, setting, "abs_mean")
    )
    calibration = _calibrate_peers(model, ctx, setting)
    skipped: list[dict[str, Any]] = []
    methods = [full_method(model), *soda_methods(setting, model, profile, abs_profile, skipped, core)]
    methods += baseline_methods(setting, model, profile, core) + external_methods(setting, model)
    methods += peer_methods(setting, model, calibration, skipped)
    logger.info("bench: %d methods x %d repeats at %s", len(methods), setting.repeats, spec.label)

    skip_log, counted = SkipLog(), {}
    logging.getLogger().addHandler(skip_log)
    try:
        for method in methods:
            if method.kind != "soda":
                skip_log.last = None
                start = time.perf_counter()
                flops, latent = count_flops(method.model, ctx)
                counted[method.name] = (flops, latent, skip_log.last)
                seconds = time.perf_counter() - start
                logger.info("bench: FlopCounterMode %-28s %.1f GFLOPs (%.1f s)", method.name, flops / 1e9, seconds)
        runs = _timed_rounds(methods, ctx, setting.repeats)
    finally:
        logging.getLogger().removeHandler(skip_log)

    full_samples = runs.samples[methods[0].name]
    latent_format = model.model.latent_format
    baseline_core = {
        "wall_seconds": _median([s.seconds for s in full_samples]),
        "cpu_seconds": _median([s.cpu_seconds for s in full_samples]),
        "wall_seconds_step_min": sum(analysis.min_steps([s.step_seconds for s in full_samples])),
        "flops": counted[methods[0].name][0],
        "latent": _latents(setting, full_samples),
    }
    baseline = _figures(setting, methods[0], runs, counted, {}, profile, latent_format)
    baseline["full_steps"] = steps
    results = [_figures(setting, m, runs, counted, baseline_core, profile, latent_format) for m in methods[1:]]
    soda_full = [r["runtime_full_flops"] for r in results if r.get("runtime_full_flops")]
    baseline["runtime_full_flops"] = soda_full[0] if soda_full else None
    fit = analysis.step_time_fit([r for r in results if r["kind"] == "soda"])
    record = {
        "steps": steps,
        "label": spec.label,
        "stem": spec.stem,
        "core": core,
        "sampler": ctx.sampler,
        "scheduler": ctx.scheduler,
        "cfg": ctx.cfg,
        "seed": ctx.seed,
        "seeds": ctx.seeds,
        "profile_seed": ctx.seed if setting.profile_seed is None else setting.profile_seed,
        "repeats": setting.repeats,
        "samples": baseline["samples"],
        "latent_shape": list(ctx.latent.shape),
        "image_tokens": profile.meta.get("image_tokens"),
        "text_tokens": profile.meta.get("text_tokens"),
        "profile": {
            "seconds": profile_seconds,
            "abs_mean_seconds": abs_seconds,
            "max_distance": profile.max_distance,
            "prune_ratios": [round(float(r), 3) for r in profile.prune_ratios],
            "step_full_gflops": profile.flops.step_full / 1e9,
        },
        "peer_calibration": {
            "seconds": calibration.seconds,
            "seed": ctx.seed if setting.profile_seed is None else setting.profile_seed,
            "mag_ratios": list(calibration.mag_ratios),
            "tea_distances": list(calibration.distances),
            "tea_changes": list(calibration.changes),
            "tea_coefficients": list(calibration.coefficients),
        },
        "baseline": baseline,
        "methods": results,
        "skipped": skipped,
        "step_time_fit": fit,
        "rss_method": PeakRss.method,
        "seconds": time.perf_counter() - started,
    }
    return assess(record)


def assess(run: dict[str, Any]) -> dict[str, Any]:
    """Fill ``run``'s matched-speed-up table and targets from its measured methods (no sampling: ``--replot``
    re-derives them from a stored result)."""
    families = tuple(f for f in FAMILIES if f != ABLATION)
    run["matched"] = analysis.matched_speedups(run["methods"], families, rivals=RIVALS, modes=SODA_MODES)
    run["targets"] = analysis.targets(run, bool(run["baseline"].get("judged")), run["matched"])
    return run
