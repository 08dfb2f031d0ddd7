"""Build the shared example workflows from ONE Python definition each, in both formats ComfyUI uses.

Every workflow is defined once below (nodes, links, positions, groups and a Note explaining the graph) and written as

* ``workflows/<name>.json``: the UI (LiteGraph) format the ComfyUI editor loads. ComfyUI's template browser lists the
  top-level ``workflows/*.json`` of every custom node pack (``GET /api/workflow_templates``).
* ``workflows/api/<name>.json``: the API format that scripts queue with ``POST /prompt`` (``scripts/demo.py``, the
  end-to-end tests); every node carries ``_meta.title``, the Note is left out (it exists only in the editor).

The UI format stores widget values as a bare list, ordered like the node's widget inputs in ``/object_info`` plus
the extra "control_after_generate" value after inputs that declare it (seeds), and lists inputs the way the frontend
serialises them (sockets first, then one slot per widget). That order, the defaults of inputs a workflow leaves
unset, output names and display names are all read from the ``/object_info`` of a running server, so the files match
what the frontend itself would save. Links are type-checked against ``/object_info`` while building.

Usage (from the repository root):
    .venv/bin/python scripts/build_workflows.py            # start a headless server, (re)write the files
    .venv/bin/python scripts/build_workflows.py --check    # regenerate in memory, fail if the files differ
    ... --url http://127.0.0.1:8188                          # use a running server instead of starting one
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_server import ROOT, ComfyServer, ComfyServerError, prepare_base_dir


WORKFLOWS_DIR = ROOT / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
PACK_CNR_ID = "comfyui-soda"  # Comfy Registry id (pyproject [project].name): lets ComfyUI-Manager offer the install
CORE_CNR_ID = "comfy-core"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
CONTROL_AFTER_GENERATE = "fixed"  # reproducible by default: both samplers and the profile share one seed

# Frontend-only node types (not in /object_info, not in the API format).
NOTE_TYPE = "Note"
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"

# LiteGraph geometry, for group bounds and default node sizes (litegraph's computeSize).
NODE_TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
GROUP_FONT_SIZE = 24
GROUP_TITLE_HEIGHT = 34  # font_size * 1.4
GROUP_PADDING = 20
GROUP_COLOR = "#3f789e"
DEFAULT_WIDTH = 320
COLUMN_1_WIDTH = 380  # group 1 (model and prompt): wide enough for model file names


class BuildError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------------- definitions


@dataclass
class Node:
    """One node. ``links`` maps an input name to ``(source node key, source output name)``; ``widgets`` maps a widget
    input name to its value (inputs left out take their /object_info default)."""

    key: str
    type: str
    pos: tuple[float, float]
    title: str | None = None
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    size: tuple[float, float] | None = None
    models: list[dict[str, str]] | None = None  # properties.models: the frontend offers these downloads if missing


@dataclass
class Group:
    title: str
    members: list[str]  # node keys; the bounding box is computed around them


@dataclass
class Workflow:
    name: str
    nodes: list[Node]
    groups: list[Group]
    note: str
    note_pos: tuple[float, float]
    note_size: tuple[float, float]


QUICKSTART_NOTE = """\
SODA quick start: runs on any computer, nothing to download.

What this graph does
1. Model and prompt. Loads the small reference model that ships with the pack: a Flux-shaped transformer with \
random weights. Its pictures are abstract patterns, not art; it is here to show the mechanics, the speed-up and the \
fidelity numbers on any CPU. The text encoder is a stand-in that needs no CLIP or T5.
2. SODA: profile -> plan -> patch. "Profile Sensitivity" samples once at full compute and measures, for every \
step and every attention and MLP module, how much the result would change if that module's output were reused from \
an earlier step. "Plan SODA Schedule" turns that profile into a schedule for the speed-up you ask for \
(target_speedup 2.0 = half the transformer work). "SODA Model Patch" returns a copy of the model that follows the \
schedule. The sensitivity heatmap and the plan are saved as images; the text box shows the plan's summary.
3. Sample. Two ordinary KSamplers with identical settings and the same seed: "Full compute KSampler" on the \
original model, "SODA KSampler" on the patched one.
4. Compare. PSNR and SSIM of the SODA image against the full-compute image (higher is closer; identical images \
give PSNR inf).

