"""End-to-end fixtures: ONE real ComfyUI server per test module, with this pack in its custom_nodes.

``comfy_server`` starts ``scripts/comfy_server.py``'s :class:`ComfyServer` (headless, ``--cpu``) in a fresh base
directory; ``declared_node_ids`` lists the node ids the pack declares, computed in-process the way ComfyUI does;
``pack_log_problems`` returns the server log's tracebacks and load errors that concern this pack.

ComfyUI caches node outputs between prompts of one server: a workflow queued twice with the same inputs runs nothing
the second time (no ``executing`` messages, empty timings), so tests that time or re-run nodes must vary an input.
"""

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


ROOT = Path(__file__).resolve().parents[2]
PACK_MARKERS = ("comfyui-soda", "comfyui_soda")
LOAD_ERROR_MARKERS = ("IMPORT FAILED", "Cannot import", "Error while calling comfy_entrypoint", "could not be loaded")


import comfy_server as comfy_server_lib  # noqa: E402  (scripts/ is on sys.path, see tests/conftest.py)
from workflow_builder import API_DIR, THUMBNAIL_SUFFIX, WORKFLOWS_DIR  # noqa: E402, F401  (example_workflows/, api/)


PACK_DIR_NAME = comfy_server_lib.PACK_DIR_NAME  # the pack's folder name under custom_nodes/


ComfyServer = comfy_server_lib.ComfyServer
ComfyServerError = comfy_server_lib.ComfyServerError


def find_pack_problems(log_text: str) -> list[str]:
    """Tracebacks that mention the pack, and ComfyUI's load-error lines about it, found in a server log."""
    problems: list[str] = []
    lines = log_text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("Traceback (most recent call last):"):
            end = index + 1
            while end < len(lines) and lines[end].startswith((" ", "\t")):
                end += 1
            block = "\n".join(lines[index : end + 1])  # frames plus the exception line
            if any(marker in block for marker in PACK_MARKERS):
                problems.append(block)
            index = end + 1
            continue
        mentions_pack = any(marker in line for marker in PACK_MARKERS) or "'SODA" in line
        if mentions_pack and (any(marker in line for marker in LOAD_ERROR_MARKERS) or "[ERROR]" in line):
            problems.append(line)
        index += 1
    return problems


@pytest.fixture(scope="module")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running ComfyServer shared by the test module; its log is ``<base_dir>/comfyui.log``."""
    base_dir = comfy_server_lib.prepare_base_dir(tmp_path_factory.mktemp("comfy-base"), ROOT)
    with ComfyServer(base_dir=base_dir) as server:
        yield server


@pytest.fixture
def pack_log_problems(comfy_server: Any) -> Callable[[], list[str]]:
    """Call it (after the requests under test) to get the pack's tracebacks and load errors from the server log."""
    return lambda: find_pack_problems(comfy_server.log_text())


@pytest.fixture(scope="session")
def declared_node_ids(comfy: ModuleType) -> list[str]:
    """Node ids the pack declares (SodaExtension.get_node_list, schemas validated as ComfyUI does at load)."""
    try:
        from comfyui_soda.nodes import SodaExtension

        node_classes = asyncio.run(SodaExtension().get_node_list())
        return [node_class.GET_SCHEMA().node_id for node_class in node_classes]
    except Exception as error:  # noqa: BLE001 - report any import or schema error as a test failure
        pytest.fail(f"the pack's nodes cannot be declared in-process: {type(error).__name__}: {error}")
