"""The one-node path (SODA Accelerate): the first run of a setting is its profiling run, every later one is
accelerated.

For each run the policy looks the run's ``ProfileKey`` up in the store:

* a profile of this very setting: the run samples with the plan for the asked speed-up (planned once per grid);
* a profile of the same setting on another sigma grid (other step count, scheduler or denoise): planned on that
  profile mapped to the run's sigmas (``api.schedule_for``, as SODA Model Patch does), and the message says so;
* none: the run computes every step fully, so its image is the full-compute image, while it records the profile;
  when it completes, the profile is stored under the key. An interrupted or failed run stores nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .api import plan_schedule, schedule_for
from .compensation import check_mode, memory_note
from .layout import Granularity, ModelLayout
from .planner import SPEEDUP_UNITS, PlanConfig
from .policy import ProfilingSession, RunContext, RunSetup
from .profiler import ProfileConfig
from .runtime import SodaRun
from .store import ProfileKey, ProfileStore, grid_digest


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoConfig:
    speedup: float  # transformer-FLOPs speed-up of the accelerated runs
    pruning: bool  # cache and prune (UAS), or cache only
    profile: ProfileConfig
    compensation: str = "none"  # what reuse steps serve (compensation.MODES)
    speedup_in: str = "flops"  # what ``speedup`` speeds up: transformer FLOPs or measured wall time

    def __post_init__(self) -> None:
        check_mode(self.compensation)
        if self.speedup_in not in SPEEDUP_UNITS:
            raise ValueError(
                f"AutoConfig.speedup_in={self.speedup_in!r}: expected one of {SPEEDUP_UNITS}. Fix: use 'flops' "
                "(transformer FLOPs) or 'wall' (wall time predicted from the profiled block times)."
            )


@dataclass
class _Current:
    key: ProfileKey
    session: ProfilingSession | None  # None: an accelerated run
    note: str = ""


class AutoPolicy:
    def __init__(
        self, layout: ModelLayout, model_id: str, store: ProfileStore, config: AutoConfig, meta: dict[str, Any]
    ) -> None:
        self.layout, self.model_id, self.store, self.config, self.meta = layout, model_id, store, config, meta
        self._plans: dict[str, Any] = {}  # profile file -> its plan (re-planned per grid inside)
        self._current: _Current | None = None

    @property
    def measured(self) -> str:
        if self.layout.granularity is Granularity.BLOCK:
            return "block"
        return "module+prune" if self.config.profile.measure_pruning else "module"

    def key(self, context: RunContext) -> ProfileKey:
        shape = context.latent_shape
        return ProfileKey(
            model=self.model_id,
            sampler=context.sampler,
            steps=context.sigmas.numel() - 1,
            grid=grid_digest(context.sigmas),
            latent=tuple(shape[1:]),
            guided=context.cfg != 1.0,
            measured=self.measured,
        )

    def begin(self, context: RunContext) -> RunSetup:
        key = self.key(context)
        found, problems = self.store.find(key)
        warning = "".join(f"SODA: {p}\n" for p in problems)
        if found is not None and found.exact and self._unpriced(found.profile):
            warning += "SODA: the stored profile has no predictor errors (an older version made it); profiling again\n"
            found = None
        if found is not None and found.exact and self.config.speedup_in == "wall" and found.profile.time is None:
            warning += "SODA: the stored profile has no block times (an older version made it); profiling again\n"
            found = None
        if found is None:
            session = ProfilingSession(self.layout, self.config.profile)
            self._current = _Current(key, session)
            setup = session.begin(context)
            message = f"SODA: profiling this run at full compute; next runs {self.config.speedup:g}x"
            return RunSetup(setup.schedule, setup.observer, warning + message, timer=setup.timer)
        plan = self._plans.get(str(found.path))
        if plan is None:
            config = PlanConfig(
                self.config.speedup,
                pruning=self.config.pruning,
                compensation=self.config.compensation,
                speedup_in=self.config.speedup_in,
            )
            plan = self._plans[str(found.path)] = plan_schedule(found.profile, config, prune_attention=False)
        schedule = schedule_for(plan, context.sigmas)
        note = "" if found.exact else f" (re-planned from the {found.profile.steps}-step profile)"
        self._current = _Current(key, None, note)
        message = f"SODA: {schedule.predicted_flops_ratio:.2f}x planned, {len(schedule.anchors)} of {schedule.steps} steps full{note}"
        return RunSetup(schedule, None, warning + message)

    def _unpriced(self, profile: Any) -> bool:
        """goc and auto plan from the predictors' profiled errors: a profile without them is measured again."""
        return self.config.compensation in ("goc", "auto") and not profile.has_forecasts

    def end(self, run: SodaRun, completed: bool) -> str:
        current, self._current = self._current, None
        if current is None:
            return ""
        if current.session is None:
            report = run.report
            if not completed:
                return "SODA: run interrupted"
            measured = report.measured_speedup()
            return (
                f"SODA: {report.flops_ratio:.2f}x FLOPs, measured {measured:.2f}x, "
                f"{report.full_steps} of {report.steps} steps full{current.note}{memory_note(report.compensation_bytes)}"
            )
        current.session.end(run, completed)
        if not completed:
            return "SODA: profiling run interrupted; nothing stored, the next run profiles again"
        meta = {**self.meta, "key": current.key.to_meta(), "steps": current.key.steps, "sampler": current.key.sampler}
        meta["seconds"] = round(run.report.seconds, 3)
        path = self.store.save(current.key, current.session.profile(meta))
        logger.info("SODA: stored the profile of this setting in %s", path)
        return f"SODA: profiled this run at full compute; next runs {self.config.speedup:g}x (profile {path.name})"
