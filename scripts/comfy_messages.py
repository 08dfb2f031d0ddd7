"""ComfyUI's error messages in readable text (a rejected prompt, a failed or interrupted execution), for the server
helper, the demo and the tests."""

from __future__ import annotations

import json
from typing import Any


class ComfyServerError(RuntimeError):
    """The server failed to start, rejected a prompt, or a prompt failed while executing."""


def format_node_errors(body: dict[str, Any]) -> str:
    """Readable text from the JSON body of a rejected POST /prompt ({"error": ..., "node_errors": ...})."""
    lines: list[str] = []
    error = body.get("error")
    if isinstance(error, dict):
        lines.append(f"{error.get('message', '')}: {error.get('details', '')}".strip(": "))
    elif error:
        lines.append(str(error))
    for node_id, node_error in (body.get("node_errors") or {}).items():
        class_type = node_error.get("class_type", "?")
        for reason in node_error.get("errors", []):
            lines.append(f"node {node_id} ({class_type}): {reason.get('message', '')}: {reason.get('details', '')}")
    return "\n".join(lines) or json.dumps(body)


def format_execution_error(data: dict[str, Any]) -> str:
    """Readable text from an ``execution_error`` message (websocket or history status messages)."""
    traceback_lines = data.get("traceback") or []
    tail = "".join(traceback_lines[-6:]) if isinstance(traceback_lines, list) else str(traceback_lines)
    return (
        f"node {data.get('node_id')} ({data.get('node_type')}) raised {data.get('exception_type')}: "
        f"{data.get('exception_message', '').strip()}\n{tail}"
    ).rstrip()


def check_history_status(prompt_id: str, entry: dict[str, Any]) -> None:
    """Raise with the execution error if a history entry records a failed or interrupted prompt."""
    status = entry.get("status") or {}
    if status.get("status_str") == "success" and status.get("completed", True):
        return
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            raise ComfyServerError(f"prompt {prompt_id} failed: {format_execution_error(data)}")
        if kind == "execution_interrupted":
            raise ComfyServerError(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
    raise ComfyServerError(f"prompt {prompt_id} did not succeed: status {json.dumps(status)[:2000]}")
