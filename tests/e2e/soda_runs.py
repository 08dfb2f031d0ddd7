"""Helpers for end-to-end runs of the one-node path: queue a workflow while listening for the progress text the
server sends to the executing node, read SODA's run messages from the server log, and edit API workflows (a
full-compute twin without SODA Accelerate, saved latents)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp


PROGRESS_TEXT_EVENT = 3  # ComfyUI's BinaryEventTypes.TEXT: node id length, node id, text
PROFILING = re.compile(r"SODA: profiling this run at full compute; next runs (?P<speedup>[\d.]+)x")
PROFILED = re.compile(
    r"SODA: profiled this run at full compute; next runs (?P<speedup>[\d.]+)x \(profile (?P<file>\S+)\)"
)
ACCELERATED = re.compile(
    r"SODA: (?P<flops>[\d.]+)x FLOPs, measured (?P<measured>[\d.]+)x, (?P<full>\d+) of (?P<steps>\d+) steps full"
)


@dataclass
class Run:
    history: dict[str, Any]
    texts: dict[str, list[str]]  # node id -> progress texts in the order the server sent them
    log: str  # what the server logged while the prompt ran

    def lines(self, pattern: re.Pattern[str]) -> list[re.Match[str]]:
        return [m for m in map(pattern.search, self.log.splitlines()) if m]


def run(server: Any, workflow: dict[str, Any], timeout: float = 900.0) -> Run:
    """Queue ``workflow`` and wait for it, collecting every progress text; raises if the prompt fails."""
    start = len(server.log_text())
    prompt_id, texts = asyncio.run(_run(server, workflow, timeout))
    history = server.wait(prompt_id, timeout=60.0)
    time.sleep(0.5)  # the log is written by another process: let its last lines arrive
    return Run(history, texts, server.log_text()[start:])


async def _run(server: Any, workflow: dict[str, Any], timeout: float) -> tuple[str, dict[str, list[str]]]:
    client_id = uuid.uuid4().hex
    texts: dict[str, list[str]] = {}
    deadline = time.monotonic() + timeout
    url = f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
        prompt_id = server.queue_prompt(workflow, client_id=client_id)
        while time.monotonic() < deadline:
            try:
                message = await ws.receive(timeout=5.0)
            except asyncio.TimeoutError:
                if server.history(prompt_id) is not None:
                    return prompt_id, texts
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                data = bytes(message.data)
                if struct.unpack(">I", data[:4])[0] == PROGRESS_TEXT_EVENT:
                    (length,) = struct.unpack(">I", data[4:8])
                    node = data[8 : 8 + length].decode()
                    texts.setdefault(node, []).append(data[8 + length :].decode())
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"websocket closed ({message.type.name}) while prompt {prompt_id} ran")
            event = json.loads(message.data)
            data = event.get("data") or {}
            if data.get("prompt_id") == prompt_id and event.get("type") in (
                "execution_success",
                "execution_error",
                "execution_interrupted",
            ):
                return prompt_id, texts
            if event.get("type") == "executing" and data.get("prompt_id") == prompt_id and data.get("node") is None:
                return prompt_id, texts
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")


def nodes_of(workflow: dict[str, Any], class_type: str) -> list[str]:
    return [key for key, node in workflow.items() if node["class_type"] == class_type]


def without_soda(workflow: dict[str, Any]) -> dict[str, Any]:
    """The full-compute twin: every SODA Accelerate removed, its consumers linked to the model it was given."""
    twin = copy.deepcopy(workflow)
    for key in nodes_of(twin, "SODAAccelerate"):
        source = twin.pop(key)["inputs"]["model"]
        for node in twin.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and str(value[0]) == key:
                    node["inputs"][name] = list(source)
    for node in twin.values():
        if "filename_prefix" in node["inputs"]:
            node["inputs"]["filename_prefix"] = f"twin/{node['inputs']['filename_prefix']}"
    return twin


def save_latent(workflow: dict[str, Any], sampler: str, prefix: str) -> str:
    """Add a SaveLatent of ``sampler``'s LATENT; returns its node id."""
    key = str(max(int(k) for k in workflow) + 1)
    workflow[key] = {
        "class_type": "SaveLatent",
        "inputs": {"samples": [sampler, 0], "filename_prefix": prefix},
        "_meta": {"title": "Save latent (test)"},
    }
    return key


def output_files(server: Any, history: dict[str, Any], node: str, kind: str) -> list[Path]:
    """The files a saving node wrote (``kind``: "images", "latents", ...)."""
    items = ((history.get("outputs") or {}).get(node) or {}).get(kind) or []
    return [
        server.base_dir / item.get("type", "output") / item.get("subfolder", "") / item["filename"] for item in items
    ]


def stored_profiles(server: Any, folder: str = "auto") -> list[Path]:
    return sorted((server.base_dir / "models" / "soda_profiles" / folder).glob("*/*.safetensors"))