How to use it
Queue it once. Profiling runs first; it samples once and measures every module at every step, so it takes a few \
times longer than a plain sampling run. As long as the model, prompt and sampler settings stay the same, ComfyUI keeps the profile, so you can change target_speedup and queue again to try other \
speeds: only the SODA branch runs again.
Keep the sampler settings (steps, sampler, scheduler, cfg) of Profile Sensitivity and the two KSamplers \
identical: a profile describes the steps it was measured on.

With your own Flux model
Open the "soda_flux_dev" workflow from the templates (comfyui-soda), or change this graph: replace "Load SODA \
Reference Model" by "Load Diffusion Model" (flux1-dev.safetensors), each "SODA Reference Text Encode" by a "CLIP Text \
Encode" fed by "DualCLIPLoader" (clip_l + t5xxl, type flux) with "FluxGuidance" 3.5 on the positive prompt, and each \
"SODA Latent Preview Decode" by "VAE Decode" with ae.safetensors. Profile once per model, image size and sampler \
setting; save the profile with "Save SODA Profile" to skip profiling next time.
"""

FLUX_DEV_NOTE = """\
SODA on Flux.1-dev

Files this workflow needs (ComfyUI offers the downloads when they are missing):
  models/diffusion_models/flux1-dev.safetensors
  models/text_encoders/clip_l.safetensors
  models/text_encoders/t5xxl_fp16.safetensors
  models/vae/ae.safetensors

What this graph does
1. Model and prompt: the usual Flux.1-dev text-to-image set-up (FluxGuidance 3.5, cfg 1.0, 20 steps euler/simple, \
1024x1024).
2. SODA: "Profile Sensitivity" samples once at full compute and measures how much every attention and MLP module \
changes from step to step; "Plan SODA Schedule" picks the steps to compute fully and what to reuse for the speed-up \
you ask for (target_speedup 2.0 = half the transformer work); "SODA Model Patch" returns a copy of the model that \
follows the schedule.
3. Sample: "Full compute KSampler" on the original model and "SODA KSampler" on the patched one, same settings and \
seed.
4. Compare: PSNR and SSIM of the SODA image against the full-compute one.

Profiling samples once and measures every module at every step, so it takes longer than a plain sampling run. Keep \
the model, prompt, size and sampler settings unchanged and ComfyUI keeps the profile: change target_speedup and queue again. "Save SODA Profile" stores a profile to reuse in later sessions.

