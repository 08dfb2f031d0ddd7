"""Soak: mixed prompts through the real server, each output bit-exact with the same prompt alone, memory flat.

The prompts (``soak_prompts.py``) mix full compute, SODA Accelerate at 1.5x, 2x and 3x, the explicit Profile
Sensitivity -> Plan SODA Schedule -> SODA Model Patch path, SkipLayerGuidanceDiT at full compute and before and after
SODA, a LoRA (LoraLoaderModelOnly, with and without SODA), ModelSamplingFlux (another sigma grid), RescaleCFG, batch
sizes 1 and 10, CFG on and off, one prompt with two differently patched models (two SODA Accelerate nodes on one
model, two samplers), interrupts (POST /interrupt once the sampler reports progress: of a full-compute run, of an
accelerated run and of a profiling run), a run that fails (a profiling run whose memory_limit_mb is too low) and
prompts with a bad input (``soak_prompts.BAD_INPUTS``).

How it runs, on one ComfyUI base directory (one models folder):

1. **Warm-up** (server 1): one prompt per stored-profile setting the mix uses; each is that setting's profiling run.
2. **Mixed sequence** (server 1, right after): the prompts back to back, every one with its own seed, so ComfyUI's
   node cache never answers a sampler from an earlier prompt (the loaded and patched models are reused, as they are
   for a user). No profile is made or changed by it; every SODA Accelerate sampler says its run is planned.
3. **The same prompt alone**: the identical API prompt (same graph, inputs and seed; only SaveLatent's filename
   prefix differs) queued as the first and only prompt of a freshly started server on the same base directory, so
   with the profiles of step 1 present and nothing else carried over. Each completed prompt of step 2 must save
   latents bit-exact (``torch.equal``) with it. The short form re-runs alone every prompt right after one that did
   not complete (interrupted, failed, refused) and the first prompt of a few kinds (``SHORT_ALONE_KINDS``); the long
   form re-runs every completed prompt.

An interrupted prompt must end as interrupted and save no latent; an interrupted or failed profiling run must store
no profile; the failed run's error must name memory_limit_mb; a prompt with a bad input must be refused when queued
(so nothing of it runs) by an error naming the input and its value. Resident memory of the server process (with its
children, psutil) is read after the 5th and after the last prompt of step 2; the long form asserts the last within
10 % of the 5th, the short form records both (``record_property`` and one terminal line).

Form: ``SODA_SOAK=long`` (``make soak``: 100 prompts), else the short form (``SHORT_SEQUENCE``, 27 prompts), which
the default run (``make test``) runs. ``test_soak_quick.py`` sends the bad inputs only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from e2e.conftest import ROOT, ComfyServer, comfy_server_lib, find_pack_problems
from e2e.soak_prompts import (
    BAD_INPUTS,
    KINDS,
    SHORT_ALONE_KINDS,
    SHORT_SEQUENCE,
    completes,
    long_sequence,
    warm_up_specs,
    write_lora,
)
from e2e.soak_runner import (
    PLANNED,
    PROFILING,
    Outcome,
    planned,
    profile_files,
    read_latent,
    refusal_problem,
    resident_mb,
    run,
    soda_texts,
)


pytestmark = pytest.mark.e2e

LONG = os.environ.get("SODA_SOAK", "short") == "long"
SEQUENCE = long_sequence() if LONG else SHORT_SEQUENCE
MEMORY_AFTER = 5  # the first memory reading follows this prompt of the mixed sequence
MEMORY_TOLERANCE = 0.10
WARM_UP_SEED, MIXED_SEED = 1, 1000


@dataclass
class Soak:
    base_dir: Path
    warm_ups: list[Outcome]
    mixed: list[Outcome]
    profiles_after_warm_up: dict[str, bytes]
    profiles_after_mixed: dict[str, bytes]
    resident_mb: dict[int, float]  # prompt number (1-based) -> MB
    seconds: dict[str, float]
    log_problems: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Soak:
    """Steps 1 and 2 of the module docstring, on server 1 (stopped before the tests look at the outcome)."""
    base_dir = comfy_server_lib.prepare_base_dir(tmp_path_factory.mktemp("soak-base"), ROOT)
    write_lora(base_dir)
    started = time.monotonic()
    with ComfyServer(base_dir=base_dir) as server:
        assert server.pid is not None
        seconds = {"startup": server.startup_seconds or 0.0}
        warm_specs = warm_up_specs([KINDS[name] for name in SEQUENCE])
        warm_ups = [run(server, f"{i:02d}-warm-up", s, WARM_UP_SEED + i, "warm") for i, s in enumerate(warm_specs)]
        seconds["warm_up"] = time.monotonic() - started - seconds["startup"]
        profiles_after_warm_up = profile_files(base_dir)
        mixed, memory = [], {}
        for number, kind in enumerate(SEQUENCE, start=1):
            mixed.append(run(server, f"{number:03d}-{kind}", KINDS[kind], MIXED_SEED + number, "mixed"))
            if number in (MEMORY_AFTER, len(SEQUENCE)):
                memory[number] = resident_mb(server.pid)
        seconds["mixed"] = time.monotonic() - started - seconds["startup"] - seconds["warm_up"]
        problems = find_pack_problems(server.log_text())
    return Soak(base_dir, warm_ups, mixed, profiles_after_warm_up, profile_files(base_dir), memory, seconds, problems)


def test_warm_up_profiles_each_setting_once(soak: Soak) -> None:
    assert soak.warm_ups, "no warm-up: the mix has no SODA prompt"
    for outcome in soak.warm_ups:
        assert outcome.status == "success" and len(outcome.latents) == 1, outcome.name
        for sampler, texts in soda_texts(outcome):
            assert any(PROFILING in text for text in texts), f"{outcome.name}: sampler {sampler} said {texts}"
    assert len(soak.profiles_after_warm_up) == len(soak.warm_ups), sorted(soak.profiles_after_warm_up)


def test_mixed_prompts_are_accelerated_from_the_stored_profiles_only(soak: Soak) -> None:
    assert soak.profiles_after_mixed == soak.profiles_after_warm_up, (
        "the mixed sequence made or changed a stored profile: "
        f"{sorted(set(soak.profiles_after_mixed) ^ set(soak.profiles_after_warm_up))} (or the content of one)"
    )
    for outcome in soak.mixed:
        if outcome.status != "success":
            continue
        assert len(outcome.latents) == len(outcome.spec.speedups), f"{outcome.name}: {outcome.latents}"
        for sampler, texts in soda_texts(outcome):
            said = " | ".join(texts)
            assert any(PLANNED in t for t in texts) and PROFILING not in said, f"{outcome.name} {sampler}: {said}"


def test_interrupted_prompts_leave_no_output(soak: Soak) -> None:
    interrupts = [outcome for outcome in soak.mixed if outcome.spec.interrupt]
    assert {o.spec for o in interrupts} == {s for s in KINDS.values() if s.interrupt}, "an interrupt kind is missing"
    for outcome in interrupts:
        assert outcome.status == "interrupted", f"{outcome.name} ended as {outcome.status} (the interrupt came late)"
        assert not outcome.latents, f"{outcome.name} saved {outcome.latents}"
        assert not list((soak.base_dir / "output" / "mixed").glob(f"{outcome.name}_*")), outcome.name
        sampler = outcome.spec.sampler
        if outcome.spec.soda and not stored_for(soak.profiles_after_warm_up, sampler):  # a profiling run
            said = [text for _, texts in soda_texts(outcome) for text in texts]
            assert any(PROFILING in text for text in said), f"{outcome.name} was no profiling run: {said}"
            assert not stored_for(soak.profiles_after_mixed, sampler), f"{outcome.name} stored a profile"
    completed = [outcome.status for outcome in soak.mixed if completes(outcome.spec)]
    assert completed == ["success"] * len(completed)


def test_failed_runs_name_the_input_and_store_nothing(soak: Soak) -> None:
    failed = [outcome for outcome in soak.mixed if outcome.spec.fails]
    assert failed, "the mix has no failing run"
    for outcome in failed:
        assert outcome.status == "error", f"{outcome.name} ended as {outcome.status}, not as a failed run"
        assert "memory_limit_mb" in outcome.error and "Fix" in outcome.error, f"{outcome.name}: {outcome.error}"
        assert not outcome.latents, f"{outcome.name} saved {outcome.latents}"
        assert not stored_for(soak.profiles_after_mixed, outcome.spec.sampler), f"{outcome.name} stored a profile"


def test_bad_inputs_are_refused_when_queued_naming_the_input(soak: Soak) -> None:
    bad = [outcome for outcome in soak.mixed if outcome.spec.bad]
    assert {o.spec.bad for o in bad} == set(BAD_INPUTS), "a bad-input kind is missing"
    problems = [refusal_problem(outcome, soak.base_dir / "output" / "mixed") for outcome in bad]
    assert not any(problems), "\n".join(p for p in problems if p)


def stored_for(profiles: dict[str, bytes], sampler: str) -> list[str]:
    """The stored profiles of a sampler (their file names start with it, ``soda_core.store.ProfileKey``)."""
    return [path for path in profiles if Path(path).name.startswith(f"{sampler}-")]


def alone_sample(mixed: list[Outcome]) -> list[Outcome]:
    """The prompts of the mixed sequence to re-run alone (module docstring, step 3)."""
    completed = [(i, o) for i, o in enumerate(mixed) if o.status == "success"]
    if LONG:
        return [o for _, o in completed]
    after_interrupt = {o.name for i, o in completed if i > 0 and not completes(mixed[i - 1].spec)}
    first_of_kind = {next(o.name for _, o in completed if o.name.endswith(kind)) for kind in SHORT_ALONE_KINDS}
    return [o for _, o in completed if o.name in after_interrupt | first_of_kind]


def test_each_output_is_bit_exact_with_the_same_prompt_alone(soak: Soak, record_property: Any) -> None:
    sample, started, problems, mismatches = alone_sample(soak.mixed), time.monotonic(), [], []
    for outcome in sample:
        with ComfyServer(base_dir=soak.base_dir) as server:
            alone = run(server, outcome.name, outcome.spec, outcome.seed, "alone")
            problems += find_pack_problems(server.log_text())
        assert alone.status == "success" and alone.latents.keys() == outcome.latents.keys(), alone.name
        for save_id, path in outcome.latents.items():
            mixed_latent, alone_latent = read_latent(path), read_latent(alone.latents[save_id])
            assert torch.isfinite(mixed_latent).all(), f"{outcome.name}: non-finite latent in {path}"
            if not torch.equal(mixed_latent, alone_latent):
                delta = (mixed_latent - alone_latent).abs().max().item()
                mismatches.append(f"{outcome.name} (SaveLatent {save_id}): max |mixed - alone| = {delta:.3g}")
        if planned(alone) != planned(outcome):
            mismatches.append(f"{outcome.name}: planned {planned(outcome)} in the mix, {planned(alone)} alone")
    soak.seconds["alone"] = time.monotonic() - started  # reported by test_resident_memory_stays_flat
    record_property("alone_prompts", len(sample))
    assert profile_files(soak.base_dir) == soak.profiles_after_warm_up, "a run alone made or changed a profile"
    assert not problems, "\n\n".join(problems)
    assert not mismatches, "not bit-exact with the same prompt alone:\n" + "\n".join(mismatches)


def test_resident_memory_stays_flat(
    soak: Soak, record_property: Any, capsys: pytest.CaptureFixture[str], pytestconfig: pytest.Config
) -> None:
    fifth, last = soak.resident_mb[MEMORY_AFTER], soak.resident_mb[len(SEQUENCE)]
    change = (last - fifth) / fifth
    for key, value in {"rss_mb_after_5th": fifth, "rss_mb_after_last": last, **soak.seconds}.items():
        record_property(key, round(value, 1))
    timing = ", ".join(f"{key} {value:.1f} s" for key, value in soak.seconds.items())
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    with capsys.disabled():  # one line in the terminal, also when the test passes
        reporter.write_line(
            f"\nsoak ({'long' if LONG else 'short'}, {len(SEQUENCE)} prompts): resident memory {fifth:.1f} MB after "
            f"prompt {MEMORY_AFTER}, {last:.1f} MB after prompt {len(SEQUENCE)} ({change:+.1%}); {timing}"
        )
    if LONG:
        assert abs(change) <= MEMORY_TOLERANCE, (
            f"resident memory {fifth:.1f} MB after prompt {MEMORY_AFTER}, {last:.1f} MB after the last "
            f"({change:+.1%}, allowed {MEMORY_TOLERANCE:.0%})"
        )


def test_server_log_has_no_pack_problem(soak: Soak) -> None:
    """No traceback or load error of the pack in server 1's log but the failed runs' own (their error message)."""
    expected = [o.error.strip().splitlines()[0] for o in soak.mixed if o.status == "error" and o.error.strip()]
    problems = [problem for problem in soak.log_problems if not any(error in problem for error in expected)]
    assert not problems, "\n\n".join(problems)
