"""What the SODA nodes share: their menu category, the socket types between them and the operation choices."""

from __future__ import annotations

from comfy_api.latest import io

from ..soda_core.compensation import MODES


CATEGORY = "sampling/soda"
SodaProfile = io.Custom("SODA_PROFILE")
SodaPlanSocket = io.Custom("SODA_PLAN")  # carries a soda_core.api.Plan: a FixedSchedule or a ReplanRecipe
OPERATIONS = {"cache and prune": True, "cache only": False}


def compensation_input() -> io.Combo.Input:
    """The ``compensation`` input of SODA Model Patch and SODA Accelerate (``soda_core.compensation``)."""
    return io.Combo.Input(
        "compensation",
        options=list(MODES),
        default="none",
        optional=True,
        tooltip="What reused modules serve between full steps. none: the cached output (SODA as published). "
        "taylor1 / taylor2: a forecast from the last 2 / 3 full steps' outputs. goc: the cached output plus a "
        "correction fitted on the profiling run (off where the features turn back). auto: per step and module the "
        "one with the least profiled error. Costs 1-2 extra cached outputs per module (said in the run summary).",
    )


def speedup_in_input() -> io.Combo.Input:
    """The ``speedup_in`` input of Plan SODA Schedule and SODA Accelerate (``soda_core.planner_wall``)."""
    return io.Combo.Input(
        "speedup_in",
        options=["flops", "wall"],
        default="flops",
        optional=True,
        tooltip="What the speedup measures. flops: transformer FLOPs (SODA as published; on a CPU the wall time "
        "gains less, since a step has fixed costs and partial recomputes cost more than their FLOPs). wall: the "
        "wall time predicted from block times measured while profiling on this device (profiles made before "
        "this option existed must be measured again).",
    )