Memory: profiling keeps the last max_distance (8) outputs of every attention and MLP module in system RAM. At \
1024x1024 that is about 25 GB, so memory_limit_mb is raised to 28000 here. With less free RAM, lower max_distance \
on Profile Sensitivity (4 needs about half). Above the limit, profiling stops with a message at its first step \
instead of running out of memory.
"""

QUICKSTART_PROMPT = "a red circle above a blue square on a white background"
FLUX_PROMPT = (
    "a red fox sitting in fresh snow at the edge of a pine forest at sunrise, soft golden light, detailed fur, "
    "shallow depth of field"
)
SAMPLING = {"seed": 0, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}

FLUX_MODELS = {
    "unet": {
        "name": "flux1-dev.safetensors",
        "url": "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
        "directory": "diffusion_models",
    },
    "clip_l": {
        "name": "clip_l.safetensors",
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "directory": "text_encoders",
    },
    "t5": {
        "name": "t5xxl_fp16.safetensors",
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "directory": "text_encoders",
    },
    "vae": {
        "name": "ae.safetensors",
        "url": "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        "directory": "vae",
    },
}


def soda_and_compare_nodes(
    prefix: str,
    model: tuple[str, str],
    positive: tuple[str, str],
    negative: tuple[str, str],
    latent: tuple[str, str],
    decoder: str,
    decoder_links: dict[str, tuple[str, str]],
    profile_widgets: dict[str, Any] | None = None,
) -> list[Node]:
    """Groups 2-4, shared by both workflows: profile -> plan -> patch, two samplers, decode, save, compare."""
    sampler_links = {"positive": positive, "negative": negative, "latent_image": latent}
    decode_out = "IMAGE"
    return [
        # 2. SODA: profile -> plan -> patch
        Node(
            "profile",
            "SODAProfileSensitivity",
            (440, 0),
            title="Profile Sensitivity",
            links={"model": model, **sampler_links},
            widgets={**SAMPLING, "operations": "cache and prune", "granularity": "module", **(profile_widgets or {})},
            size=(340, 406),
        ),
        Node(
            "plan",
            "SODAPlanSchedule",
            (440, 470),
            title="Plan SODA Schedule",
            links={"profile": ("profile", "profile")},
            widgets={"target_speedup": 2.0, "min_full_steps": 1, "pruning": True},
            size=(340, 266),
        ),
        Node(
            "patch",
            "SODAModelPatch",
            (440, 800),
            links={"model": model, "schedule": ("plan", "schedule")},
            size=(340, 46),
        ),
        Node(
            "save_heatmap",
            "SaveImage",
            (820, 0),
            title="Save sensitivity heatmap",
            links={"images": ("profile", "heatmap")},
            widgets={"filename_prefix": f"{prefix}/heatmap"},
            size=(340, 310),
        ),
        Node(
            "save_plan",
            "SaveImage",
            (820, 360),
            title="Save schedule plot",
            links={"images": ("plan", "plan")},
            widgets={"filename_prefix": f"{prefix}/plan"},
            size=(340, 300),
        ),
        Node(
            "summary",
            "PreviewAny",
            (820, 720),
            title="Plan summary",
            links={"source": ("plan", "summary")},
            size=(340, 126),
        ),
        # 3. Sample: SODA vs full compute
        Node(
            "full_sampler",
            "KSampler",
            (1240, 0),
            title="Full compute KSampler",
            links={"model": model, **sampler_links},
            widgets=dict(SAMPLING),
            size=(320, 262),
        ),
        Node(
            "soda_sampler",
            "KSampler",
            (1240, 460),
            title="SODA KSampler",
            links={"model": ("patch", "MODEL"), **sampler_links},
            widgets=dict(SAMPLING),
            size=(320, 262),
        ),
        Node(
            "decode_full",
            decoder,
            (1240, 310),
            title="Decode: full compute",
            links={"samples": ("full_sampler", "LATENT"), **decoder_links},
            size=(320, 78),
        ),
        Node(
            "decode_soda",
            decoder,
            (1240, 770),
            title="Decode: SODA",
            links={"samples": ("soda_sampler", "LATENT"), **decoder_links},
            size=(320, 78),
        ),
        Node(
            "save_full",
            "SaveImage",
            (1600, 0),
            title="Save full compute",
            links={"images": ("decode_full", decode_out)},
            widgets={"filename_prefix": f"{prefix}/full"},
            size=(340, 388),
        ),
        Node(
            "save_soda",
            "SaveImage",
            (1600, 460),
            title="Save SODA",
            links={"images": ("decode_soda", decode_out)},
            widgets={"filename_prefix": f"{prefix}/soda"},
            size=(340, 388),
        ),
        # 4. Compare
        Node(
            "compare",
            "SODACompareImages",
            (1240, 1010),
            title="Compare: SODA vs full",
            links={"reference": ("decode_full", decode_out), "candidate": ("decode_soda", decode_out)},
            size=(320, 66),
        ),
        Node(
            "report",
            "PreviewAny",
            (1600, 1010),
            title="Fidelity report",
            links={"source": ("compare", "report")},
            size=(340, 160),
        ),
    ]


SODA_GROUPS = [
    Group("2. SODA: profile → plan → patch", ["profile", "plan", "patch", "save_heatmap", "save_plan", "summary"]),
    Group(
        "3. Sample: SODA vs full compute",
        ["full_sampler", "soda_sampler", "decode_full", "decode_soda", "save_full", "save_soda"],
    ),
    Group("4. Compare", ["compare", "report"]),
]


def quickstart() -> Workflow:
    model = ("model", "MODEL")
    nodes = [
        Node(
            "model",
            "SODALoadReferenceModel",
            (0, 0),
            widgets={"model_name": "soda_reference_flux.safetensors"},
            size=(COLUMN_1_WIDTH, 58),
        ),
        Node(
            "positive",
            "SODAReferenceTextEncode",
            (0, 130),
            title="Positive prompt",
            links={"model": model},
            widgets={"text": QUICKSTART_PROMPT},
            size=(COLUMN_1_WIDTH, 160),
        ),
        Node(
            "negative",
            "SODAReferenceTextEncode",
            (0, 350),
            title="Negative prompt",
            links={"model": model},
            widgets={"text": ""},
            size=(COLUMN_1_WIDTH, 120),
        ),
        Node(
            "latent",
            "EmptySD3LatentImage",
            (0, 530),
            title="Empty latent (512x512 px = 64x64 latent)",
            widgets={"width": 512, "height": 512, "batch_size": 1},
            size=(COLUMN_1_WIDTH, 106),
        ),
        *soda_and_compare_nodes(
            "soda_quickstart",
            model,
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent", "LATENT"),
            decoder="SODALatentToImage",
            decoder_links={"model": model},
        ),
    ]
    groups = [Group("1. Model and prompt", ["model", "positive", "negative", "latent"]), *SODA_GROUPS]
    return Workflow("soda_quickstart", nodes, groups, QUICKSTART_NOTE, note_pos=(-560, 0), note_size=(520, 900))


def flux_dev() -> Workflow:
    model = ("model", "MODEL")
    nodes = [
        Node(
            "model",
            "UNETLoader",
            (0, 0),
            title="Load Diffusion Model (Flux.1-dev)",
            widgets={"unet_name": FLUX_MODELS["unet"]["name"], "weight_dtype": "default"},
            size=(COLUMN_1_WIDTH, 82),
            models=[FLUX_MODELS["unet"]],
        ),
        Node(
            "clip",
            "DualCLIPLoader",
            (0, 130),
            widgets={
                "clip_name1": FLUX_MODELS["clip_l"]["name"],
                "clip_name2": FLUX_MODELS["t5"]["name"],
                "type": "flux",
            },
            size=(COLUMN_1_WIDTH, 130),
            models=[FLUX_MODELS["clip_l"], FLUX_MODELS["t5"]],
        ),
        Node(
            "vae",
            "VAELoader",
            (0, 310),
            widgets={"vae_name": FLUX_MODELS["vae"]["name"]},
            size=(COLUMN_1_WIDTH, 58),
            models=[FLUX_MODELS["vae"]],
        ),
        Node(
            "positive_text",
            "CLIPTextEncode",
            (0, 420),
            title="Positive prompt",
            links={"clip": ("clip", "CLIP")},
            widgets={"text": FLUX_PROMPT},
            size=(COLUMN_1_WIDTH, 160),
        ),
        Node(
            "guidance",
            "FluxGuidance",
            (0, 640),
            links={"conditioning": ("positive_text", "CONDITIONING")},
            widgets={"guidance": 3.5},
            size=(COLUMN_1_WIDTH, 58),
        ),
        Node(
            "negative",
            "CLIPTextEncode",
            (0, 760),
            title="Negative prompt (unused at cfg 1.0)",
            links={"clip": ("clip", "CLIP")},
            widgets={"text": ""},
            size=(COLUMN_1_WIDTH, 120),
        ),
        Node(
            "latent",
            "EmptySD3LatentImage",
            (0, 940),
            widgets={"width": 1024, "height": 1024, "batch_size": 1},
            size=(COLUMN_1_WIDTH, 106),
        ),
        *soda_and_compare_nodes(
            "soda_flux_dev",
            model,
            ("guidance", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent", "LATENT"),
            decoder="VAEDecode",
            decoder_links={"vae": ("vae", "VAE")},
            profile_widgets={"memory_limit_mb": 28000.0},
        ),
    ]
    groups = [
        Group("1. Model and prompt", ["model", "clip", "vae", "positive_text", "guidance", "negative", "latent"]),
        *SODA_GROUPS,
    ]
    return Workflow("soda_flux_dev", nodes, groups, FLUX_DEV_NOTE, note_pos=(-560, 0), note_size=(520, 900))


WORKFLOWS = (quickstart, flux_dev)


# ------------------------------------------------------------------------------------------ /object_info schema


@dataclass
class InputSpec:
    name: str
    type: str  # "COMBO" for option lists
    options: dict[str, Any]
    optional: bool
    widget: bool
    choices: list[Any] | None  # combo options


@dataclass
class NodeSchema:
    type: str
    display_name: str
    inputs: list[InputSpec]
    outputs: list[tuple[str, str]]  # (name, type)
    core: bool

    @property
    def sockets(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if not spec.widget]

    @property
    def widgets(self) -> list[InputSpec]:
        return [spec for spec in self.inputs if spec.widget]

    def output_index(self, name: str) -> int:
        names = [output_name for output_name, _ in self.outputs]
        if name not in names:
            raise BuildError(f"{self.type} has no output {name!r}; it has {names}")
        return names.index(name)


def parse_schema(node_type: str, info: dict[str, Any]) -> NodeSchema:
    """The inputs of a node in /object_info order (``input_order`` when the server sends it), as the frontend sees them."""
    sections = info.get("input") or {}
    order = info.get("input_order") or {section: list(sections.get(section) or {}) for section in sections}
    inputs: list[InputSpec] = []
    for section in ("required", "optional"):
        for name in order.get(section) or []:
            raw = sections[section][name]
            kind = raw[0]
            options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
            choices = None
            if isinstance(kind, list):
                kind, choices = "COMBO", list(kind)
            elif kind == "COMBO":
                choices = list(options.get("options") or [])
            widget = kind in WIDGET_TYPES and not options.get("forceInput")
            inputs.append(InputSpec(name, kind, options, section == "optional", widget, choices))
    outputs = list(zip(info.get("output_name") or info.get("output") or [], info.get("output") or []))
    core = not str(info.get("python_module", "")).startswith("custom_nodes.")
    return NodeSchema(node_type, info.get("display_name") or node_type, inputs, outputs, core)


def default_value(schema: NodeSchema, spec: InputSpec) -> Any:
    if "default" in spec.options:
        return spec.options["default"]
    if spec.choices:
        return spec.choices[0]
    raise BuildError(f"{schema.type}.{spec.name} has no default: give it a value in build_workflows.py")


# ---------------------------------------------------------------------------------------------------- builders


def default_size(schema: NodeSchema) -> tuple[float, float]:
    """Litegraph's computeSize height: socket rows, one row per widget (control widgets included), padding."""
    widgets = sum(2 if spec.options.get("control_after_generate") else 1 for spec in schema.widgets)
    rows = max(len(schema.sockets), len(schema.outputs), 1 if widgets else 0)
    return DEFAULT_WIDTH, rows * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + (14 if widgets else 6)


