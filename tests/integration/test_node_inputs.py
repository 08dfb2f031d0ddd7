"""Every node input is checked before any work: by ComfyUI's own prompt validation (our ``validate_inputs``) and again
at the top of ``execute``. ComfyUI 0.3.75 checks neither dropdown values nor NaN for V3 nodes by itself: a sampler
'bogus' ran euler/simple and was written into the saved profile, a NaN memory bound disabled the bound.

No test here builds a Flux model, so they also run against ComfyUI 0.33.
"""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyui_soda.soda_core.flops import FlopModel
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
from comfyui_soda.soda_core.profile import SensitivityProfile


pytestmark = pytest.mark.integration

LAYOUT = ModelLayout((BlockRef("double_block", 0), BlockRef("single_block", 0)), ("attn", "mlp"))


def small_profile(steps: int = 6) -> SensitivityProfile:
    cache = torch.full((steps, 2, 2, 3), 0.1)
    for t in range(steps):
        cache[t, :, :, t:] = float("nan")
    flops = FlopModel(
        torch.full((2, 2), 10.0, dtype=torch.float64),
        torch.ones(2, 2, dtype=torch.float64),
        torch.full((2, 2), 9.0, dtype=torch.float64),
        2.0,
        1.0,
    )
    sigmas = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    prune = cache.unsqueeze(-1) * torch.tensor([0.8, 0.5])
    return SensitivityProfile(LAYOUT, sigmas, cache, prune, torch.tensor([0.3, 0.6]), flops, {"steps": steps})


