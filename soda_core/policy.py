"""What a patched model does in each sampling run: which schedule it samples with and whether it records a profile.

A run starts with a ``RunContext`` (what ComfyUI's sampler is about to do) and a ``RunPolicy`` answers with a
``RunSetup``; when the run ends (completed, interrupted or failed) the policy hears about it. Three policies serve
the pack's nodes: ``FixedPolicy`` (SODA Model Patch: a plan, re-planned by sigma where the plan allows),
``ProfilingSession`` (Profile Sensitivity: full compute while recording) and ``auto.AutoPolicy`` (SODA Accelerate:
profile the first run of a setting, accelerate the next ones).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .api import Plan, schedule_for
from .compensation import memory_note
from .layout import ModelLayout
from .profile import SensitivityProfile
from .profiler import ProfileConfig, SensitivityRecorder
from .runtime import SodaRun, StepObserver
from .schedule import Schedule
from .timing_probe import TimeProbe


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """A sampling run about to start."""

    sigmas: torch.Tensor  # (T+1,) float64 on the CPU
    sampler: str = "unknown"  # the sampler's name (e.g. "euler")
    latent_shape: tuple[int, ...] = ()  # (B, C, *dims)
    cfg: float = 1.0


@dataclass(frozen=True)
class RunSetup:
    schedule: Schedule
    observer: StepObserver | None = None
    message: str = ""  # what the user should see about this run (shown where ComfyUI shows a node's progress)
    timer: TimeProbe | None = None  # profiling: times the blocks (timing_probe)


class RunPolicy(Protocol):
    def begin(self, context: RunContext) -> RunSetup: ...

    def end(self, run: SodaRun, completed: bool) -> str:
        """The run ended; returns what the user should see about it ("" for nothing)."""
        ...


@dataclass
class FixedPolicy:
    """Every run samples with ``schedule_for(sigmas)`` (and ``observer_for``'s observer, if any)."""

    schedule_for: Callable[[torch.Tensor], Schedule]
    observer_for: Callable[[torch.Tensor], StepObserver | None] = lambda sigmas: None
    on_finish: Callable[[SodaRun], None] | None = None

    def begin(self, context: RunContext) -> RunSetup:
        return RunSetup(self.schedule_for(context.sigmas), self.observer_for(context.sigmas))

    def end(self, run: SodaRun, completed: bool) -> str:
        if self.on_finish is not None:
            self.on_finish(run)
        return ""


@dataclass
class PlanPolicy:
    """SODA Model Patch: every run samples with ``api.schedule_for(plan, sigmas)``, and the user is told when the
    run differs from what the profile measured (another sampler, or another sigma grid that was re-planned)."""

    plan: Plan

    def begin(self, context: RunContext) -> RunSetup:
        schedule = schedule_for(self.plan, context.sigmas)
        profiled = self.plan.profile
        lines = []
        sampler = str(profiled.meta.get("sampler", ""))
        if sampler and _sampler_name(sampler) != _sampler_name(context.sampler):
            lines.append(
                f"SODA: the profile was measured with the {sampler} sampler, this run uses {context.sampler}: "
                "the sensitivities differ between samplers, so the result drifts further from full compute "
                "(see the README, 'Other samplers'). Profile with this sampler for the best result."
            )
        if schedule is not self.plan.schedule:
            lines.append(
                f"SODA: re-planned for this {schedule.steps}-step run from the {profiled.steps}-step profile (an "
                "approximation); profile with this run's steps and scheduler for exact sensitivities."
            )
        lines.append(
            f"SODA: {schedule.predicted_flops_ratio:.2f}x planned, {len(schedule.anchors)} of {schedule.steps} steps full"
        )
        return RunSetup(schedule, None, "\n".join(lines))

    def end(self, run: SodaRun, completed: bool) -> str:
        if not completed:
            return ""
        report = run.report
        return (
            f"SODA: {report.flops_ratio:.2f}x FLOPs, measured {report.measured_speedup():.2f}x, "
            f"{report.full_steps} of {report.steps} steps full{memory_note(report.compensation_bytes)}"
        )


def _sampler_name(name: str) -> str:
    return name.replace("_", "").lower()


@dataclass
class ProfilingSession:
    """Records a profile over one or more full-compute runs on one sigma grid (calibration runs)."""

    layout: ModelLayout
    config: ProfileConfig
    recorder: SensitivityRecorder | None = None
    sigmas: torch.Tensor | None = None
    runs: list[SodaRun] = field(default_factory=list)
    timer: TimeProbe | None = None  # of the first run, which times the blocks
    timed: SodaRun | None = None

    def begin(self, context: RunContext) -> RunSetup:
        sigmas = context.sigmas
        if self.recorder is None:
            self.recorder, self.sigmas = SensitivityRecorder(self.layout, sigmas.numel() - 1, self.config), sigmas
        elif self.sigmas is None or not torch.equal(self.sigmas, sigmas):
            raise RuntimeError("SODA profiling: calibration runs sampled on different sigmas.")
        self.recorder.new_run()
        timer = None
        if self.timed is None and self.config.time_repeats:
            timer = self.timer = TimeProbe(self.layout, step=1, repeats=self.config.time_repeats)
        return RunSetup(Schedule.full_compute(self.layout, sigmas), self.recorder.observe, timer=timer)

    def end(self, run: SodaRun, completed: bool) -> str:
        if completed:
            self.runs.append(run)
            if run.timer is not None and run.timer.measured:
                self.timed = run
        return ""

    def profile(self, meta: dict[str, Any]) -> SensitivityProfile:
        """The profile of the completed runs (the last run's shapes and FLOPs)."""
        if self.recorder is None or self.sigmas is None or not self.runs:
            raise RuntimeError(
                "SODA profiling: sampling finished without calling the model (another cache node, such as "
                "EasyCache, may have skipped the model calls profiling needs)."
            )
        last = self.runs[-1]
        meta = {**meta, "image_tokens": last.tokens.image, "text_tokens": last.tokens.text}
        flops = last.flop_model()
        profile = self.recorder.result(self.sigmas, flops, meta)
        timed = self.timed
        if timed is not None and timed.timer is not None:
            time_model = timed.timer.result(timed.report.step_seconds, flops)
            if time_model is not None:
                logger.info("SODA profiling timed the blocks: %s", time_model.describe(flops))
            profile = dataclasses.replace(profile, time=time_model)
        return only_prunable(profile, last.prunable())


def only_prunable(profile: SensitivityProfile, cells: set[tuple[int, str]]) -> SensitivityProfile:
    """The profile with E_p = inf (never recompute selected tokens) wherever the served program cannot."""
    if not profile.has_prune_error:
        return profile
    prune = profile.prune_error.clone()
    for layer in range(profile.layout.num_layers):
        for m, module in enumerate(profile.layout.modules):
            if (layer, module) not in cells:
                prune[:, layer, m] = float("inf")
    return dataclasses.replace(profile, prune_error=prune)