@dataclass
class Links:
    """The workflow's links: ``[id, origin id, origin slot, target id, target slot, type]`` rows, and per-socket ids."""

    rows: list[list[Any]] = field(default_factory=list)
    by_output: dict[tuple[str, int], list[int]] = field(default_factory=dict)  # (node key, output slot) -> link ids
    by_input: dict[tuple[str, str], int] = field(default_factory=dict)  # (node key, input name) -> link id


def check_node(workflow: Workflow, node: Node, schema: NodeSchema) -> None:
    """Unknown input names and unlinked required sockets are errors."""
    where = f"{workflow.name}: {node.key} ({node.type})"
    unknown = sorted(set(node.links) - {spec.name for spec in schema.sockets})
    if unknown:
        raise BuildError(f"{where} has no socket input(s) {unknown}")
    unknown = sorted(set(node.widgets) - {spec.name for spec in schema.widgets})
    if unknown:
        raise BuildError(f"{where} has no widget input(s) {unknown}")
    unlinked = [spec.name for spec in schema.sockets if not spec.optional and spec.name not in node.links]
    if unlinked:
        raise BuildError(f"{where}: required input(s) {unlinked} not linked")


def build_links(workflow: Workflow, schemas: dict[str, NodeSchema], ids: dict[str, int]) -> Links:
    """Links in node order, then input order, type-checked (``*`` accepts anything)."""
    links = Links()
    for node in workflow.nodes:
        sockets = schemas[node.key].sockets
        for target_slot, spec in enumerate(sockets):  # sockets come first in a node's input slots
            if spec.name not in node.links:
                continue
            source_key, output_name = node.links[spec.name]
            if source_key not in schemas:
                raise BuildError(f"{workflow.name}: {node.key}.{spec.name} links from unknown node {source_key!r}")
            slot = schemas[source_key].output_index(output_name)
            kind = schemas[source_key].outputs[slot][1]
            if spec.type != "*" and kind != spec.type:
                raise BuildError(
                    f"{workflow.name}: {source_key}.{output_name} is {kind} but {node.key}.{spec.name} takes {spec.type}"
                )
            link_id = len(links.rows) + 1
            links.rows.append([link_id, ids[source_key], slot, ids[node.key], target_slot, kind])
            links.by_output.setdefault((source_key, slot), []).append(link_id)
            links.by_input[(node.key, spec.name)] = link_id
    return links


