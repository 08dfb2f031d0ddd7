"""The one-node path through the real server: ``soda_accelerate_quickstart`` profiles on its first queue (its image
is bit for bit the image of the same graph without SODA Accelerate) and stores the profile under the server's
models/soda_profiles/auto/; the next queue, with another seed and other digits, is accelerated by the FLOPs factor
it promises. ``soda_saved_profile`` samples accelerated from the shipped profile without profiling anything."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from e2e.conftest import API_DIR
from e2e.soda_runs import (
    ACCELERATED,
    PROFILED,
    PROFILING,
    Run,
    nodes_of,
    output_files,
    run,
    save_latent,
    stored_profiles,
    without_soda,
)


pytestmark = pytest.mark.e2e

QUICKSTART = "soda_accelerate_quickstart"
OTHER_DIGITS = " ".join(["3 1 4 1 5 9 2 6 5 3"] * 10)  # another prompt, same batch of 100
FLOPS_TOLERANCE = 0.05
SUMMARY_RATIO = r"transformer FLOPs [\d.]+ G of [\d.]+ G full \((?P<ratio>[\d.]+)x\)"


def load(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads((API_DIR / f"{name}.json").read_text())
    return workflow


def pixels(paths: list[Any]) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in paths]


@pytest.fixture(scope="module")
def quickstart_runs(comfy_server: Any) -> dict[str, Any]:
    """The committed quick start (plus a SaveLatent) queued twice around its full-compute twin."""
    workflow = load(QUICKSTART)
    (sampler,) = nodes_of(workflow, "KSampler")
    (save,) = nodes_of(workflow, "SaveImage")
    first = dict(workflow)
    latent_first = save_latent(first, sampler, "e2e/first")
    profiled = run(comfy_server, first)
    profiles = stored_profiles(comfy_server)
    twin = without_soda(workflow)
    latent_twin = save_latent(twin, sampler, "e2e/twin")
    plain = run(comfy_server, twin)
    second = json.loads(json.dumps(workflow))
    second[sampler]["inputs"]["seed"] = 7
    (encode,) = nodes_of(second, "SODAReferenceClassEncode")
    second[encode]["inputs"]["labels"] = OTHER_DIGITS
    accelerated = run(comfy_server, second)
    return {
        "sampler": sampler,
        "save": save,
        "latents": (latent_first, latent_twin),
        "profiled": profiled,
        "plain": plain,
        "accelerated": accelerated,
        "profiles_after_first": profiles,
        "profiles_after_second": stored_profiles(comfy_server),
    }


def test_first_queue_profiles_at_full_compute_bit_exact(quickstart_runs: dict[str, Any], comfy_server: Any) -> None:
    profiled: Run = quickstart_runs["profiled"]
    plain: Run = quickstart_runs["plain"]
    assert profiled.lines(PROFILING) and profiled.lines(PROFILED), profiled.log[-3000:]
    assert not profiled.lines(ACCELERATED)
    save = quickstart_runs["save"]
    soda_images = pixels(output_files(comfy_server, profiled.history, save, "images"))
    plain_images = pixels(output_files(comfy_server, plain.history, save, "images"))
    assert soda_images and len(soda_images) == len(plain_images)
    assert all(np.array_equal(a, b) for a, b in zip(soda_images, plain_images)), "the profiling run's image differs"
    first, twin = quickstart_runs["latents"]
    (soda_latent,) = output_files(comfy_server, profiled.history, first, "latents")
    (plain_latent,) = output_files(comfy_server, plain.history, twin, "latents")
    a, b = load_file(str(soda_latent))["latent_tensor"], load_file(str(plain_latent))["latent_tensor"]
    assert a.shape == b.shape and bool((a == b).all()), "the profiling run's latent is not the full-compute latent"


def test_the_profile_is_stored_under_models_soda_profiles_auto(quickstart_runs: dict[str, Any]) -> None:
    profiles = quickstart_runs["profiles_after_first"]
    assert len(profiles) == 1, profiles
    (match,) = quickstart_runs["profiled"].lines(PROFILED)
    assert match["file"] == profiles[0].name
    assert quickstart_runs["profiles_after_second"] == profiles  # another prompt and seed: the same setting


def test_second_queue_with_another_prompt_and_seed_is_accelerated(quickstart_runs: dict[str, Any]) -> None:
    accelerated: Run = quickstart_runs["accelerated"]
    assert not accelerated.lines(PROFILING), accelerated.log[-3000:]
    (line,) = accelerated.lines(ACCELERATED)
    speedup = float(load(QUICKSTART)[nodes_of(load(QUICKSTART), "SODAAccelerate")[0]]["inputs"]["speedup"])
    assert float(line["flops"]) == pytest.approx(speedup, rel=FLOPS_TOLERANCE), line.group(0)
    assert 0 < int(line["full"]) < int(line["steps"]) == 20, line.group(0)
    print(f"{QUICKSTART}: {line.group(0)}")  # noqa: T201 (shown with -s)


def test_run_messages_are_sent_to_the_sampler_as_progress_text(quickstart_runs: dict[str, Any]) -> None:
    sampler = quickstart_runs["sampler"]
    profiled: Run = quickstart_runs["profiled"]
    accelerated: Run = quickstart_runs["accelerated"]
    first = profiled.texts.get(sampler, [])
    assert len(first) == 2 and PROFILING.search(first[0]) and PROFILED.search(first[1]), profiled.texts
    assert any(ACCELERATED.search(text) for text in accelerated.texts.get(sampler, [])), accelerated.texts
    assert set(profiled.texts) == {sampler} and set(accelerated.texts) == {sampler}


def test_saved_profile_samples_accelerated_without_profiling(
    quickstart_runs: dict[str, Any], comfy_server: Any, pack_log_problems: Callable[[], list[str]]
) -> None:
    import re

    workflow = load("soda_saved_profile")
    before = stored_profiles(comfy_server)
    result = run(comfy_server, workflow)
    (save,) = [key for key in nodes_of(workflow, "SaveImage") if "image" in workflow[key]["inputs"]["filename_prefix"]]
    assert output_files(comfy_server, result.history, save, "images")
    assert not result.lines(PROFILING) and stored_profiles(comfy_server) == before
    ratios = [float(m["ratio"]) for m in map(re.compile(SUMMARY_RATIO).search, result.log.splitlines()) if m]
    (plan,) = nodes_of(workflow, "SODAPlanSchedule")
    target = float(workflow[plan]["inputs"]["target_speedup"])
    assert len(ratios) == 1 and ratios[0] == pytest.approx(target, rel=FLOPS_TOLERANCE), result.log[-3000:]
    (summary,) = nodes_of(workflow, "PreviewAny")
    assert (result.history["outputs"].get(summary) or {}).get("text"), "the plan summary shows no text"
    assert not pack_log_problems(), "\n\n".join(pack_log_problems())
