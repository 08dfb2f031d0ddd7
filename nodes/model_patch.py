"""SODA Model Patch: a copy of the model that samples with a plan (stage 3 of SODA)."""

from __future__ import annotations

from comfy_api.latest import io

from ..soda_core.api import FixedSchedule, Plan, ReplanRecipe, with_compensation
from ..soda_core.layout import Granularity, check_layout
from ..soda_core.policy import PlanPolicy
from ..soda_core.profile import SensitivityProfile
from ..soda_core.tokens import TokenScore
from .inputs import SodaNode, checked
from .patching import SodaHook, install, prepare
from .sockets import CATEGORY, SodaPlanSocket, compensation_input


class SODAModelPatch(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODAModelPatch",
            display_name="SODA Model Patch",
            category=CATEGORY,
            description=(
                "Stage 3 of SODA. Returns a copy of the model that samples with the schedule: full steps "
                "compute everything, reuse steps serve modules from the cache and recompute the planned tokens. "
                "Use it with any sampler node; the input model is not changed."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model the profile was measured on."),
                SodaPlanSocket.Input("schedule", tooltip="From Plan SODA Schedule."),
                compensation_input(),
            ],
            outputs=[io.Model.Output(tooltip="The model with SODA acceleration.")],
        )

    @classmethod
    def check(cls, values) -> None:
        plan = values.get("schedule")
        if plan is not None and not isinstance(plan, FixedSchedule | ReplanRecipe):
            raise ValueError(
                f"SODA Model Patch: schedule is a {type(plan).__name__}, expected the output of Plan SODA Schedule. "
                "Fix: connect Plan SODA Schedule's schedule output."
            )

    @classmethod
    @checked
    def execute(cls, model, schedule: Plan, compensation: str = "none") -> io.NodeOutput:
        schedule = with_compensation(schedule, compensation)
        served = prepare(model, granularity_of(schedule.profile))
        check_layout(schedule.profile.layout, served.layout, "schedule")
        patched = model.clone()
        hook = SodaHook(served, PlanPolicy(schedule), score_of(schedule.profile))
        install(patched, hook)
        return io.NodeOutput(patched)


def granularity_of(profile: SensitivityProfile) -> Granularity:
    return profile.layout.granularity


def score_of(profile: SensitivityProfile) -> TokenScore:
    return TokenScore(profile.meta.get("score", TokenScore.MEAN.value))