def widget_values(workflow: Workflow, node: Node, schema: NodeSchema) -> dict[str, Any]:
    """Widget input name -> value: the workflow's, else the /object_info default; combo values are checked."""
    values: dict[str, Any] = {}
    for spec in schema.widgets:
        value = node.widgets[spec.name] if spec.name in node.widgets else default_value(schema, spec)
        # File lists (models) depend on the machine; every other combo value must be one of its options.
        is_file = isinstance(value, str) and value.lower().endswith(MODEL_FILE_SUFFIXES)
        if spec.choices is not None and value not in spec.choices and not is_file:
            raise BuildError(f"{workflow.name}: {node.key}.{spec.name}={value!r} is not one of {spec.choices}")
        values[spec.name] = value
    return values


def ui_input(spec: InputSpec, link: int | None) -> dict[str, Any]:
    """An input slot as the frontend saves it: optional ones have shape 7, widgets name their widget."""
    slot: dict[str, Any] = {"localized_name": spec.name, "name": spec.name}
    if spec.optional:
        slot["shape"] = 7
    slot["type"] = spec.type
    if spec.widget:
        slot["widget"] = {"name": spec.name}
    slot["link"] = link
    return slot


def ui_node(node: Node, node_id: int, schema: NodeSchema, values: dict[str, Any], links: Links) -> dict[str, Any]:
    listed: list[Any] = []  # widgets_values: /object_info widget order, a control value after each seed
    for spec in schema.widgets:
        listed.append(values[spec.name])
        if spec.options.get("control_after_generate"):
            listed.append(CONTROL_AFTER_GENERATE)
    properties: dict[str, Any] = {
        "Node name for S&R": node.type,
        "cnr_id": CORE_CNR_ID if schema.core else PACK_CNR_ID,
    }
    if node.models:
        properties["models"] = node.models
    data: dict[str, Any] = {
        "id": node_id,
        "type": node.type,
        "pos": list(node.pos),
        "size": list(node.size or default_size(schema)),
        "flags": {},
        "order": 0,  # set once every node is known
        "mode": 0,
        "inputs": [ui_input(spec, links.by_input.get((node.key, spec.name))) for spec in schema.sockets]
        + [ui_input(spec, None) for spec in schema.widgets],
        "outputs": [
            {"localized_name": name, "name": name, "type": kind, "links": links.by_output.get((node.key, slot), [])}
            for slot, (name, kind) in enumerate(schema.outputs)
        ],
    }
    if node.title and node.title != schema.display_name:  # the frontend saves only non-default titles
        data["title"] = node.title
    data["properties"] = properties
    data["widgets_values"] = listed
    return data


