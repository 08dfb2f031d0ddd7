"""``scripts/comfy_server.py serve`` as a user runs it: options after the subcommand, and SIGTERM or SIGINT stop the
script together with its ComfyUI child (which runs in its own session, so nothing else would end it)."""

import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from e2e.conftest import ROOT, comfy_server_lib


pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts" / "comfy_server.py"
READY_TIMEOUT_S = comfy_server_lib.START_TIMEOUT_S + 60.0
EXIT_TIMEOUT_S = 30.0
READY_LINE = re.compile(r"ComfyUI running at (http://127\.0\.0\.1:(\d+)) \(pid (\d+),")


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_for_ready_line(process: subprocess.Popen[str]) -> re.Match[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 1.0)
        if readable:
            line = process.stdout.readline()
            seen.append(line)
            match = READY_LINE.search(line)
            if match:
                return match
        if process.poll() is not None:
            break
    pytest.fail(f"no ready line from {SCRIPT.name} (exit status {process.poll()}); stdout:\n{''.join(seen)}")


@pytest.mark.parametrize(
    ("signum", "options_first"),
    [pytest.param(signal.SIGTERM, False, id="SIGTERM, options after serve"), (signal.SIGINT, True)],
)
def test_serve_stops_its_comfyui_child_on_signal(tmp_path: Path, signum: int, options_first: bool) -> None:
    port = comfy_server_lib.free_port()
    base_dir = tmp_path / "base"
    options = ["--port", str(port), "--base-dir", str(base_dir)]
    arguments = [*options, "serve"] if options_first else ["serve", *options]
    stderr = (tmp_path / "stderr.txt").open("w")
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *arguments], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=tmp_path
    )
    child = None
    try:
        match = wait_for_ready_line(process)
        url, child = match.group(1), int(match.group(3))
        assert int(match.group(2)) == port, f"--port {port} ignored: {match.group(0)}"
        assert (base_dir / "custom_nodes" / comfy_server_lib.PACK_DIR_NAME).is_symlink(), "--base-dir ignored"
        assert alive(child), f"ComfyUI pid {child} is not running"
        with urllib.request.urlopen(url + "/system_stats", timeout=30) as response:
            assert response.status == 200

        process.send_signal(signum)
        status = process.wait(timeout=EXIT_TIMEOUT_S)
        assert not alive(child), f"ComfyUI pid {child} outlived {SCRIPT.name} after {signal.Signals(signum).name}"
        assert status == 0, f"exit status {status}; stderr:\n{(tmp_path / 'stderr.txt').read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=EXIT_TIMEOUT_S)
        if child is not None and alive(child):
            os.kill(child, signal.SIGKILL)  # the orphan this test is about: never leave it behind
        stderr.close()
