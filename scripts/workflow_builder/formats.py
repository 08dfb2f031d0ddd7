"""The two file formats of a workflow: the UI (LiteGraph) format the editor loads and the API format that scripts
queue with ``POST /prompt``. ``build`` checks a definition against ``/object_info`` and writes both."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from .graph import (
    GROUP_COLOR,
    GROUP_FONT_SIZE,
    Links,
    Node,
    Workflow,
    build_links,
    check_node,
    execution_order,
    geometry,
    group_bounds,
    widget_values,
)
from .schema import BuildError, InputSpec, NodeSchema, parse_schema


PACK_CNR_ID = "comfyui-soda"  # Comfy Registry id (pyproject [project].name): lets ComfyUI-Manager offer the install
CORE_CNR_ID = "comfy-core"
CONTROL_AFTER_GENERATE = "fixed"  # reproducible by default: both samplers and the profile share one seed

# Frontend-only node types (not in /object_info, not in the API format).
NOTE_TYPE = "Note"
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"


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


def ui_node(
    node: Node,
    node_id: int,
    schema: NodeSchema,
    values: dict[str, Any],
    links: Links,
    place: tuple[list[float], list[float]],
) -> dict[str, Any]:
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
        "pos": place[0],
        "size": place[1],
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
    if not workflow.description.strip() or "\n" in workflow.description:
        raise BuildError(f"{workflow.name}: give the workflow a one-line description (Workflow.description)")
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
    placed = geometry(workflow.nodes, schemas)

    ui_nodes: list[dict[str, Any]] = []
    api: dict[str, Any] = {}
    for node in workflow.nodes:
        schema = schemas[node.key]
        values = widget_values(workflow, node, schema)
        ui_nodes.append(ui_node(node, ids[node.key], schema, values, links, placed[node.key]))
        api[str(ids[node.key])] = api_node(node, schema, values, schemas, ids)
    note_id = len(ui_nodes) + 1
    ui_nodes.append(note_node(workflow, note_id))
    order = execution_order(ui_nodes, links.rows)
    for data in ui_nodes:
        data["order"] = order[data["id"]]

    groups = [
        {
            "id": index + 1,
            "title": group.title,
            "bounding": group_bounds([placed[key] for key in keys if key in group.members]),
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
        "extra": {"description": workflow.description, "workflowRendererVersion": "LG"},
        "version": 0.4,
    }
    return Built(ui, api)


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
