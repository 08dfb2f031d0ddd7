"""Test set-up shared by every layer.

The pack's folder name ("comfyui-soda" in custom_nodes, anything in a clone) is not an importable name, so the
repository is registered here as the package ``comfyui_soda``; tests import ``comfyui_soda.soda_core`` and
``comfyui_soda.nodes`` exactly as ComfyUI imports the pack (relative imports inside).
"""

import importlib.util
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def _register_pack() -> None:
    if "comfyui_soda" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "comfyui_soda", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_soda"] = module
    spec.loader.exec_module(module)


_register_pack()


def comfyui_dir() -> Path:
    """The ComfyUI tree the tests run against: $COMFYUI_DIR, else the one scripts/setup_env.sh prepared."""
    import os

    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]).resolve()
    recorded = ROOT / ".runtime" / "comfyui-path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    return ROOT / ".runtime" / "ComfyUI"


def import_comfy() -> None:
    """Make ``import comfy`` work in-process, the way ComfyUI's own scripts do (CPU, no argument parsing)."""
    if "comfy.options" in sys.modules:
        return
    tree = comfyui_dir()
    if not (tree / "comfy").is_dir():
        raise RuntimeError(f"No ComfyUI tree at {tree}. Run `make setup` (or set COMFYUI_DIR) first.")
    sys.path.insert(0, str(tree))
    saved_argv = sys.argv
    sys.argv = ["comfyui-soda-tests", "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = saved_argv


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def comfy():
    """Session fixture for integration tests: ComfyUI importable in this process; returns the ``comfy`` package."""
    import_comfy()
    import comfy as comfy_package

    return comfy_package
