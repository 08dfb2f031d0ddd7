"""What is compared: full compute; SODA at each target, plain and with compensation ``auto`` (forecasts on reuse
steps), cache only (no token recompute) with and without compensation, its ablations (evenly spread full steps,
and three open choices); the paper's baselines FORA (static interval cache) and ToCa (token cache) as SODA schedules;
ComfyUI core's EasyCache and LazyCache; MagCache-like and TeaCache-like step caches (``benchmarks.peer_caches``).

Every method is a patched clone of the same ModelPatcher, made the way a workflow makes it: SODA and the baselines
through the ``SODAModelPatch`` node's ``execute`` (baselines with a fixed schedule, ``soda_core.baselines``);
EasyCache and LazyCache through ComfyUI core's node classes (``comfy_extras.nodes_easycache``); MagCache-like and
TeaCache-like through ``peer_caches.apply_*`` (the same ModelPatcher seams), each threshold chosen on the calibration
run so its step count meets one of SODA's targets.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from . import peer_cache_rules, peer_caches
from .settings import Setting


logger = logging.getLogger(__name__)

FULL = "full compute"
SODA = "SODA"
CACHE_ONLY = "SODA cache only"
COMPENSATED = "SODA + compensation"
COMPENSATED_CACHE_ONLY = "SODA + compensation, cache only"
SODA_UNIFORM = "SODA uniform schedule"
ABLATION = "SODA ablation"
FORA = "FORA (static cache)"
TOCA = "ToCa (token cache)"
EASYCACHE = "EasyCache"
LAZYCACHE = "LazyCache"
MAGCACHE = peer_caches.MAGCACHE
TEACACHE = peer_caches.TEACACHE
FAMILIES = (
    SODA,
    COMPENSATED,
    CACHE_ONLY,
    COMPENSATED_CACHE_ONLY,
    SODA_UNIFORM,
    ABLATION,
    FORA,
    TOCA,
    EASYCACHE,
    LAZYCACHE,
    MAGCACHE,
    TEACACHE,
)
RIVALS = (FORA, TOCA, EASYCACHE, LAZYCACHE, MAGCACHE, TEACACHE)  # what SODA's margin at matched speed is over
SODA_FAMILIES = (SODA, COMPENSATED, CACHE_ONLY, COMPENSATED_CACHE_ONLY, SODA_UNIFORM, ABLATION)  # planned by SODA
# what a user picks on the node (pruning on / off, compensation none / auto): SODA's figure is its best of these
SODA_MODES = (SODA, COMPENSATED, CACHE_ONLY, COMPENSATED_CACHE_ONLY)
# each compensated mode and the same mode without compensation, with the suffix its target rows carry
COMPENSATION_PAIRS = ((COMPENSATED, SODA, ""), (COMPENSATED_CACHE_ONLY, CACHE_ONLY, ", cache only"))


@dataclass
class Method:
    name: str
    family: str
    kind: str  # "full" | "soda" | "external"
    params: dict[str, Any]
    model: Any
    schedule: Any = None  # soda_core Schedule the run samples with (SODA kinds)
    predicted_flops_speedup: float | None = None
    plan_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _x(target: float) -> str:
    return f"{target:g}x"


def _patch(model: Any, soda_plan: Any) -> Any:
    from comfyui_soda.nodes.soda import SODAModelPatch

    return SODAModelPatch.execute(model, soda_plan).result[0]


def _planned(
    model: Any, profile: Any, name: str, family: str, params: dict[str, Any], prune_attention: bool, **config: Any
) -> Method:
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig

    start = time.perf_counter()
    soda_plan = plan_schedule(profile, PlanConfig(**config), prune_attention)
    seconds = time.perf_counter() - start
    schedule = soda_plan.schedule
    return Method(
        name,
        family,
        "soda",
        {**params, "prune_attention": prune_attention, "score": profile.meta.get("score", "mean"), **config},
        _patch(model, soda_plan),
        schedule,
        schedule.predicted_flops_ratio,
        seconds,
        list(schedule.notes),
    )


def _fixed(model: Any, profile: Any, schedule: Any, name: str, family: str, params: dict[str, Any]) -> Method:
    """A baseline's fixed schedule on SODA's runtime (FLOPs predicted with the profile's FlopModel)."""
    from comfyui_soda.soda_core.api import FixedSchedule
    from comfyui_soda.soda_core.planner import schedule_flops

    flops = profile.flops
    predicted = schedule.steps * flops.step_full / schedule_flops(flops, schedule.anchors, schedule.recompute)
    patched = _patch(model, FixedSchedule(schedule, profile))
    return Method(name, family, "soda", params, patched, schedule, predicted, notes=list(schedule.notes))


def baseline_methods(setting: Setting, model: Any, profile: Any, core: bool = False) -> list[Method]:
    """FORA: a full step every n steps, pure reuse between, at integer intervals and, for speed-ups in between, with
    the fewest evenly spread full steps that reach each of ``uniform_targets`` (its FLOPs, not the profile, decide);
    ToCa: MLP fresh tokens between full steps (ToCa's FLUX ratios). ``core``: the integer intervals only."""
    from comfyui_soda.soda_core import baselines
    from comfyui_soda.soda_core.schedule import Schedule

    layout, sigmas = profile.layout, profile.sigmas
    methods = [
        _fixed(model, profile, Schedule.uniform(layout, sigmas, n), f"FORA every {n}", FORA, {"interval": n})
        for n in setting.fora_intervals
        if n <= profile.steps
    ]
    if core:
        return methods
    for t in setting.uniform_targets:
        config = {"target": t, "pruning": False, "anchors": "uniform"}
        methods.append(_planned(model, profile, f"FORA {_x(t)} (evenly spread)", FORA, {}, False, **config))
    for n in setting.toca_intervals:
        schedule = baselines.toca(layout, sigmas, interval=n)
        params = {"interval": n, "fresh_ratio": baselines.TOCA_FRESH_RATIO, "first_full": baselines.TOCA_FIRST_FULL}
        methods.append(_fixed(model, profile, schedule, f"ToCa every {n}", TOCA, params))
    return methods


def soda_methods(
    setting: Setting,
    model: Any,
    profile: Any,
    abs_profile: Any | None,
    skipped: list[dict[str, Any]],
    core: bool = False,
) -> list[Method]:
    """SODA at every target, with compensation ``auto`` (the forecast the profile prices best per reuse cell),
    cache only without and with compensation, and (unless ``core``) evenly spread full steps and the ablations at
    ``setting.ablation_target``."""
    specs: list[tuple[str, str, dict[str, Any], Any, bool, dict[str, Any]]] = []
    for t in setting.targets:
        specs.append((f"SODA {_x(t)}", SODA, {"target": t}, profile, False, {"target": t}))
    for t in setting.compensated_targets:
        config = {"target": t, "compensation": "auto"}
        specs.append((f"SODA {_x(t)} compensation=auto", COMPENSATED, {}, profile, False, config))
    for t in setting.cache_only_targets:
        specs.append((f"SODA cache-only {_x(t)}", CACHE_ONLY, {}, profile, False, {"target": t, "pruning": False}))
    for t in setting.compensated_cache_only_targets:
        config = {"target": t, "pruning": False, "compensation": "auto"}
        name = f"SODA cache-only {_x(t)} compensation=auto"
        specs.append((name, COMPENSATED_CACHE_ONLY, {}, profile, False, config))
    for t in () if core else setting.uniform_targets:
        specs.append((f"SODA uniform {_x(t)}", SODA_UNIFORM, {}, profile, False, {"target": t, "anchors": "uniform"}))
    t = None if core else setting.ablation_target
    if t is not None:
        ablation = {"target": t}
        specs.append(
            (f"SODA {_x(t)} prune_attention", ABLATION, {"ablation": "prune_attention"}, profile, True, ablation)
        )
        if abs_profile is not None:
            specs.append(
                (f"SODA {_x(t)} score=abs_mean", ABLATION, {"ablation": "score"}, abs_profile, False, ablation)
            )
        joint = {"target": t, "joint_cost": True}
        specs.append((f"SODA {_x(t)} joint_cost", ABLATION, {"ablation": "joint_cost"}, profile, False, joint))
    methods = []
    for name, family, params, prof, prune_attention, config in specs:
        try:
            methods.append(_planned(model, prof, name, family, params, prune_attention, **config))
        except ValueError as error:
            logger.warning("bench: %s skipped: %s", name, error)
            skipped.append({"name": name, "family": family, "reason": str(error)})
    return methods


def external_methods(setting: Setting, model: Any) -> list[Method]:
    """ComfyUI core's EasyCache and LazyCache nodes at each reuse threshold (node defaults otherwise)."""
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    methods = []
    for family, node, thresholds in (
        (EASYCACHE, EasyCacheNode, setting.easycache_thresholds),
        (LAZYCACHE, LazyCacheNode, setting.lazycache_thresholds),
    ):
        for threshold in thresholds:
            params = {
                "reuse_threshold": threshold,
                "start_percent": setting.cache_start_percent,
                "end_percent": setting.cache_end_percent,
            }
            patched = node.execute(model, verbose=False, **params).result[0]
            methods.append(Method(f"{family} {threshold:g}", family, "external", params, patched))
    return methods


def peer_methods(
    setting: Setting, model: Any, calibration: peer_caches.Calibration, skipped: list[dict[str, Any]]
) -> list[Method]:
    """MagCache-like and TeaCache-like at one threshold per SODA target: the threshold (of a fine grid) whose
    decisions on the calibration run compute the step count nearest ``steps / target`` (thresholds that give the
    same step count as an earlier target are not repeated). Predicted FLOPs speed-up: steps / computed steps on the
    calibration run (TeaCache-like's decision work not included; FlopCounterMode counts it)."""
    steps, cal = calibration.steps, calibration
    rules = {
        MAGCACHE: lambda t: peer_cache_rules.MagCacheRule(peer_cache_rules.MagCacheConfig(t, cal.mag_ratios), steps),
        TEACACHE: lambda t: peer_cache_rules.TeaCacheRule(peer_cache_rules.TeaCacheConfig(t, cal.coefficients), steps),
    }
    methods = []
    for family, rule in rules.items():
        seen: set[int] = set()
        for target in setting.peer_targets or setting.targets:
            threshold, computed = peer_cache_rules.threshold_for(
                lambda t, rule=rule: sum(peer_cache_rules.simulate(rule(t), cal.distances)), steps, target
            )
            if computed in seen or computed == steps:
                continue
            seen.add(computed)
            config = rule(threshold).config
            try:
                if family == MAGCACHE:
                    patched = peer_caches.apply_magcache(model, config)
                    params = {"threshold": threshold, "K": config.max_skips, "retention": config.retention}
                else:
                    patched = peer_caches.apply_teacache(model, config)
                    params = {"threshold": threshold, "coefficients": list(config.coefficients)}
            except ValueError as error:
                logger.warning("bench: %s skipped: %s", family, error)
                skipped.append({"name": family, "family": family, "reason": str(error)})
                break
            params.update({"target": target, "calibration_steps_computed": computed})
            name = f"{family} {threshold:.3g}"
            methods.append(Method(name, family, "external", params, patched, predicted_flops_speedup=steps / computed))
    return methods


def full_method(model: Any) -> Method:
    return Method(FULL, FULL, "full", {}, model, predicted_flops_speedup=1.0)


class SkipLog(logging.Handler):
    """Catches the end-of-run log line of EasyCache, LazyCache, MagCache-like, TeaCache-like:
    ``<name> - skipped S/T steps``."""

    PATTERN = "skipped "
    NAMES = (EASYCACHE, LAZYCACHE, MAGCACHE, TEACACHE)

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: tuple[int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(self.NAMES) and self.PATTERN in message:
            try:
                done = message.split(self.PATTERN, 1)[1].split(" ", 1)[0]
                skipped, total = (int(x) for x in done.split("/"))
            except ValueError:
                return
            self.last = (skipped, total)
