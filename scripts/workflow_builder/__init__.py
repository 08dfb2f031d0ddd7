"""Builds the shared example workflows; ``scripts/build_workflows.py`` is the command-line entry.

ComfyUI's template browser lists the top-level ``*.json`` of a pack's ``example_workflows/`` (the folder name the
Comfy docs recommend) and shows ``<name>.jpg`` beside each as its thumbnail. The API-format twins sit in
``example_workflows/api/``: next to their UI files, but not listed as templates (the listing does not descend).
"""

from comfy_env import ROOT


WORKFLOWS_DIR = ROOT / "example_workflows"
API_DIR = WORKFLOWS_DIR / "api"
THUMBNAIL_SUFFIX = ".jpg"  # the frontend asks for <name>.jpg
