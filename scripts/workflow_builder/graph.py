"""The graph model: nodes, groups and workflows as defined, their links (type-checked against ``/object_info``),
widget values, LiteGraph geometry (default sizes, group bounds) and the frontend's execution order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .schema import BuildError, NodeSchema, default_value


MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")

# LiteGraph geometry, for group bounds and default node sizes (litegraph's computeSize).
NODE_TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
GROUP_FONT_SIZE = 24
GROUP_TITLE_HEIGHT = 34  # font_size * 1.4
GROUP_PADDING = 20
GROUP_COLOR = "#3f789e"
DEFAULT_WIDTH = 320


STACK_GAP = 50  # vertical gap between stacked nodes of one column (room for the next node's title bar)


@dataclass
class Node:
    """One node. ``links`` maps an input name to ``(source node key, source output name)``; ``widgets`` maps a widget
    input name to its value (inputs left out take their /object_info default).

    ``pos`` may leave y as None: the node then sits below the previous node with the same x (``STACK_GAP`` apart),
    or at y = 0 as the first of its column. ``size`` (or its height) may be None: the size litegraph computes; a
    given height below that is raised to it (an input added to a node type must not make the editor resize it)."""

    key: str
    type: str
    pos: tuple[float, float | None]
    title: str | None = None
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    size: tuple[float, float | None] | None = None
    models: list[dict[str, str]] | None = None  # properties.models: the frontend offers these downloads if missing


@dataclass
class Group:
    title: str
    members: list[str]  # node keys; the bounding box is computed around them


@dataclass
class Workflow:
    name: str  # the file stem: example_workflows/<name>.json, .jpg, api/<name>.json
    nodes: list[Node]
    groups: list[Group]
    note: str
    note_pos: tuple[float, float]
    note_size: tuple[float, float]
    description: str = ""  # one line: the Note's first line and the UI file's extra.description
    thumbnail_from: str | None = None  # title of the SaveImage that gives the thumbnail; None: a picture of the graph


def default_size(schema: NodeSchema) -> tuple[float, float]:
    """Litegraph's computeSize height: socket rows, one row per widget (control widgets included), padding."""
    widgets = sum(2 if spec.options.get("control_after_generate") else 1 for spec in schema.widgets)
    rows = max(len(schema.sockets), len(schema.outputs), 1 if widgets else 0)
    return DEFAULT_WIDTH, rows * SLOT_HEIGHT + widgets * WIDGET_HEIGHT + (14 if widgets else 6)


def geometry(nodes: list[Node], schemas: dict[str, NodeSchema]) -> dict[str, tuple[list[float], list[float]]]:
    """Node key -> (pos, size) with every None resolved: default sizes from the schema, stacked columns."""
    placed: dict[str, tuple[list[float], list[float]]] = {}
    column_bottom: dict[float, float] = {}
    for node in nodes:
        width, height = default_size(schemas[node.key])
        if node.size is not None:  # never below litegraph's computeSize: the editor would grow the node on load
            width, height = node.size[0], max(height, node.size[1] or 0)
        x, y = node.pos
        if y is None:
            y = column_bottom[x] + STACK_GAP if x in column_bottom else 0
        column_bottom[x] = max(column_bottom.get(x, y + height), y + height)
        placed[node.key] = ([x, y], [width, height])
    return placed


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


def group_bounds(members: list[tuple[list[float], list[float]]]) -> list[float]:
    left = min(pos[0] for pos, _ in members) - GROUP_PADDING
    top = min(pos[1] for pos, _ in members) - NODE_TITLE_HEIGHT - GROUP_TITLE_HEIGHT - GROUP_PADDING // 2
    right = max(pos[0] + size[0] for pos, size in members) + GROUP_PADDING
    bottom = max(pos[1] + size[1] for pos, size in members) + GROUP_PADDING
    return [left, top, right - left, bottom - top]
