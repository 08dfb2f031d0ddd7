"""Run the real ComfyUI server (headless, CPU) for the demo and the end-to-end tests.

Library: ``with ComfyServer(base_dir=...) as server: history, node_seconds = server.run_timed(api_workflow)``.
CLI: ``python scripts/comfy_server.py serve [--base-dir DIR] [--port N]`` (until Ctrl-C or SIGTERM, which stop the
ComfyUI child too), or ``... run WORKFLOW_API.json [--timeout S]`` (run one API-format workflow and print per-node wall
seconds); the options may also come before the subcommand.

The ComfyUI tree is ``$COMFYUI_DIR``, else the path ``scripts/setup_env.sh`` recorded in the environment
(``comfy_env.comfyui_dir``); the interpreter is ``$COMFYUI_PYTHON``, else the virtual environment this script runs in,
else the repository's ``.venv/bin/python``. Only the stdlib and aiohttp are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import aiohttp
from comfy_messages import ComfyServerError, check_history_status, format_execution_error, format_node_errors

from comfy_env import ROOT, comfyui_dir  # scripts/ is on sys.path for every caller


logger = logging.getLogger("comfy_server")
PACK_DIR_NAME = "comfyui-soda"
START_TIMEOUT_S = 180.0
LOG_TAIL_LINES = 60


def venv_python() -> Path:
    """The interpreter that runs ComfyUI: $COMFYUI_PYTHON, else this virtual environment's, else the repository's
    .venv (each environment is set up for one ComfyUI tree, see scripts/setup_env.sh)."""
    if os.environ.get("COMFYUI_PYTHON"):
        return Path(os.environ["COMFYUI_PYTHON"])
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "bin" / "python"
    return ROOT / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_base_dir(base_dir: Path, pack_root: Path = ROOT) -> Path:
    """Create a ComfyUI --base-directory holding custom_nodes/comfyui-soda (a symlink to ``pack_root``)."""
    base_dir = base_dir.resolve()
    for sub in ("custom_nodes", "models", "output", "input"):
        (base_dir / sub).mkdir(parents=True, exist_ok=True)
    link = base_dir / "custom_nodes" / PACK_DIR_NAME
    if link.is_symlink() and link.resolve() != pack_root.resolve():
        link.unlink()
    if not link.exists():
        link.symlink_to(pack_root.resolve(), target_is_directory=True)
    return base_dir


class ComfyServer:
    """A ComfyUI 0.3.75 server process started with ``--cpu`` on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        base_dir: Path | str,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT_S,
        extra_args: list[str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args or [])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "comfyui.log"
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __enter__(self) -> ComfyServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        tree, python = comfyui_dir(), venv_python()
        if not (tree / "main.py").is_file():
            raise ComfyServerError(f"No ComfyUI tree at {tree} (no main.py). Run `make setup` or set COMFYUI_DIR.")
        if not python.exists():
            raise ComfyServerError(f"No Python at {python}. Run `make setup` or set COMFYUI_PYTHON.")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--base-directory", str(self.base_dir), "--database-url", "sqlite:///:memory:",
            *self.extra_args,
        ]  # fmt: skip
        logger.info("starting ComfyUI on %s (tree %s, log %s)", self.url, tree, self.log_path)
        self._log_file = self.log_path.open("wb")
        started = time.monotonic()
        self._process = subprocess.Popen(
            command,
            cwd=tree,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a Ctrl-C in the terminal reaches only us; stop() ends the server
        )
        try:
            self._wait_until_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("ComfyUI ready on %s after %.1f s", self.url, self.startup_seconds)

    def _wait_until_ready(self, started: float) -> None:
        while True:
            self._check_alive("while starting")
            try:
                self.get_json("/system_stats", timeout=2.0)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - started > self.start_timeout:
                raise ComfyServerError(
                    f"ComfyUI did not answer {self.url}/system_stats within {self.start_timeout:.0f} s.\n"
                    f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s); safe to call more than once."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                logger.warning("ComfyUI (pid %d) ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait(timeout=10)
            logger.info("ComfyUI stopped (pid %d)", process.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def pid(self) -> int | None:
        """The ComfyUI process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _check_alive(self, doing: str) -> None:
        if self._process is None:
            raise ComfyServerError("ComfyUI is not running (use ComfyServer as a context manager).")
        code = self._process.poll()
        if code is not None:
            raise ComfyServerError(
                f"ComfyUI exited with status {code} {doing}.\n--- last lines of {self.log_path} ---\n{self.log_tail()}"
            )

    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        return self._request("GET", path, timeout=timeout)

    def system_stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.get_json("/system_stats"))

    def object_info(self) -> dict[str, Any]:
        """GET /object_info: node id -> V1 node info (input, output, category, description, python_module ...)."""
        return cast(dict[str, Any], self.get_json("/object_info", timeout=120.0))

    def queue_prompt(self, api_workflow: dict[str, Any], client_id: str | None = None) -> str:
        """POST /prompt; returns the prompt id. Any validation error (even one the server tolerates) raises."""
        self._check_alive("before queueing a prompt")
        payload: dict[str, Any] = {"prompt": api_workflow}
        if client_id is not None:
            payload["client_id"] = client_id
        try:
            answer = self._request("POST", "/prompt", payload)
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                detail = format_node_errors(json.loads(text))
            except (json.JSONDecodeError, AttributeError):
                detail = text
            raise ComfyServerError(f"ComfyUI rejected the prompt (HTTP {error.code}):\n{detail}") from None
        prompt_id = str(answer["prompt_id"])
        if answer.get("node_errors"):
            # ComfyUI 0.3.75 queues a prompt when at least one output node validates and silently drops the others.
            self._request("POST", "/queue", {"delete": [prompt_id]})
            raise ComfyServerError(f"ComfyUI dropped invalid outputs of the prompt:\n{format_node_errors(answer)}")
        logger.info("queued prompt %s (%d nodes)", prompt_id, len(api_workflow))
        return prompt_id

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished history entry of ``prompt_id``, or None while it is pending or running."""
        answer = self.get_json(f"/history/{prompt_id}")
        return cast(dict[str, Any] | None, answer.get(prompt_id) if answer else None)

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.25) -> dict[str, Any]:
        """Poll /history/<id> until the prompt finished; returns the history entry, raises if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(f"while prompt {prompt_id} ran")
            entry = self.history(prompt_id)
            if entry is not None:
                check_history_status(prompt_id, entry)
                return entry
            if time.monotonic() > deadline:
                raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
            time.sleep(poll)

    def run(self, api_workflow: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        return self.wait(self.queue_prompt(api_workflow), timeout)

    def run_timed(
        self, api_workflow: dict[str, Any], timeout: float = 600.0
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Run a workflow and time it from the websocket: (history entry, {node id: wall seconds}).

        A node's time runs from its ``executing`` message to the next ``executing`` message (or to
        ``execution_success``). Nodes served from ComfyUI's cache send no ``executing`` and are absent.
        """
        prompt_id, node_seconds = asyncio.run(self._run_timed(api_workflow, timeout))
        return self.wait(prompt_id, timeout=60.0), node_seconds

    async def _run_timed(self, api_workflow: dict[str, Any], timeout: float) -> tuple[str, dict[str, float]]:
        client_id = uuid.uuid4().hex
        node_seconds: dict[str, float] = {}
        current: tuple[str, float] | None = None
        deadline = time.monotonic() + timeout

        def close_current(now: float) -> None:
            nonlocal current
            if current is not None:
                node_seconds[current[0]] = node_seconds.get(current[0], 0.0) + now - current[1]
                current = None

        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", max_msg_size=0) as ws,
        ):
            # Connected before queueing, so no message of this prompt can be missed.
            prompt_id = self.queue_prompt(api_workflow, client_id=client_id)
            started = time.monotonic()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ComfyServerError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
                try:
                    message = await ws.receive(timeout=min(remaining, 5.0))
                except asyncio.TimeoutError:
                    self._check_alive(f"while prompt {prompt_id} ran")
                    continue
                now = time.monotonic()
                if message.type == aiohttp.WSMsgType.BINARY:
                    continue  # previews and other binary events
                if message.type != aiohttp.WSMsgType.TEXT:
                    self._check_alive(f"while prompt {prompt_id} ran")
                    raise ComfyServerError(f"websocket closed ({message.type.name}) while prompt {prompt_id} ran")
                event = json.loads(message.data)
                kind, data = event.get("type"), event.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if kind == "executing" and data.get("prompt_id") == prompt_id:
                    close_current(now)
                    if data.get("node") is None:
                        break
                    current = (str(data["node"]), now)
                elif kind == "execution_cached" and data.get("nodes"):
                    logger.info("served from cache (not timed): %s", ", ".join(map(str, data["nodes"])))
                elif kind == "execution_success":
                    close_current(now)
                    break
                elif kind == "execution_error":
                    close_current(now)
                    raise ComfyServerError(f"prompt {prompt_id} failed: {format_execution_error(data)}")
                elif kind == "execution_interrupted":
                    raise ComfyServerError(f"prompt {prompt_id} was interrupted at node {data.get('node_id')}")
        logger.info("prompt %s finished in %.2f s", prompt_id, time.monotonic() - started)
        return prompt_id, node_seconds


