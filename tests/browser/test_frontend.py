"""The ComfyUI frontend (served by the real server) loads every shared UI workflow cleanly.

For each ``example_workflows/<name>.json``, fetched from the template route the editor's template browser uses, headless
Chromium loads it with ``window.app.loadGraphData`` and the test asserts:

* no missing-node dialog, no error dialog or error toast; a missing-models dialog only for the model files the
  workflow itself declares for download (Flux.1-dev weights are absent here), listing exactly those;
* the graph holds the expected node types (every SODA node of the file), none flagged with errors;
* the editor keeps the file as written: ``graph.serialize()`` gives back the same nodes, links and groups, so widget
  values sit on the widgets they were meant for;
* the editor's own "Export (API)" (``app.graphToPrompt()``) equals ``example_workflows/api/<name>.json``.

The loaded quick-start graph is saved as ``tests/artifacts/quickstart_graph.png`` and copied to
``docs/images/quickstart_graph.png`` (the README's picture).
"""

import json
import shutil
import time
from typing import Any

import pytest
from e2e.conftest import API_DIR, PACK_DIR_NAME, ROOT, WORKFLOWS_DIR

from browser.conftest import open_editor


pytestmark = pytest.mark.browser

UI_WORKFLOWS = sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
SCREENSHOT_WORKFLOW = "soda_quickstart"
ARTIFACT = ROOT / "tests" / "artifacts" / "quickstart_graph.png"
README_IMAGE = ROOT / "docs" / "images" / "quickstart_graph.png"
# The SODA path every shared workflow must show, one of: the one-node path (SODA Accelerate), SODA step by step,
# or a plan from a saved profile; each file's other SODA node types are expected as well.
SODA_PATHS = (
    {"SODAAccelerate"},
    {"SODAProfileSensitivity", "SODAPlanSchedule", "SODAModelPatch", "SODACompareImages"},
    {"SODALoadProfile", "SODAPlanSchedule", "SODAModelPatch"},
)
MISSING_MODELS_HEADER = "Missing Models"
FILES_BUILT_ON = "0.3.75"  # the ComfyUI whose frontend and /object_info scripts/build_workflows.py writes for
LOAD_SCRIPT = """
const [url, done] = arguments;
const app = window.app;
const seen = {missingNodes: null, missingModels: null, errorDialogs: [], hooked: typeof app.showMissingModelsError === "function"};
const wrap = (name, key) => {
  if (typeof app[name] !== "function") return;  // newer frontends (ComfyUI 0.33) report through dialogs only
  const original = app[name].bind(app);
  app[name] = (...args) => { seen[key] = args[0]; return original(...args); };
};
wrap("showMissingNodesError", "missingNodes");
wrap("showMissingModelsError", "missingModels");
const frames = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
(async () => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  const workflow = await response.json();
  await app.loadGraphData(workflow);
  await frames();
  await new Promise((resolve) => setTimeout(resolve, 1000));  // dialogs mount asynchronously
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const nodes = app.graph._nodes.map((n) => ({
    id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors,
    size: Array.from(n.size), min_size: Array.from(n.computeSize()),
  }));
  const prompt = await app.graphToPrompt();
  return {
    workflow,
    seen,
    nodes,
    registered: Object.keys(LiteGraph.registered_node_types).filter((t) => t.startsWith("SODA")),
    serialized: app.graph.serialize(),
    api: prompt.output,
    dialogs: Array.from(document.querySelectorAll(".p-dialog")).filter(visible).map((el) => el.innerText.trim()),
    error_toasts: Array.from(document.querySelectorAll(".p-toast-message-error")).map((el) => el.innerText.trim()),
  };
})().then((result) => done(JSON.stringify(result)), (error) => done(JSON.stringify({error: String(error.stack || error)})));
"""


def load_workflow(editor: Any, server_url: str, name: str) -> dict[str, Any]:
    open_editor(editor, server_url)
    url = f"/api/workflow_templates/{PACK_DIR_NAME}/{name}.json"
    result: dict[str, Any] = json.loads(editor.execute_async_script(LOAD_SCRIPT, url))
    if "error" in result:
        pytest.fail(f"loading {url} in the editor raised: {result['error']}")
    return result


def declared_models(workflow: dict[str, Any]) -> set[str]:
    """Model files the workflow's nodes declare for download (properties.models) and select in a widget."""
    names: set[str] = set()
    for node in workflow["nodes"]:
        values = set(map(str, node.get("widgets_values") or []))
        names |= {
            model["name"] for model in (node.get("properties") or {}).get("models") or [] if model["name"] in values
        }
    return names


def node_view(node: dict[str, Any]) -> dict[str, Any]:
    """What a saved node means: everything but the fields the editor recomputes (execution order)."""
    return {key: value for key, value in node.items() if key != "order"}


