"""The real ComfyUI server (0.3.75, or the tree COMFYUI_DIR names) loads the pack: every declared SODA node is served and documented, no errors."""

import re
from collections.abc import Callable
from typing import Any

import pytest


pytestmark = pytest.mark.e2e

TESTED_VERSIONS = ("0.3.75", "0.33.0")  # pyproject.toml: requires-comfyui
NODE_ID_PREFIX = "SODA"
CATEGORY_PREFIX = "sampling/soda"
PYTHON_MODULE = "custom_nodes.comfyui-soda"


@pytest.fixture(scope="module")
def object_info(comfy_server: Any) -> dict[str, Any]:
    info: dict[str, Any] = comfy_server.object_info()
    return info


def _tree_version() -> str:
    """The version the ComfyUI tree under test declares (its comfyui_version.py)."""
    from comfy_env import comfyui_dir

    text = (comfyui_dir() / "comfyui_version.py").read_text()
    return re.search(r"__version__\s*=\s*[\"']([^\"']+)", text).group(1)  # type: ignore[union-attr]


def test_server_answers_with_the_tree_version_the_pack_is_tested_on(comfy_server: Any) -> None:
    stats = comfy_server.system_stats()
    assert stats["system"]["comfyui_version"] == _tree_version()
    assert _tree_version() in TESTED_VERSIONS
    assert stats["devices"][0]["type"] == "cpu"


def test_every_declared_node_is_served(declared_node_ids: list[str], object_info: dict[str, Any]) -> None:
    if not declared_node_ids:
        pytest.fail("no SODA nodes declared (nodes/__init__.py SodaExtension.get_node_list() is empty)")
    missing = [node_id for node_id in declared_node_ids if node_id not in object_info]
    assert not missing, f"declared but not in /object_info (see the server log): {missing}"
    foreign = {
        n: object_info[n]["python_module"]
        for n in declared_node_ids
        if object_info[n]["python_module"] != PYTHON_MODULE
    }
    assert not foreign, f"served from another module than {PYTHON_MODULE} (node id clash?): {foreign}"


def test_every_declared_node_is_documented(declared_node_ids: list[str], object_info: dict[str, Any]) -> None:
    if not declared_node_ids:
        pytest.fail("no SODA nodes declared (nodes/__init__.py SodaExtension.get_node_list() is empty)")
    problems: list[str] = []
    for node_id in declared_node_ids:
        info = object_info.get(node_id)
        if info is None:
            problems.append(f"{node_id}: not served")
            continue
        if not node_id.startswith(NODE_ID_PREFIX):
            problems.append(f"{node_id}: node id does not start with {NODE_ID_PREFIX!r}")
        if not str(info.get("category") or "").startswith(CATEGORY_PREFIX):
            problems.append(f"{node_id}: category {info.get('category')!r} is not under {CATEGORY_PREFIX!r}")
        if not str(info.get("description") or "").strip():
            problems.append(f"{node_id}: no description")
        for section in ("required", "optional"):
            for name, spec in (info.get("input", {}).get(section) or {}).items():
                options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                if not str(options.get("tooltip") or "").strip():
                    problems.append(f"{node_id}: input {name!r} has no tooltip")
    assert not problems, "\n".join(problems)


def test_server_log_has_no_pack_traceback(
    comfy_server: Any, object_info: dict[str, Any], pack_log_problems: Callable[[], list[str]]
) -> None:
    # Runs last in the module, so the start-up and the /object_info requests above are all in the log.
    problems = pack_log_problems()
    assert not problems, f"{comfy_server.log_path} reports problems with the pack:\n\n" + "\n\n".join(problems)