def note_node(workflow: Workflow, node_id: int) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": NOTE_TYPE,
        "pos": list(workflow.note_pos),
        "size": list(workflow.note_size),
        "flags": {},
        "order": 0,
        "mode": 0,
        "inputs": [],
        "outputs": [],
        "title": "Read me",
        "properties": {},
        "widgets_values": [workflow.note],
        "color": NOTE_COLOR,
        "bgcolor": NOTE_BGCOLOR,
    }


def api_node(
    node: Node, schema: NodeSchema, values: dict[str, Any], schemas: dict[str, NodeSchema], ids: dict[str, int]
) -> dict[str, Any]:
    """An API-format node: literal widget values and ``[source id, output index]`` links, in /object_info order."""
    inputs: dict[str, Any] = dict(values)
    for name, (source_key, output_name) in node.links.items():
        inputs[name] = [str(ids[source_key]), schemas[source_key].output_index(output_name)]
    return {
        "inputs": {spec.name: inputs[spec.name] for spec in schema.inputs if spec.name in inputs},
        "class_type": node.type,
        "_meta": {"title": node.title or schema.display_name},
    }


@dataclass
class Built:
    ui: dict[str, Any]
    api: dict[str, Any]


def build(workflow: Workflow, object_info: dict[str, Any]) -> Built:
    """Both formats of one workflow. Node ids follow the definition order (the Note comes last, UI format only)."""
    keys = [node.key for node in workflow.nodes]
    if len(set(keys)) != len(keys):
        raise BuildError(f"{workflow.name}: duplicate node keys")
    missing_types = sorted({node.type for node in workflow.nodes if node.type not in object_info})
    if missing_types:
        raise BuildError(f"{workflow.name}: node types not served by the server: {missing_types}")
    for group in workflow.groups:
        unknown = sorted(set(group.members) - set(keys))
        if unknown:
            raise BuildError(f"{workflow.name}: group {group.title!r} names unknown nodes {unknown}")
    ids = {key: index + 1 for index, key in enumerate(keys)}
    schemas = {node.key: parse_schema(node.type, object_info[node.type]) for node in workflow.nodes}
    for node in workflow.nodes:
        check_node(workflow, node, schemas[node.key])
    links = build_links(workflow, schemas, ids)

    ui_nodes: list[dict[str, Any]] = []
    api: dict[str, Any] = {}
    for node in workflow.nodes:
        schema = schemas[node.key]
        values = widget_values(workflow, node, schema)
        ui_nodes.append(ui_node(node, ids[node.key], schema, values, links))
        api[str(ids[node.key])] = api_node(node, schema, values, schemas, ids)
    note_id = len(ui_nodes) + 1
    ui_nodes.append(note_node(workflow, note_id))
    order = execution_order(ui_nodes, links.rows)
    for data in ui_nodes:
        data["order"] = order[data["id"]]

    sizes = {node.key: tuple(data["size"]) for node, data in zip(workflow.nodes, ui_nodes)}
    groups = [
        {
            "id": index + 1,
            "title": group.title,
            "bounding": group_bounds([(n.pos, sizes[n.key]) for n in workflow.nodes if n.key in group.members]),
            "color": GROUP_COLOR,
            "font_size": GROUP_FONT_SIZE,
            "flags": {},
        }
        for index, group in enumerate(workflow.groups)
    ]
    ui = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://github.com/comfyui-soda/comfyui-soda/{workflow.name}")),
        "revision": 0,
        "last_node_id": note_id,
        "last_link_id": len(links.rows),
        "nodes": ui_nodes,
        "links": links.rows,
        "groups": groups,
        "config": {},
        # No "ds" (view offset and zoom): the editor fits the whole graph into view on load.
        "extra": {"workflowRendererVersion": "LG"},
        "version": 0.4,
    }
    return Built(ui, api)