@pytest.mark.parametrize("name", UI_WORKFLOWS)
def test_frontend_loads_workflow(name: str, editor: Any, comfy_server: Any) -> None:
    expected = json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())
    started = time.monotonic()
    result = load_workflow(editor, comfy_server.url, name)
    load_seconds = time.monotonic() - started
    assert result["workflow"] == expected, f"the template route serves another file than example_workflows/{name}.json"

    # Dialogs: never a missing-node or error dialog; missing models only as declared by the workflow.
    assert result["seen"]["missingNodes"] is None, f"missing-node dialog: {result['seen']['missingNodes']}"
    assert not result["error_toasts"], f"error toasts: {result['error_toasts']}"
    if result["seen"]["hooked"]:  # the 0.3.75 frontend reports missing models through app.showMissingModelsError
        missing_models = {model["name"] for model in result["seen"]["missingModels"] or []}
        assert missing_models == declared_models(expected), (
            f"missing models reported {sorted(missing_models)}, declared {sorted(declared_models(expected))}"
        )
    else:  # newer frontends (0.33) only show the dialog
        missing_models = declared_models(expected)
    allowed = [MISSING_MODELS_HEADER] if missing_models else []
    unexpected = [text for text in result["dialogs"] if not any(text.startswith(a) for a in allowed)]
    assert not unexpected, "unexpected dialog(s):\n" + "\n---\n".join(text[:1000] for text in unexpected)

    # The graph: the expected node types, none with errors, no widget clipped.
    types = {node["type"] for node in result["nodes"]}
    file_soda_types = {node["type"] for node in expected["nodes"] if node["type"].startswith("SODA")}
    assert any(path <= file_soda_types for path in SODA_PATHS), f"no SODA path in the file: {file_soda_types}"
    assert file_soda_types <= types, f"SODA node types missing: {file_soda_types - types}"
    assert file_soda_types <= set(result["registered"]), f"not registered in the editor: {file_soda_types}"
    # a loader whose selected model file is absent and offered for download is flagged by newer frontends (0.33)
    absent = {
        str(node["id"])
        for node in expected["nodes"]
        if set(map(str, node.get("widgets_values") or [])) & declared_models(expected)
    }
    errors = [f"{n['id']} {n['type']}" for n in result["nodes"] if n["has_errors"] and str(n["id"]) not in absent]
    assert not errors, f"nodes flagged with errors: {errors}"
    clipped = [
        f"{n['id']} {n['type']}: size {n['size']} < minimum {n['min_size']}"
        for n in result["nodes"]
        if n["size"][0] < n["min_size"][0] - 0.5 or n["size"][1] < n["min_size"][1] - 0.5
    ]
    assert not clipped, "nodes smaller than their content (the editor would resize them):\n" + "\n".join(clipped)

    # The editor keeps the file as written (widget values on the intended widgets, links, groups): on the frontend
    # the files are built for; newer frontends re-save in their own format (named widget values, output lists).
    version = comfy_server.system_stats()["system"]["comfyui_version"]
    if version == FILES_BUILT_ON:
        serialized = result["serialized"]
        ours = {node["id"]: node_view(node) for node in expected["nodes"]}
        theirs = {node["id"]: node_view(node) for node in serialized["nodes"]}
        differences = [
            f"node {node_id} ({ours[node_id]['type']}) {key}: file {ours[node_id].get(key)!r} "
            f"editor {theirs.get(node_id, {}).get(key)!r}"
            for node_id in ours
            for key in set(ours[node_id]) | set(theirs.get(node_id, {}))
            if ours[node_id].get(key) != theirs.get(node_id, {}).get(key)
        ]
        for key in ("links", "groups", "last_node_id", "last_link_id"):
            if expected[key] != serialized[key]:
                differences.append(f"{key}: file {expected[key]!r} editor {serialized[key]!r}")
        assert not differences, "the editor re-saves the workflow differently:\n" + "\n".join(differences)

    # The editor's "Export (API)" equals the committed API workflow (frontend-only widgets aside).
    object_info = comfy_server.object_info()
    api = json.loads((API_DIR / f"{name}.json").read_text())
    exported = result["api"]
    for node in exported.values():
        info = object_info.get(node["class_type"], {}).get("input", {})
        declared = set(info.get("required") or {}) | set(info.get("optional") or {})
        node["inputs"] = {k: v for k, v in node["inputs"].items() if k in declared}  # e.g. PreviewAny's "preview"
    if version != FILES_BUILT_ON:  # newer ComfyUI: new display names (_meta) and new inputs with defaults
        for key, node in exported.items():
            node.pop("_meta", None)
            api.get(key, {}).pop("_meta", None)
            node["inputs"] = {k: v for k, v in node["inputs"].items() if k in api.get(key, {}).get("inputs", {})}
    mismatched = [
        f"node {key}: API file {api.get(key)} vs editor export {exported.get(key)}"
        for key in sorted(set(api) | set(exported), key=int)
        if api.get(key) != exported.get(key)
    ]
    assert not mismatched, "the editor exports another API workflow:\n" + "\n".join(mismatched)

    if name == SCREENSHOT_WORKFLOW:
        save_screenshot(editor)
    print(f"{name}: loaded in the editor in {load_seconds:.1f} s ({len(result['nodes'])} nodes)")  # noqa: T201


def save_screenshot(editor: Any) -> None:
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    editor.execute_script("window.app.graph.setDirtyCanvas(true, true)")
    time.sleep(0.5)
    assert editor.save_screenshot(str(ARTIFACT)), f"could not write {ARTIFACT}"
    README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ARTIFACT, README_IMAGE)


def test_browser_console_has_no_soda_errors(editor: Any) -> None:
    # Runs after the loads above (same module, same browser): console errors that mention the pack or its nodes.
    logs = editor.get_log("browser")
    problems = [
        entry["message"]
        for entry in logs
        if entry["level"] == "SEVERE"
        and entry.get("source") != "network"  # e.g. the registry lookup of the pack at api.comfy.org (offline here)
        and "soda" in entry["message"].lower()
    ]
    assert not problems, "browser console errors about SODA:\n" + "\n".join(problems)
