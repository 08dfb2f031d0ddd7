"""The shared workflows on the real server: in sync with scripts/build_workflows.py, listed as templates, valid, and
the ones that need no download run to the end with their images (and fidelity metrics where they compare).

A workflow "needs absent weights" when one of its combo inputs names a model file the server does not list (e.g.
flux1-dev.safetensors here); such workflows are validated against /object_info instead of queued. A workflow that
uses a core node type the running ComfyUI does not have is skipped on that version, the skip naming the types.
"""

import io
import json
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import API_DIR, PACK_DIR_NAME, ROOT, THUMBNAIL_SUFFIX, WORKFLOWS_DIR


pytestmark = pytest.mark.e2e

API_WORKFLOWS = sorted(path.stem for path in API_DIR.glob("*.json"))
UI_WORKFLOWS = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
# Workflows on the embedded reference model: they must run here, never fall back to validation only.
EMBEDDED_ONLY = {"soda_accelerate_quickstart", "soda_quickstart", "soda_saved_profile"}
# The one-node path: every other shared workflow has SODA Accelerate in front of each of its samplers.
EXPLICIT_GRAPH = {"soda_quickstart", "soda_saved_profile"}
DEMO_WORKFLOW = "soda_quickstart"
# Titles scripts/demo.py looks nodes up by, in the workflow it runs.
REQUIRED_TITLES = ("Full compute KSampler", "SODA KSampler", "Profile Sensitivity", "Plan SODA Schedule")
SAMPLER_TYPES = {"KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced"}
# Model inputs of the samplers: SamplerCustomAdvanced takes its model through the guider.
GUIDER_TYPES = {"BasicGuider", "CFGGuider"}
COMPARE_TITLE = "Compare: SODA vs full"
FILES_BUILT_ON = "0.3.75"  # the ComfyUI whose /object_info scripts/build_workflows.py builds against (make setup's)
METRICS_KEY = "soda_metrics"
RUN_TIMEOUT_S = 900.0
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


@pytest.fixture(scope="module")
def object_info(comfy_server: Any) -> dict[str, Any]:
    info: dict[str, Any] = comfy_server.object_info()
    return info


def load_api(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads((API_DIR / f"{name}.json").read_text())
    return workflow


def skip_unless_served(name: str, workflow: dict[str, Any], object_info: dict[str, Any], version: str) -> None:
    """Skip a workflow on a ComfyUI that lacks one of its core node types (a missing SODA node is a failure)."""
    missing = sorted(
        {n["class_type"] for n in workflow.values() if n["class_type"] not in object_info}
        - {n["class_type"] for n in workflow.values() if n["class_type"].startswith("SODA")}
    )
    if missing:
        pytest.skip(f"{name}: ComfyUI {version} has no node type(s) {', '.join(missing)}")


@pytest.fixture(scope="module")
def comfyui_version(comfy_server: Any) -> str:
    return str(comfy_server.system_stats()["system"]["comfyui_version"])


def model_source(workflow: dict[str, Any], node_id: str) -> str:
    """The class_type that gives a sampler its model (through a guider for SamplerCustomAdvanced)."""
    node = workflow[node_id]
    if node["class_type"] == "SamplerCustomAdvanced":
        node = workflow[node["inputs"]["guider"][0]]
    return str(workflow[node["inputs"]["model"][0]]["class_type"])


def input_specs(info: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any], bool]]:
    """Input name -> (type or option list, options, required) from one /object_info entry."""
    specs: dict[str, tuple[Any, dict[str, Any], bool]] = {}
    for section in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs[name] = (spec[0], options, section == "required")
    return specs


def combo_options(kind: Any, options: dict[str, Any]) -> list[Any] | None:
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(options.get("options") or [])
    return None


