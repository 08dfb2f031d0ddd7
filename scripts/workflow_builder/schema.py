"""The ``/object_info`` side: fetch it from a ComfyUI server and parse the input/output schema of each node type."""

from __future__ import annotations

import json
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfy_server import ComfyServer, prepare_base_dir


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


class BuildError(RuntimeError):
    pass


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
    raise BuildError(
        f"{schema.type}.{spec.name} has no default: give it a value in scripts/workflow_builder/definitions.py"
    )


def fetch_object_info(url: str | None) -> dict[str, Any]:
    if url:
        with urllib.request.urlopen(url.rstrip("/") + "/object_info", timeout=120) as response:
            return dict(json.loads(response.read()))
    with tempfile.TemporaryDirectory(prefix="soda-build-workflows-") as tmp:
        base_dir = prepare_base_dir(Path(tmp))
        with ComfyServer(base_dir=base_dir) as server:
            return server.object_info()
