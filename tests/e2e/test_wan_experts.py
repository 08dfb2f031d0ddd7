"""Wan 2.2's two experts on the one-node path, end to end in the real server, on tiny models (issue 10).

Two tiny Wan models (ComfyUI's ``WAN21_T2V`` class, dim 128, seeded weights; the 14B experts are that class too) are
saved into the server's models/diffusion_models under two file names, so ComfyUI's UNETLoader detects and loads them.
The committed ``soda_wan22_t2v_14b`` workflow is queued with its loaders pointed at them, the text encoder replaced
by SODA Reference Text Encode (no umt5 weights here), a 64x64, 5-frame latent and the VAE decode replaced by SODA
Latent Preview Decode. Each expert sits behind its own SODA Accelerate and samples its own step range with its own
KSamplerAdvanced: the first queue profiles both (one profile each, for its own steps), the second, with another seed
and prompt, accelerates both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from e2e.conftest import ROOT, ComfyServer, comfy_server_lib, find_pack_problems
from e2e.soda_runs import ACCELERATED, PROFILED, PROFILING, Run, nodes_of, output_files, run, stored_profiles
from e2e.tiny_templates import load_template, save_tiny_model, stand_in_text_and_decode


pytestmark = pytest.mark.e2e

WORKFLOW = "soda_wan22_t2v_14b"
TINY_WAN = {  # detectable by ComfyUI (model_detection): heads = dim / 128
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 128,
    "out_dim": 16,
    "num_heads": 1,
    "ffn_dim": 256,
    "num_layers": 2,
    "patch_size": [1, 2, 2],
    "freq_dim": 256,
    "window_size": [-1, -1],
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "in_dim": 16,
}
EXPERTS = {"high noise": "soda_tiny_wan_high_noise.safetensors", "low noise": "soda_tiny_wan_low_noise.safetensors"}
LATENT = {"width": 64, "height": 64, "length": 5, "batch_size": 1}  # 16 x 2 x 8 x 8: 32 tokens per frame pair
SPEEDUP = 2.0  # the workflow's SODA Accelerate speedup
ROUNDING = 0.005  # the run message prints two decimals
OVERSHOOT = 0.10


@pytest.fixture(scope="module")
def wan_server(comfy: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base_dir = comfy_server_lib.prepare_base_dir(tmp_path_factory.mktemp("wan-base"), ROOT)
    folder = base_dir / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(EXPERTS.values(), start=1):
        save_tiny_model(folder / name, "WAN21_T2V", TINY_WAN, seed)
    with ComfyServer(base_dir=base_dir) as server:
        yield server


def by_title(workflow: dict[str, Any], class_type: str, label: str) -> str:
    (key,) = [k for k in nodes_of(workflow, class_type) if f"({label}" in workflow[k]["_meta"]["title"]]
    return key


def tiny_variant(prompt: str, seed: int) -> dict[str, Any]:
    """The committed workflow on the tiny experts, with stand-in text conditioning and a latent preview decode."""
    workflow = load_template(WORKFLOW)
    loaders = {label: by_title(workflow, "UNETLoader", label) for label in EXPERTS}
    for label, name in EXPERTS.items():
        workflow[loaders[label]]["inputs"]["unet_name"] = name
    stand_in_text_and_decode(workflow, [loaders["high noise"], 0], prompt)  # both experts take the same text width
    (latent,) = nodes_of(workflow, "EmptyHunyuanLatentVideo")
    workflow[latent]["inputs"].update(LATENT)
    workflow[by_title(workflow, "KSamplerAdvanced", "high noise")]["inputs"]["noise_seed"] = seed
    return workflow


@pytest.fixture(scope="module")
def expert_runs(wan_server: Any) -> dict[str, Any]:
    first = run(wan_server, tiny_variant("a red fox trotting through snow", seed=0))
    profiles = stored_profiles(wan_server)
    second = run(wan_server, tiny_variant("a grey wolf running in the forest", seed=5))
    samplers = {label: by_title(tiny_variant("", 0), "KSamplerAdvanced", label) for label in EXPERTS}
    return {"first": first, "second": second, "profiles": profiles, "samplers": samplers}


def test_the_first_queue_profiles_each_expert_for_its_own_steps(expert_runs: dict[str, Any]) -> None:
    first: Run = expert_runs["first"]
    assert len(first.lines(PROFILING)) == 2 and len(first.lines(PROFILED)) == 2, first.log[-4000:]
    assert not first.lines(ACCELERATED)
    profiles = expert_runs["profiles"]
    assert len(profiles) == 2 and len({p.parent.name for p in profiles}) == 2, profiles  # one per expert's weights
    assert all(p.name.startswith("euler-10steps-") for p in profiles), profiles  # 0-10 and 10-20 of 20 steps
    grids = {p.name.split("-")[2] for p in profiles}
    assert len(grids) == 2, f"both experts were profiled on the same sigmas: {profiles}"


def test_the_second_queue_accelerates_both_experts(expert_runs: dict[str, Any]) -> None:
    second: Run = expert_runs["second"]
    assert not second.lines(PROFILING), second.log[-4000:]
    lines = second.lines(ACCELERATED)
    assert len(lines) == 2, second.log[-4000:]
    for line in lines:
        # The planner meets the target (>=); on 10 steps of a 2-block model its choices are coarse (2.11x seen),
        # so the ratio may land above it, never far.
        assert SPEEDUP * (1 - ROUNDING) <= float(line["flops"]) <= SPEEDUP * (1 + OVERSHOOT), line.group(0)
        assert int(line["steps"]) == 10 and 0 < int(line["full"]) < 10, line.group(0)
        print(f"{WORKFLOW} (tiny): {line.group(0)}")  # noqa: T201 (shown with -s)


def test_each_sampler_shows_its_own_expert_messages(expert_runs: dict[str, Any]) -> None:
    for label, sampler in expert_runs["samplers"].items():
        first = expert_runs["first"].texts.get(sampler, [])
        second = expert_runs["second"].texts.get(sampler, [])
        assert first and PROFILING.search(first[0]), (label, expert_runs["first"].texts)
        assert any(ACCELERATED.search(text) for text in second), (label, expert_runs["second"].texts)


def test_the_video_is_saved_and_nothing_went_wrong(expert_runs: dict[str, Any], wan_server: Any) -> None:
    workflow = tiny_variant("", 0)
    (save,) = nodes_of(workflow, "SaveVideo")
    for name in ("first", "second"):
        history = expert_runs[name].history
        files = output_files(wan_server, history, save, "images")
        assert files and all(path.is_file() and path.stat().st_size > 0 for path in files), history.get("outputs")
    problems = find_pack_problems(wan_server.log_text())
    assert not problems, "\n\n".join(problems)
