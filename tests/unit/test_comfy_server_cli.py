"""scripts/comfy_server.py's command line: the server options are accepted before and after the subcommand."""

from pathlib import Path

import pytest

from comfy_server import ROOT, parse_cli


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "8188", "--base-dir", "/tmp/x"],
        ["--port", "8188", "--base-dir", "/tmp/x", "serve"],
        ["--port", "8188", "serve", "--base-dir", "/tmp/x"],
        ["--base-dir", "/tmp/y", "--port", "1", "serve", "--base-dir", "/tmp/x", "--port", "8188"],  # later wins
    ],
)
def test_serve_options_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = parse_cli(argv)
    assert (args.command, args.port, args.base_dir) == ("serve", 8188, Path("/tmp/x"))


def test_defaults_when_no_option_is_given() -> None:
    args = parse_cli(["serve"])
    assert (args.port, args.base_dir) == (None, ROOT / ".runtime" / "base")


def test_run_takes_the_options_after_its_workflow_too() -> None:
    args = parse_cli(["run", "wf.json", "--timeout", "5", "--port", "9000"])
    assert (args.command, args.workflow, args.timeout, args.port) == ("run", Path("wf.json"), 5.0, 9000)
    assert args.base_dir == ROOT / ".runtime" / "base"


def test_unknown_option_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_cli(["serve", "--prot", "8188"])
