"""ComfyUI in-process for the benchmarks, the way the integration tests use it, and the facts of the machine."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from comfy_env import comfyui_dir, import_comfy, register_pack  # noqa: E402


__all__ = [
    "ROOT",
    "comfyui_dir",
    "hardware",
    "import_comfy",
    "load_average",
    "quickstart_inputs",
    "register_pack",
    "setup",
]


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


def quickstart_inputs() -> tuple[Any, Any, Any, Any]:
    """The quick start's run on the embedded reference model (after ``setup``): the model, positive (100 digits,
    ten of each) and negative (empty caption) conditioning, and the empty 16x16 latents."""
    from comfyui_soda.nodes.reference_model import (
        DEFAULT_MODEL,
        EMBEDDED_MODELS_DIR,
        SODAReferenceClassEncode,
        SODAReferenceTextEncode,
        load_reference_model,
    )
    from workflow_builder.definitions import QUICKSTART_LABELS

    model = load_reference_model(EMBEDDED_MODELS_DIR / DEFAULT_MODEL)
    positive, empty = SODAReferenceClassEncode.execute(model, QUICKSTART_LABELS).args
    negative = SODAReferenceTextEncode.execute(model, "").args[0]
    return model, positive, negative, empty["samples"]