def execution_order(ui_nodes: list[dict[str, Any]], links: list[list[Any]]) -> dict[int, int]:
    """Node id -> the frontend's ``order``: litegraph's computeExecutionOrder, i.e. Kahn's algorithm with a FIFO queue
    that starts with every node without linked inputs (file order) and follows each output's links in turn."""
    by_id = {link[0]: link for link in links}
    remaining = {node["id"]: sum(1 for i in node["inputs"] if i["link"] is not None) for node in ui_nodes}
    queue = [node["id"] for node in ui_nodes if remaining[node["id"]] == 0]
    outputs = {node["id"]: node["outputs"] for node in ui_nodes}
    order: dict[int, int] = {}
    while queue:
        node_id = queue.pop(0)
        order[node_id] = len(order)
        for output in outputs[node_id]:
            for link_id in output["links"] or []:
                target = by_id[link_id][3]
                remaining[target] -= 1
                if remaining[target] == 0:
                    queue.append(target)
    if len(order) != len(ui_nodes):
        raise BuildError(f"the links form a cycle among nodes {sorted(set(remaining) - set(order))}")
    return order


def group_bounds(members: list[tuple[tuple[float, float], tuple[float, float]]]) -> list[float]:
    left = min(pos[0] for pos, _ in members) - GROUP_PADDING
    top = min(pos[1] for pos, _ in members) - NODE_TITLE_HEIGHT - GROUP_TITLE_HEIGHT - GROUP_PADDING // 2
    right = max(pos[0] + size[0] for pos, size in members) + GROUP_PADDING
    bottom = max(pos[1] + size[1] for pos, size in members) + GROUP_PADDING
    return [left, top, right - left, bottom - top]