class Stopped(Exception):
    """Raised in the main thread by SIGTERM or SIGINT, so that ``with ComfyServer`` stops the server on its way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_on_signals() -> None:
    """Make SIGTERM and SIGINT raise :class:`Stopped` in the main thread: a ``with ComfyServer`` block then stops its
    ComfyUI child (which runs in its own session and would otherwise outlive a terminated caller)."""

    def handler(signum: int, frame: object) -> None:
        for other in (signal.SIGTERM, signal.SIGINT):
            signal.signal(other, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        raise Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def parse_cli(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --base-dir and --port are accepted before the subcommand and after it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)

    def server_options(target: argparse.ArgumentParser, defaults: bool) -> None:
        # After the subcommand the options have no default, so they never overwrite values given before it.
        base_dir = ROOT / ".runtime" / "base" if defaults else argparse.SUPPRESS
        target.add_argument("--base-dir", type=Path, default=base_dir, help="ComfyUI --base-directory")
        port = None if defaults else argparse.SUPPRESS
        target.add_argument("--port", type=int, default=port, help="default: a free port")

    server_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server and keep it running until Ctrl-C or SIGTERM")
    server_options(serve, defaults=False)
    run = commands.add_parser("run", help="run one API-format workflow and print per-node wall seconds")
    server_options(run, defaults=False)
    run.add_argument("workflow", type=Path)
    run.add_argument("--timeout", type=float, default=1800.0)
    return parser.parse_args(argv)


def _main(argv: list[str] | None = None) -> int:
    args = parse_cli(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop_on_signals()

    base_dir = prepare_base_dir(args.base_dir)
    try:
        with ComfyServer(base_dir=base_dir, port=args.port) as server:
            if args.command == "serve":
                print(f"ComfyUI running at {server.url} (pid {server.pid}, log: {server.log_path}); Ctrl-C stops it")
                sys.stdout.flush()
                while server.running:
                    time.sleep(1.0)
                print(f"ComfyUI exited.\n{server.log_tail()}", file=sys.stderr)
                return 1
            workflow = json.loads(args.workflow.read_text())
            history, node_seconds = server.run_timed(workflow, timeout=args.timeout)
            title = {key: (node.get("_meta") or {}).get("title", "") for key, node in workflow.items()}
            timings = {f"{key} {title.get(key, '')}".strip(): round(sec, 3) for key, sec in node_seconds.items()}
            print(json.dumps({"node_seconds": timings, "outputs": history.get("outputs", {})}, indent=2))
            return 0
    except Stopped as stop:  # the server has been stopped by the with block
        print(f"{stop}: ComfyUI stopped", file=sys.stderr)
        return 0 if args.command == "serve" else 128 + stop.signum
    except ComfyServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
