"""The one place that knows where ComfyUI is and how to use it in-process (stdlib only).

Used by the tests (``tests/conftest.py``), the benchmarks and the build scripts:

* ``comfyui_dir()``: ``$COMFYUI_DIR``, else the tree ``scripts/setup_env.sh`` recorded in the running environment
  (``<venv>/comfyui-path``: each environment is set up for one ComfyUI tree);
* ``register_pack()``: the repository as the package ``comfyui_soda`` (its folder name is not a Python name; inside
  the pack every import is relative, exactly as when ComfyUI loads it from ``custom_nodes/``);
* ``import_comfy()``: ``import comfy`` on the CPU without ComfyUI parsing the caller's command line.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def comfyui_dir() -> Path:
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]).resolve()
    recorded = Path(sys.prefix) / "comfyui-path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    return ROOT / ".runtime" / "ComfyUI"


def register_pack() -> None:
    if "comfyui_soda" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "comfyui_soda", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the pack from {ROOT / '__init__.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_soda"] = module
    spec.loader.exec_module(module)


def import_comfy(tree: Path | None = None) -> None:
    if "comfy.options" in sys.modules:
        return
    tree = tree or comfyui_dir()
    if not (tree / "comfy").is_dir():
        raise RuntimeError(f"No ComfyUI tree at {tree}. Run `make setup` (or set COMFYUI_DIR) first.")
    sys.path.insert(0, str(tree))
    saved_argv = sys.argv
    sys.argv = [saved_argv[0] if saved_argv else "comfyui-soda", "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = saved_argv
