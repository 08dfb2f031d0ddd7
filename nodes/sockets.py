"""What the SODA nodes share: their menu category, the socket types between them and the operation choices."""

from __future__ import annotations

from comfy_api.latest import io


CATEGORY = "sampling/soda"
SodaProfile = io.Custom("SODA_PROFILE")
SodaPlanSocket = io.Custom("SODA_PLAN")  # carries a soda_core.api.Plan: a FixedSchedule or a ReplanRecipe
OPERATIONS = {"cache and prune": True, "cache only": False}
