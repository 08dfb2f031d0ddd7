"""pyproject.toml carries what the Comfy Registry and comfy-cli read (docs.comfy.org/registry/specifications)."""

import re
from pathlib import Path

import tomllib
from PIL import Image


ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMFY = PYPROJECT["tool"]["comfy"]
# comfy-cli's check of requires-comfyui (registry/config_parser.py validate_version): [operator]X.Y.Z, comma-separated
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")
ICON_URL = "https://raw.githubusercontent.com/comfyui-soda/comfyui-soda/main/"


def test_requires_comfyui_is_in_tool_comfy_and_valid() -> None:
    assert "requires-comfyui" not in PYPROJECT["project"], "comfy-cli reads requires-comfyui from [tool.comfy] only"
    spec = COMFY["requires-comfyui"]
    assert all(VERSION_PART.match(part.strip()) for part in spec.split(",")), spec
    assert spec == ">=0.3.75,<=0.33.0", "the ComfyUI versions the whole suite runs on (CI and COMFYUI_DIR)"


def test_icon_is_a_committed_picture_within_the_registry_limits() -> None:
    url = COMFY["Icon"]
    assert url.startswith(ICON_URL), url
    path = ROOT / url.removeprefix(ICON_URL)
    assert path.is_file(), f"{url} points at {path}, which is not in the repository"
    with Image.open(path) as icon:
        assert icon.format in {"PNG", "JPEG", "GIF"} and icon.width <= 800 and icon.height <= 400, (
            icon.format,
            icon.size,
        )


def test_classifiers_name_the_operating_systems() -> None:
    classifiers = PYPROJECT["project"]["classifiers"]
    assert "Operating System :: OS Independent" in classifiers
    accelerators = [c for c in classifiers if c.startswith("Environment ::")]
    allowed = {
        "GPU :: NVIDIA CUDA",
        "GPU :: AMD ROCm",
        "GPU :: Intel Arc",
        "NPU :: Huawei Ascend",
        "GPU :: Apple Metal",
    }
    assert all(c.removeprefix("Environment :: ") in allowed for c in accelerators), accelerators


def test_registry_archive_includes_exist() -> None:
    missing = [folder for folder in COMFY["includes"] if not (ROOT / folder).is_dir()]
    assert not missing, f"[tool.comfy] includes names missing folders {missing}"