def validate(workflow: dict[str, Any], object_info: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, absent model files) of an API workflow, checked against /object_info like the server would."""
    problems: list[str] = []
    absent: list[str] = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        where = f"node {node_id} ({class_type}, {(node.get('_meta') or {}).get('title')!r})"
        if not (node.get("_meta") or {}).get("title"):
            problems.append(f"{where}: no _meta.title")
        if class_type not in object_info:
            problems.append(f"{where}: node type not in /object_info")
            continue
        specs = input_specs(object_info[class_type])
        inputs = node.get("inputs") or {}
        for name in inputs:
            if name not in specs:
                problems.append(f"{where}: input {name!r} does not exist (inputs: {sorted(specs)})")
        for name, (kind, options, required) in specs.items():
            if name not in inputs:
                if required:
                    problems.append(f"{where}: required input {name!r} missing")
                continue
            value = inputs[name]
            if isinstance(value, list):  # a link: [source node id, output index]
                source = workflow.get(str(value[0]))
                if source is None or source.get("class_type") not in object_info:
                    problems.append(f"{where}: input {name!r} links from unknown node {value[0]!r}")
                    continue
                outputs = object_info[source["class_type"]]["output"]
                if not 0 <= value[1] < len(outputs):
                    problems.append(f"{where}: input {name!r} links from output {value[1]} of {len(outputs)}")
                elif kind != "*" and outputs[value[1]] != kind:
                    problems.append(f"{where}: input {name!r} takes {kind} but gets {outputs[value[1]]}")
                continue
            choices = combo_options(kind, options)
            if choices is not None and value not in choices:
                if isinstance(value, str) and value.lower().endswith(MODEL_FILE_SUFFIXES):
                    absent.append(value)
                else:
                    problems.append(f"{where}: {name}={value!r} is not one of {choices[:10]}")
    return problems, absent


def test_committed_workflows_match_build_script(comfy_server: Any, comfyui_version: str) -> None:
    if comfyui_version != FILES_BUILT_ON:  # another /object_info gives other files (0.33: outputs, dynamic combos)
        pytest.skip(f"the files are built against ComfyUI {FILES_BUILT_ON}'s /object_info; this is {comfyui_version}")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_workflows.py"), "--check", "--url", comfy_server.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"scripts/build_workflows.py --check failed ({time.monotonic() - started:.1f} s):\n"
        f"{result.stdout}\n{result.stderr}"
    )


def test_every_ui_workflow_is_listed_and_served_as_template(comfy_server: Any) -> None:
    assert UI_WORKFLOWS, f"no UI workflows in {WORKFLOWS_DIR}"
    templates = comfy_server.get_json("/api/workflow_templates")
    assert sorted(templates.get(PACK_DIR_NAME, [])) == UI_WORKFLOWS, (
        f"GET /api/workflow_templates lists {templates.get(PACK_DIR_NAME)} for {PACK_DIR_NAME!r}, "
        f"expected {UI_WORKFLOWS} (all templates: {templates})"
    )
    for name in UI_WORKFLOWS:
        served = comfy_server.get_json(f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.json")
        assert served == json.loads((WORKFLOWS_DIR / f"{name}.json").read_text()), f"{name}.json served differently"


def test_every_template_has_a_thumbnail_served_beside_it(comfy_server: Any) -> None:
    from PIL import Image

    for name in UI_WORKFLOWS:
        url = f"{comfy_server.url}/api/workflow_templates/{PACK_DIR_NAME}/{name}{THUMBNAIL_SUFFIX}"
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
        assert data == (WORKFLOWS_DIR / f"{name}{THUMBNAIL_SUFFIX}").read_bytes(), f"{url} serves another file"
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG", (
            f"{name}{THUMBNAIL_SUFFIX} is {image.format}, the template browser asks for JPEG"
        )
        assert image.width == image.height and 256 <= image.width <= 1024, f"{name}: thumbnail {image.size}"
        assert len(data) < 200 * 1024, f"{name}: thumbnail of {len(data) // 1024} KiB (keep it under 200 KiB)"


def test_every_ui_workflow_has_a_one_line_description() -> None:
    for name in UI_WORKFLOWS:
        workflow = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())
        description = (workflow.get("extra") or {}).get("description")
        assert isinstance(description, str) and description.strip() and "\n" not in description, name
        assert len(description) <= 120, f"{name}: description of {len(description)} characters is not one short line"
        notes = [node for node in workflow["nodes"] if node["type"] == "Note"]
        assert notes and notes[0]["widgets_values"][0].startswith(description + "\n"), (
            f"{name}: Note does not open with it"
        )


def test_every_ui_workflow_has_an_api_twin() -> None:
    assert UI_WORKFLOWS == API_WORKFLOWS, f"UI workflows {UI_WORKFLOWS} vs API workflows {API_WORKFLOWS}"


def test_the_demo_workflow_has_the_titles_the_demo_looks_up() -> None:
    titles = [(node.get("_meta") or {}).get("title") for node in load_api(DEMO_WORKFLOW).values()]
    for title in (*REQUIRED_TITLES, COMPARE_TITLE):
        assert titles.count(title) == 1, f"{titles.count(title)} nodes titled {title!r} (scripts/demo.py needs one)"


@pytest.mark.parametrize("name", sorted(set(API_WORKFLOWS) - EXPLICIT_GRAPH))
def test_every_sampler_of_a_one_node_workflow_samples_an_accelerated_model(name: str) -> None:
    workflow = load_api(name)
    samplers = [key for key, node in workflow.items() if node["class_type"] in SAMPLER_TYPES]
    assert samplers, f"{name}: no sampler"
    sources = {key: model_source(workflow, key) for key in samplers}
    assert set(sources.values()) == {"SODAAccelerate"}, f"{name}: samplers take their model from {sources}"
    accelerators = [node for node in workflow.values() if node["class_type"] == "SODAAccelerate"]
    assert len(accelerators) == len(samplers), f"{name}: one SODA Accelerate per sampler (expert)"


@pytest.mark.parametrize("name", API_WORKFLOWS)
def test_api_workflow_is_valid(name: str, object_info: dict[str, Any], comfyui_version: str) -> None:
    workflow = load_api(name)
    skip_unless_served(name, workflow, object_info, comfyui_version)
    problems, _ = validate(workflow, object_info)
    assert not problems, f"{API_DIR.relative_to(ROOT)}/{name}.json:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", API_WORKFLOWS)
def test_api_workflow_runs_or_needs_absent_weights(
    name: str,
    comfy_server: Any,
    object_info: dict[str, Any],
    comfyui_version: str,
    pack_log_problems: Callable[[], list[str]],
) -> None:
    workflow = load_api(name)
    skip_unless_served(name, workflow, object_info, comfyui_version)
    problems, absent = validate(workflow, object_info)
    assert not problems, "invalid workflow (see test_api_workflow_is_valid)"
    if absent:
        assert name not in EMBEDDED_ONLY, f"{name} must run on the embedded model but names absent files {absent}"
        return  # validated above; it cannot be queued without the weights

    started = time.monotonic()
    history = comfy_server.run(workflow, timeout=RUN_TIMEOUT_S)  # the committed graph, unmodified
    seconds = time.monotonic() - started
    outputs = history.get("outputs") or {}
    output_dir = comfy_server.base_dir / "output"

    for node_id, node in workflow.items():
        if node["class_type"] != "SaveImage":
            continue
        images = (outputs.get(node_id) or {}).get("images") or []
        assert images, f"SaveImage {node_id} ({node['_meta']['title']!r}) saved nothing; outputs: {sorted(outputs)}"
        prefix = Path(node["inputs"]["filename_prefix"])
        for image in images:
            assert image["subfolder"] == str(prefix.parent) and image["filename"].startswith(prefix.name), image
            path = output_dir / image["subfolder"] / image["filename"]
            assert path.is_file() and path.stat().st_size > 0, f"{path} missing or empty"

    for node_id, node in workflow.items():
        if node["class_type"] == "PreviewAny":
            assert (outputs.get(node_id) or {}).get("text"), f"PreviewAny {node_id} shows no text"
    compare_ids = [k for k, n in workflow.items() if n["_meta"]["title"] == COMPARE_TITLE]
    for compare_id in compare_ids:
        metrics = (outputs.get(compare_id) or {}).get(METRICS_KEY)
        assert isinstance(metrics, list) and metrics, f"compare node {compare_id} has no {METRICS_KEY!r} in its ui"
        psnr, ssim = metrics[0]["psnr"], metrics[0]["ssim"]
        assert psnr is None or math.isfinite(psnr), metrics[0]  # null only for identical images
        assert 0.0 < ssim <= 1.0, metrics[0]
        print(f"{name}: PSNR {psnr} dB, SSIM {ssim:.4f}")  # noqa: T201 (shown with -s)
    print(f"{name}: ran in {seconds:.1f} s")  # noqa: T201
    assert not pack_log_problems(), "\n\n".join(pack_log_problems())
