"""The three SODA stages as the nodes call them: profile a run, plan a schedule, serve a run with it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .planner import PlanConfig, plan
from .profile import SensitivityProfile
from .schedule import Schedule


logger = logging.getLogger(__name__)


@dataclass
class SodaPlan:
    """What the Plan node hands to the Patch node: a schedule and what it was planned from, so a run with other
    sigmas (step count, scheduler, denoise) gets a schedule planned on the profile mapped to its own sigmas."""

    schedule: Schedule
    profile: SensitivityProfile
    config: PlanConfig
    _replans: dict[tuple[float, ...], Schedule] = field(default_factory=dict, repr=False)

    def for_sigmas(self, sigmas: torch.Tensor) -> Schedule:
        sigmas = sigmas.double().cpu()
        if self.schedule.sigmas.shape == sigmas.shape and torch.allclose(self.schedule.sigmas, sigmas, atol=1e-7):
            return self.schedule
        key = tuple(round(float(s), 8) for s in sigmas)
        if key not in self._replans:
            logger.info(
                "SODA: this run samples %d steps on other sigmas than the %d profiled; planning on the profile "
                "mapped to the run's sigmas.",
                sigmas.numel() - 1,
                self.profile.steps,
            )
            self._replans[key] = plan(self.profile.resample(sigmas), self.config)
        return self._replans[key]


def plan_schedule(profile: SensitivityProfile, config: PlanConfig, prune_attention: bool) -> SodaPlan:
    """DCS + UAS on a profile. With ``prune_attention`` off, attention modules are only ever computed or reused
    whole (ToCa's choice); the MLP may still be partially recomputed."""
    planning_profile = profile if prune_attention else profile.without_pruning("attn")
    return SodaPlan(plan(planning_profile, config), planning_profile, config)


def describe_run(meta: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(meta.items()) if not isinstance(v, dict))