class Untouchable:
    """Stands in for a model: any use of it means work started before the inputs were checked."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the node used its model ({name}) before refusing a bad input")


# ------------------------------------------------------------------------------ ComfyUI's own prompt validation


@pytest.fixture(scope="module")
def validate(comfy):
    """``validate(node_inputs_by_class)`` -> (ok, error texts), through ComfyUI's ``execution.validate_inputs`` on a
    prompt whose MODEL, CONDITIONING, LATENT and SODA_PROFILE inputs are links to other nodes of the pack."""
    import execution

    import nodes as comfy_nodes
    from comfyui_soda.nodes import NODE_MODULES
    from comfyui_soda.nodes.reference_model import DEFAULT_MODEL

    ours = {cls.GET_SCHEMA().node_id: cls for module in NODE_MODULES for cls in module.NODES}
    saved = dict(comfy_nodes.NODE_CLASS_MAPPINGS)
    comfy_nodes.NODE_CLASS_MAPPINGS.update(ours)
    base = {
        "model": {"class_type": "SODALoadReferenceModel", "inputs": {"model_name": DEFAULT_MODEL}},
        "cond": {"class_type": "SODAReferenceTextEncode", "inputs": {"model": ["model", 0], "text": "digit 3"}},
        "latent": {
            "class_type": "SODAReferenceClassEncode",
            "inputs": {"model": ["model", 0], "labels": "3", "latent_size": 16},
        },
        "profile": {"class_type": "SODALoadProfile", "inputs": {"profile_name": SHIPPED}},
    }

    def run(class_type: str, inputs: dict[str, Any]) -> tuple[bool, list[str]]:
        prompt = {**base, "node": {"class_type": class_type, "inputs": inputs}}
        validated: dict[str, Any] = {}
        ok, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, "node", validated))
        errors = [e for result in validated.values() for e in result[1]]  # this node's and its inputs'
        return ok, [f"{e['message']}: {e['details']}" for e in errors]

    yield run
    comfy_nodes.NODE_CLASS_MAPPINGS.clear()
    comfy_nodes.NODE_CLASS_MAPPINGS.update(saved)


SHIPPED = "soda_reference_digits_euler_simple_20.safetensors"
PROFILE_INPUTS = {
    "model": ["model", 0],
    "positive": ["cond", 0],
    "negative": ["cond", 0],
    "latent_image": ["latent", 1],
    "seed": 0,
    "steps": 20,
    "cfg": 1.0,
    "sampler_name": "euler",
    "scheduler": "simple",
    "denoise": 1.0,
    "operations": "cache and prune",
    "granularity": "module",
}
PLAN_INPUTS = {"profile": ["profile", 0], "target_speedup": 2.0, "min_full_steps": 1, "pruning": True}
SAVE_INPUTS = {"profile": ["profile", 0], "filename_prefix": "soda/profile"}

BAD = [
    # (node, input, value, fragments the error must hold)
    ("SODAProfileSensitivity", "sampler_name", "bogus", ("sampler_name='bogus'", "'euler'")),
    ("SODAProfileSensitivity", "scheduler", "bogus", ("scheduler='bogus'", "'simple'")),
    ("SODAProfileSensitivity", "operations", "bogus", ("operations='bogus'", "'cache and prune'", "'cache only'")),
    ("SODAProfileSensitivity", "granularity", "tokens", ("granularity='tokens'", "'module'", "'block'")),
    ("SODAProfileSensitivity", "token_score", "max", ("token_score='max'", "'abs_mean'")),
    ("SODAProfileSensitivity", "memory_limit_mb", math.nan, ("memory_limit_mb=nan", "finite number")),
    ("SODAProfileSensitivity", "memory_limit_mb", math.inf, ("memory_limit_mb=inf", "finite number")),
    ("SODAProfileSensitivity", "cfg", math.nan, ("cfg=nan",)),
    ("SODAProfileSensitivity", "denoise", 0.0, ("denoise 0 samples nothing", "Fix")),
    ("SODAProfileSensitivity", "steps", 0, ("steps=0", "from 1 to 10000")),
    ("SODAProfileSensitivity", "max_distance", 99, ("max_distance=99", "from 1 to 32")),
    ("SODAPlanSchedule", "target_speedup", math.nan, ("target_speedup=nan", "from 1 to 20")),
    ("SODAPlanSchedule", "target_speedup", 0.5, ("target_speedup=0.5",)),
    ("SODAPlanSchedule", "lam", math.inf, ("lam=inf",)),
    ("SODAPlanSchedule", "ratio_min", 0.0, ("ratio_min=0.0",)),
    ("SODAPlanSchedule", "ratio_min", 0.8, ("ratio_min=0.8 is above ratio_max=0.5", "Fix")),
    ("SODAPlanSchedule", "speedup_in", "seconds", ("speedup_in='seconds'", "'flops'", "'wall'")),
    (
        "SODASaveProfile",
        "filename_prefix",
        "../escape",
        ("filename_prefix='../escape'", "leaves models/soda_profiles"),
    ),
    ("SODASaveProfile", "filename_prefix", "/etc/profile", ("absolute path",)),
    ("SODASaveProfile", "filename_prefix", "", ("empty",)),
    ("SODASaveProfile", "filename_prefix", "bad\x00name", ("control character", "'\\x00'")),
    ("SODASaveProfile", "filename_prefix", "x" * 300, ("bytes", "allow 255")),
    ("SODALatentToImage", "upscale", 99, ("upscale=99", "from 1 to 8")),
]
BASE_INPUTS = {
    "SODAProfileSensitivity": PROFILE_INPUTS,
    "SODAPlanSchedule": PLAN_INPUTS,
    "SODASaveProfile": SAVE_INPUTS,
}


@pytest.mark.parametrize(
    ("node", "name", "value", "fragments"), BAD, ids=[f"{n}-{i}-{v!r}"[:60] for n, i, v, _ in BAD]
)
def test_comfyui_refuses_the_prompt_before_any_node_runs(validate, node, name, value, fragments):
    inputs = dict(BASE_INPUTS.get(node, {"model": ["model", 0], "samples": ["latent", 1], "upscale": 4}))
    if node == "SODAPlanSchedule" and name == "ratio_min" and value == 0.8:
        inputs["ratio_max"] = 0.5
    inputs[name] = value
    ok, errors = validate(node, inputs)
    assert not ok, f"{node}.{name}={value!r} was accepted"
    text = "\n".join(errors)
    for fragment in fragments:
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize("node", sorted(BASE_INPUTS))
def test_good_prompts_pass_validation(validate, node):
    ok, errors = validate(node, dict(BASE_INPUTS[node]))
    assert ok, errors
    optional = {"calibration_runs": 2, "max_distance": 4, "token_score": "abs_mean", "memory_limit_mb": 64.0}
    if node == "SODAProfileSensitivity":
        assert validate(node, {**PROFILE_INPUTS, **optional, "sampler_name": "heun", "denoise": 0.5})[0]
    if node == "SODAPlanSchedule":
        assert validate(node, {**PLAN_INPUTS, "speedup_in": "wall"})[0]


# --------------------------------------------------------------------------------------------- execute checks too


def test_execute_refuses_before_touching_the_model(comfy):
    from comfyui_soda.nodes.soda import SODAModelPatch, SODAPlanSchedule, SODAProfileSensitivity

    model = Untouchable()
    kwargs = {k: v for k, v in PROFILE_INPUTS.items() if not isinstance(v, list)}
    for name, value, fragment in [
        ("sampler_name", "bogus", "sampler_name='bogus'"),
        ("memory_limit_mb", math.nan, "memory_limit_mb=nan"),
        ("denoise", 0.0, "denoise 0 samples nothing"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            SODAProfileSensitivity.execute(model, [], [], {"samples": None}, **{**kwargs, name: value})
    profile = small_profile()
    with pytest.raises(ValueError, match=r"min_full_steps=7 is more than the 6 steps of the profile"):
        SODAPlanSchedule.execute(profile, 2.0, 7, True)
    with pytest.raises(ValueError, match=r"ratio_min=0\.5 is above ratio_max=0\.2"):
        SODAPlanSchedule.execute(profile, 2.0, 1, True, ratio_min=0.5, ratio_max=0.2)
    with pytest.raises(ValueError, match="expected the output of Plan SODA Schedule"):
        SODAModelPatch.execute(model, profile)


def test_plan_sends_a_plan_under_a_socket_named_for_it(comfy):
    from comfyui_soda.nodes.soda import SODAModelPatch, SODAPlanSchedule
    from comfyui_soda.soda_core.api import ReplanRecipe

    assert SODAPlanSchedule.GET_SCHEMA().outputs[0].io_type == "SODA_PLAN"
    assert SODAModelPatch.GET_SCHEMA().inputs[1].io_type == "SODA_PLAN"
    recipe, _, summary = SODAPlanSchedule.execute(small_profile(), 1.5, 1, True).result
    assert isinstance(recipe, ReplanRecipe)
    assert summary.splitlines()[:3] == [
        "- Planned for the profile's 6 steps.",  # list lines: each renders as a line in the UI
        "- steps: 6",
        f"- full steps: {len(recipe.schedule.anchors)} (steps {', '.join(map(str, recipe.schedule.anchors))})",
    ]


# ------------------------------------------------------------------------------------------- Save / Load profile


@pytest.fixture
def profile_folder(comfy, tmp_path, monkeypatch):
    import folder_paths

    from comfyui_soda.nodes import profile_files

    monkeypatch.setitem(
        folder_paths.folder_names_and_paths, profile_files.SODA_PROFILES, ([str(tmp_path)], {".safetensors"})
    )
    return tmp_path


@pytest.mark.parametrize(
    ("prefix", "fragment"),
    [
        ("../outside", "leaves models/soda_profiles"),
        ("soda/../../outside", "leaves models/soda_profiles"),
        ("/tmp/abs", "absolute path"),
        ("C:\\Users\\x", "absolute path"),
        ("", "empty"),
        ("   ", "empty"),
        ("soda/", "names no file"),
        ("bad\x00name", "control character"),
        ("a" * 250, "allow 255"),
        ("d/" * 600 + "x", "at most 1024"),
    ],
)
def test_save_refuses_bad_names_in_its_own_words(profile_folder, prefix, fragment):
    from comfyui_soda.nodes.profile_files import SODASaveProfile

    with pytest.raises(ValueError) as error:
        SODASaveProfile.execute(small_profile(), prefix)
    message = str(error.value)
    assert fragment in message and message.startswith("Save SODA Profile:") and "Fix" in message, message
    assert "image" not in message.lower()
    assert not any(profile_folder.rglob("*")) and not (profile_folder.parent / "outside_00001_.safetensors").exists()


def test_save_turns_os_errors_into_clear_errors(profile_folder):
    from comfyui_soda.nodes.profile_files import SODASaveProfile

    (profile_folder / "taken").write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"Save SODA Profile: cannot write .*taken.*Fix"):
        SODASaveProfile.execute(small_profile(), "taken/profile")
    path = SODASaveProfile.execute(small_profile(), "sub/dir/ok").result[0]
    assert Path(path) == profile_folder / "sub" / "dir" / "ok_00001_.safetensors" and os.path.getsize(path) > 0


def test_load_surfaces_the_loader_errors_as_they_are(profile_folder):
    from comfyui_soda.nodes.profile_files import SODALoadProfile

    small_profile().save(profile_folder / "good.safetensors")
    data = (profile_folder / "good.safetensors").read_bytes()
    (profile_folder / "cut.safetensors").write_bytes(data[: len(data) // 2])
    assert SODALoadProfile.execute("good.safetensors").result[0].steps == 6
    with pytest.raises(ValueError) as error:
        SODALoadProfile.execute("cut.safetensors")
    message = str(error.value)
    assert str(profile_folder / "cut.safetensors") in message and "header" in message and "re-profile" in message


# ------------------------------------------------------------------------------------------------------- plots


def test_plots_of_a_one_step_run_draw_without_warnings(comfy):
    """A 1-step profile has nothing measured: the heatmap shows grey (undefined) cells and says so, no All-NaN
    warning; the schedule plot shows the one full step."""
    from comfyui_soda.nodes.plots import schedule_plot, sensitivity_heatmap
    from comfyui_soda.soda_core.planner import PlanConfig, plan

    profile = small_profile(steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        heatmap, panels = sensitivity_heatmap(profile, "one step")
        schedule = plan(profile, PlanConfig(target=1.0))
        picture, drawn = schedule_plot(schedule, profile)
    assert all(bool(math.isnan(v)) for p in panels.values() for v in p.flatten())
    grey = torch.tensor([0xD0, 0xD7, 0xDE]) / 255.0
    share = float(((heatmap[0] - grey).abs().max(dim=-1).values < 0.02).float().mean())
    assert share > 0.3, share  # the panels are grey, not blank and not coloured as "no error"
    assert drawn["anchors"] == (0,) and "sensitivity" not in drawn
    blue = torch.tensor([0x1F, 0x6F, 0xEB]) / 255.0
    assert float(((picture[0] - blue).abs().max(dim=-1).values < 0.02).float().mean()) > 0.2  # the full step's bar
