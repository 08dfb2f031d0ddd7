"""Running soak prompts on a ComfyServer and reading what they did (``test_soak.py``, ``test_soak_quick.py``)."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import torch
from safetensors.torch import load_file

from e2e.conftest import ComfyServer, ComfyServerError, comfy_server_lib
from e2e.soak_prompts import BAD_INPUTS, Spec, build_prompt, sampler_chains


RUN_TIMEOUT_S = 900.0
TEXT_EVENT = 3  # ComfyUI's BinaryEventTypes.TEXT: a node's progress text (SODA's run messages)
PLANNED, PROFILING = "planned", "profiling this run at full compute"
PLAN_LINE = "x planned"  # "SODA: 2.00x planned, 3 of 8 steps full": not the measured line after the run


@dataclass
class Outcome:
    """One prompt as it ran: how it ended, its latent files by SaveLatent id, progress texts by node id."""

    name: str
    spec: Spec
    seed: int
    prompt: dict[str, Any]
    status: str  # "success", "interrupted", "error" (the run failed) or "refused" (when queued)
    latents: dict[str, Path]
    texts: dict[str, list[str]]
    error: str = ""  # the refusal or the failed node's exception message


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def profile_files(base_dir: Path) -> dict[str, bytes]:
    """Every stored profile under models/soda_profiles: relative path -> content."""
    root = base_dir / "models" / "soda_profiles"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_latent(path: Path) -> torch.Tensor:
    return load_file(path)["latent_tensor"]


async def _watch(
    server: ComfyServer, prompt: dict[str, Any], interrupt: bool, may_fail: bool
) -> tuple[str, str, dict[str, list[str]], str]:
    """Queue ``prompt`` with a websocket open; (prompt id, how it ended, progress texts by node id, error). With
    ``interrupt``, POST /interrupt for it on its first progress message (its sampler has started); with
    ``may_fail``, an execution error ends it as "error" (else it raises)."""
    client_id, texts = uuid.uuid4().hex, {}
    deadline = time.monotonic() + RUN_TIMEOUT_S
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", max_msg_size=0) as ws,
    ):
        prompt_id = server.queue_prompt(prompt, client_id=client_id)
        interrupted = False
        while time.monotonic() < deadline:
            try:
                message = await ws.receive(timeout=5.0)
            except asyncio.TimeoutError:
                if not server.running:
                    raise ComfyServerError(f"ComfyUI exited while {prompt_id} ran:\n{server.log_tail()}") from None
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                if struct.unpack(">I", message.data[:4])[0] == TEXT_EVENT:
                    size = struct.unpack(">I", message.data[4:8])[0]
                    node = message.data[8 : 8 + size].decode()
                    texts.setdefault(node, []).append(message.data[8 + size :].decode())
                continue
            if message.type != aiohttp.WSMsgType.TEXT:
                raise ComfyServerError(f"websocket closed ({message.type.name}) while prompt {prompt_id} ran")
            event = json.loads(message.data)
            kind, data = event.get("type"), event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if kind == "progress" and interrupt and not interrupted:
                async with session.post(f"{server.url}/interrupt", json={"prompt_id": prompt_id}) as answer:
                    assert answer.status == 200, f"POST /interrupt answered {answer.status}"
                interrupted = True
            elif kind in ("execution_success", "execution_interrupted"):
                return prompt_id, kind.removeprefix("execution_"), texts, ""
            elif kind == "execution_error" and may_fail:
                return prompt_id, "error", texts, str(data.get("exception_message", ""))
            elif kind == "execution_error":
                raise ComfyServerError(f"prompt {prompt_id} failed: {comfy_server_lib.format_execution_error(data)}")
        raise ComfyServerError(f"prompt {prompt_id} did not finish within {RUN_TIMEOUT_S:.0f} s")


def finished_entry(server: ComfyServer, prompt_id: str) -> dict[str, Any]:
    """The prompt's history entry (written just after its last websocket message)."""
    deadline = time.monotonic() + 60.0
    while (entry := server.history(prompt_id)) is None:
        assert time.monotonic() < deadline, f"prompt {prompt_id} finished but has no history entry"
        time.sleep(0.1)
    return entry


def run(server: ComfyServer, name: str, spec: Spec, seed: int, prefix: str) -> Outcome:
    """Run one prompt of ``spec`` to its end (an interrupted or failed one too); its outputs read from the history.
    A prompt with a bad input must be refused when queued: then nothing runs and it has no history."""
    prompt = build_prompt(spec, seed, f"{prefix}/{name}")
    if spec.bad:
        try:
            prompt_id = server.queue_prompt(prompt)
        except ComfyServerError as refusal:
            return Outcome(name, spec, seed, prompt, "refused", {}, {}, str(refusal))
        ended = (finished_entry(server, prompt_id).get("status") or {}).get("status_str")  # it was queued: it ran
        return Outcome(name, spec, seed, prompt, f"queued, ended as {ended}", {}, {}, "")
    prompt_id, status, texts, error = asyncio.run(_watch(server, prompt, spec.interrupt, spec.fails))
    entry = finished_entry(server, prompt_id)
    if status == "success":
        comfy_server_lib.check_history_status(prompt_id, entry)
    latents = {}
    for node_id, node_output in (entry.get("outputs") or {}).items():
        for item in node_output.get("latents", []):
            latents[node_id] = server.base_dir / "output" / item["subfolder"] / item["filename"]
    return Outcome(name, spec, seed, prompt, status, latents, texts, error)


def soda_texts(outcome: Outcome) -> list[tuple[str, list[str]]]:
    """(KSampler id, its progress texts) for every chain of the prompt whose model SODA Accelerate patches."""
    return [(sampler, outcome.texts.get(sampler, [])) for sampler, _, soda in sampler_chains(outcome.prompt) if soda]


def planned(outcome: Outcome) -> list[list[str]]:
    """The plan messages of each SODA sampler of a prompt ("SODA: 2.00x planned, 3 of 8 steps full")."""
    return [[text for text in texts if PLAN_LINE in text] for _, texts in soda_texts(outcome)]


def refusal_problem(outcome: Outcome, output_dir: Path) -> str:
    """What is wrong with how a prompt with a bad input ended ("" when it was refused, naming the input and value,
    and saved nothing)."""
    class_type, name, value = BAD_INPUTS[outcome.spec.bad]
    said = outcome.error.lower()
    if outcome.status != "refused":
        return f"{outcome.name} ({class_type} {name}={value!r}) was queued and ended as {outcome.status}"
    if name not in said or str(value).lower() not in said:
        return f"{outcome.name}: the refusal does not name {name}={value!r}: {outcome.error}"
    if list(output_dir.glob(f"{outcome.name}_*")):
        return f"{outcome.name} saved output"
    return ""
