"""What is compared: full compute, SODA (targets, cache only, uniform schedules, ablations), EasyCache, LazyCache.

Every method is a patched clone of the same ModelPatcher, made the way a workflow makes it: SODA through the
``SODAModelPatch`` node's ``execute`` with a plan from ``plan_schedule``; EasyCache and LazyCache through ComfyUI
core's node classes (``comfy_extras.nodes_easycache``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .settings import Setting


logger = logging.getLogger(__name__)

FULL = "full compute"
SODA = "SODA"
CACHE_ONLY = "SODA cache only"
UNIFORM = "uniform interval"
ABLATION = "SODA ablation"
EASYCACHE = "EasyCache"
LAZYCACHE = "LazyCache"
FAMILIES = (SODA, CACHE_ONLY, UNIFORM, ABLATION, EASYCACHE, LAZYCACHE)


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


def _uniform(model: Any, profile: Any, interval: int) -> Method:
    from comfyui_soda.soda_core.api import SodaPlan
    from comfyui_soda.soda_core.planner import PlanConfig, schedule_flops
    from comfyui_soda.soda_core.schedule import Schedule

    schedule = Schedule.uniform(profile.layout, profile.sigmas, interval)
    flops = profile.flops
    predicted = schedule.steps * flops.step_full / schedule_flops(flops, schedule.anchors, schedule.recompute)
    return Method(
        f"uniform every {interval}",
        UNIFORM,
        "soda",
        {"interval": interval},
        _patch(model, SodaPlan(schedule, profile, PlanConfig())),
        schedule,
        predicted,
        notes=list(schedule.notes),
    )


def soda_methods(
    setting: Setting, model: Any, profile: Any, abs_profile: Any | None, skipped: list[dict[str, Any]]
) -> list[Method]:
    """SODA at every target, cache only, uniform schedules and the ablations at ``setting.ablation_target``."""
    specs: list[tuple[str, str, dict[str, Any], Any, bool, dict[str, Any]]] = []
    for t in setting.targets:
        specs.append((f"SODA {_x(t)}", SODA, {"target": t}, profile, False, {"target": t}))
    for t in setting.cache_only_targets:
        specs.append((f"SODA cache-only {_x(t)}", CACHE_ONLY, {}, profile, False, {"target": t, "pruning": False}))
    t = setting.ablation_target
    ablation = {"target": t}
    specs.append((f"SODA {_x(t)} prune_attention", ABLATION, {"ablation": "prune_attention"}, profile, True, ablation))
    if abs_profile is not None:
        specs.append((f"SODA {_x(t)} score=abs_mean", ABLATION, {"ablation": "score"}, abs_profile, False, ablation))
    joint = {"target": t, "joint_cost": True}
    specs.append((f"SODA {_x(t)} joint_cost", ABLATION, {"ablation": "joint_cost"}, profile, False, joint))
    methods = []
    for name, family, params, prof, prune_attention, config in specs:
        try:
            methods.append(_planned(model, prof, name, family, params, prune_attention, **config))
        except ValueError as error:
            logger.warning("bench: %s skipped: %s", name, error)
            skipped.append({"name": name, "family": family, "reason": str(error)})
    for interval in setting.uniform_intervals:
        if interval <= profile.steps:
            methods.append(_uniform(model, profile, interval))
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


def full_method(model: Any) -> Method:
    return Method(FULL, FULL, "full", {}, model, predicted_flops_speedup=1.0)


class SkipLog(logging.Handler):
    """Catches EasyCache/LazyCache's end-of-run log line: ``<name> - skipped S/T steps``."""

    PATTERN = "skipped "

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last: tuple[int, int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if ("EasyCache" in message or "LazyCache" in message) and self.PATTERN in message:
            try:
                done = message.split(self.PATTERN, 1)[1].split(" ", 1)[0]
                skipped, total = (int(x) for x in done.split("/"))
            except ValueError:
                return
            self.last = (skipped, total)
