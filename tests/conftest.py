"""Test set-up shared by every layer.

The repository is registered as the package ``comfyui_soda`` (``scripts/comfy_env.py``); tests import
``comfyui_soda.soda_core`` and ``comfyui_soda.nodes`` exactly as ComfyUI imports the pack (relative imports inside).
Integration tests ask for the ``comfy`` fixture, which makes ComfyUI importable in-process.
"""

import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.append(str(ROOT))  # the benchmarks package; appended, so ComfyUI's own top-level modules (nodes, ...) win

from comfy_env import comfyui_dir, import_comfy, register_pack  # noqa: E402


register_pack()

__all__ = ["ROOT", "comfyui_dir", "import_comfy"]


@pytest.fixture(scope="session")
def comfy():
    """Session fixture for integration tests: ComfyUI importable in this process; returns the ``comfy`` package."""
    import_comfy()
    import comfy as comfy_package

    return comfy_package
