"""The soak's quick part, in the default suite (one server start, two small prompts): every bad input of the soak
(``soak_prompts.BAD_INPUTS``) is refused when queued, by an error naming the input and its value, before anything
runs (no history entry, no output), and the server runs the next prompt. The long soak is ``test_soak.py``
(``make soak``), which also checks that prompts after refused ones are bit-exact with the same prompt alone."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.soak_prompts import KINDS
from e2e.soak_runner import refusal_problem, run


pytestmark = pytest.mark.e2e

SEED = 7


def test_bad_inputs_are_refused_before_any_work(comfy_server: Any, pack_log_problems: Any) -> None:
    first = run(comfy_server, "quick-first", KINDS["full"], SEED, "quick")
    bad = [run(comfy_server, f"quick-{name}", spec, SEED, "quick") for name, spec in KINDS.items() if spec.bad]
    assert len(bad) >= 5, [outcome.name for outcome in bad]
    problems = [refusal_problem(outcome, comfy_server.base_dir / "output" / "quick") for outcome in bad]
    assert not any(problems), "\n".join(p for p in problems if p)
    assert len(comfy_server.get_json("/history")) == 1, "a refused prompt left a history entry (it was queued)"
    after = run(comfy_server, "quick-after", KINDS["full"], SEED + 1, "quick")  # another seed: not from the cache
    assert first.status == after.status == "success" and len(after.latents) == 1, after
    assert not pack_log_problems()
