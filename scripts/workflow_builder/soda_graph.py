"""The SODA part every shared workflow carries (groups 2-4: profile -> plan -> patch, full-compute and SODA samplers,
decode and save, compare), and :func:`soda_workflow`, which joins it to one model family's inputs (group 1).

A new family only describes its group 1 in a :class:`ModelInputs` (loaders, prompts, empty latent, and which of their
outputs feed the sampler and the decode); the node titles scripts/demo.py and the tests look up come from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .graph import Group, Node, Workflow


SAMPLING = {"seed": 0, "steps": 20, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
NOTE_POS, NOTE_SIZE = (-560, 0), (520, 900)  # the Note, left of group 1
SODA_OUTPUT_TITLE = "Save SODA"  # the SaveImage of the accelerated result (thumbnails use it)


@dataclass
class ModelInputs:
    """One family's group 1 and the sockets it feeds into the shared SODA graph (``(node key, output name)``)."""

    nodes: list[Node]
    model: tuple[str, str]
    positive: tuple[str, str]
    negative: tuple[str, str]
    latent: tuple[str, str]
    decoder: str  # node type that turns the samplers' LATENT into IMAGE
    decoder_links: dict[str, tuple[str, str]]
    decoder_widgets: dict[str, Any] = field(default_factory=dict)
    profile_widgets: dict[str, Any] = field(default_factory=dict)  # e.g. a higher memory bound for large models


def model_files_text(nodes: list[Node]) -> str:
    """The "files this workflow needs" paragraph of a Note, from the nodes' declared downloads (empty if none)."""
    files = [f"  models/{m['directory']}/{m['name']}" for node in nodes for m in node.models or []]
    if not files:
        return ""
    return "Files this workflow needs (ComfyUI offers the downloads when they are missing):\n" + "\n".join(files)


def soda_workflow(
    name: str, description: str, note: str, inputs: ModelInputs, thumbnail_from: str | None = None
) -> Workflow:
    """A shared workflow: the family's group 1, then groups 2-4. The Note starts with the one-line description and the
    files to download; ``thumbnail_from`` names the SaveImage whose output is the thumbnail (None: a graph picture)."""
    nodes = [
        *inputs.nodes,
        *soda_and_compare_nodes(
            name,
            inputs.model,
            inputs.positive,
            inputs.negative,
            inputs.latent,
            decoder=inputs.decoder,
            decoder_links=inputs.decoder_links,
            profile_widgets=inputs.profile_widgets,
            decoder_widgets=inputs.decoder_widgets,
        ),
    ]
    groups = [Group("1. Model and prompt", [node.key for node in inputs.nodes]), *SODA_GROUPS]
    full_note = "\n\n".join(part for part in (description, model_files_text(inputs.nodes), note) if part)
    return Workflow(name, nodes, groups, full_note, NOTE_POS, NOTE_SIZE, description, thumbnail_from)


def soda_and_compare_nodes(
    prefix: str,
    model: tuple[str, str],
    positive: tuple[str, str],
    negative: tuple[str, str],
    latent: tuple[str, str],
    decoder: str,
    decoder_links: dict[str, tuple[str, str]],
    profile_widgets: dict[str, Any] | None = None,
    decoder_widgets: dict[str, Any] | None = None,
) -> list[Node]:
    """Groups 2-4, shared by both workflows: profile -> plan -> patch, two samplers, decode, save, compare."""
    sampler_links = {"positive": positive, "negative": negative, "latent_image": latent}
    decode_out = "IMAGE"
    decoder_size = (320, 78 + 24 * max(len(decoder_widgets or {}) - 1, 0))  # one more widget row per widget
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
            widgets=dict(decoder_widgets or {}),
            size=decoder_size,
        ),
        Node(
            "decode_soda",
            decoder,
            (1240, 770),
            title="Decode: SODA",
            links={"samples": ("soda_sampler", "LATENT"), **decoder_links},
            widgets=dict(decoder_widgets or {}),
            size=decoder_size,
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
            title=SODA_OUTPUT_TITLE,
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
