"""ComfyUI in-process for the benchmarks, the way the integration tests use it, and the facts of the machine."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]


def register_pack() -> None:
    """Make the repository importable as the package ``comfyui_soda`` (its folder name is not a Python name)."""
    if "comfyui_soda" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "comfyui_soda", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_soda"] = module
    spec.loader.exec_module(module)


def comfyui_dir() -> Path:
    """$COMFYUI_DIR, else the tree ``scripts/setup_env.sh`` recorded in ``.runtime/comfyui-path``."""
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]).resolve()
    recorded = ROOT / ".runtime" / "comfyui-path"
    if recorded.exists():
        return Path(recorded.read_text().strip())
    return ROOT / ".runtime" / "ComfyUI"


def import_comfy() -> None:
    """``import comfy`` in this process on the CPU, without ComfyUI parsing our command line."""
    if "comfy.options" in sys.modules:
        return
    tree = comfyui_dir()
    if not (tree / "comfy").is_dir():
        raise RuntimeError(f"No ComfyUI tree at {tree}. Run `make setup` (or set COMFYUI_DIR) first.")
    sys.path.insert(0, str(tree))
    saved_argv = sys.argv
    sys.argv = ["comfyui-soda-bench", "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401  (parses --cpu)
        import comfy.model_management  # noqa: F401
    finally:
        sys.argv = saved_argv


def setup() -> None:
    register_pack()
    import_comfy()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware() -> dict[str, Any]:
    import torch

    from comfyui_soda.nodes.patching import comfy_version

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": _cpu_model(),
        "cores": usable,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "comfyui": comfy_version(),
        "device": "cpu",
        "platform": platform.platform(),
    }


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