# ----------------------------------------------------------------------------------------------------- output


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_all(object_info: dict[str, Any]) -> dict[Path, str]:
    """Every generated file (absolute path) and its text."""
    files: dict[Path, str] = {}
    for make in WORKFLOWS:
        workflow = make()
        built = build(workflow, object_info)
        files[WORKFLOWS_DIR / f"{workflow.name}.json"] = dump(built.ui)
        files[API_DIR / f"{workflow.name}.json"] = dump(built.api)
    return files


def fetch_object_info(url: str | None) -> dict[str, Any]:
    if url:
        with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=120) as response:
            return dict(json.loads(response.read()))
    with tempfile.TemporaryDirectory(prefix="soda-build-workflows-") as tmp:
        base_dir = prepare_base_dir(Path(tmp))
        with ComfyServer(base_dir=base_dir) as server:
            return server.object_info()


def check(files: dict[Path, str]) -> list[str]:
    problems: list[str] = []
    for path, text in files.items():
        rel = path.relative_to(ROOT)
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        current = path.read_text()
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), f"{rel} (on disk)", f"{rel} (generated)", lineterm=""
            )
            problems.append(f"{rel}: differs from the generated file\n" + "\n".join(list(diff)[:40]))
    for folder in (WORKFLOWS_DIR, API_DIR):
        for path in sorted(folder.glob("*.json")):
            if path not in files:
                problems.append(
                    f"{path.relative_to(ROOT)}: not generated by scripts/build_workflows.py (define it there)"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed files differ from the generated")
    parser.add_argument("--url", help="a running ComfyUI server (default: start a headless one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        files = render_all(fetch_object_info(args.url))
    except (BuildError, ComfyServerError, OSError) as error:
        print(f"build_workflows: {error}", file=sys.stderr)
        return 1
    if args.check:
        problems = check(files)
        if problems:
            print("\n\n".join(problems), file=sys.stderr)
            print("\nRun `.venv/bin/python scripts/build_workflows.py` and commit the result.", file=sys.stderr)
            return 1
        print(f"build_workflows --check: {len(files)} files in sync")
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            print(f"unchanged {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
