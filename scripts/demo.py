"""`make demo`: run the SODA quickstart workflow on the real ComfyUI server and report speed and fidelity.

Loads example_workflows/api/soda_quickstart.json (API format) and starts ComfyUI headless on the CPU with base
directory .runtime/demo-base. The first run is the workflow as committed: profiling, planning, both samplers, the
images and the fidelity of SODA against full compute (it also pays the model's first calls). Then the two samplers
are timed in interleaved pairs (``--pairs``, at least 3): each pair gives both samplers a new seed, one after the
other, so ComfyUI's cache re-runs only that sampler (and its decode and compare), and the order alternates from pair
to pair. Each sampler's time is its node time from the server's websocket messages. The speedup is the median of the
pairs' full/SODA ratios; when those ratios spread by more than BUSY_SPREAD the machine was busy, and the demo says so
(a WARNING line, ``busy_machine`` in the results). Prints a short table, copies the first run's images into outputs/
and writes outputs/demo_results.json. Exits non-zero with a message on any failure.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from comfy_server import ROOT, ComfyServer, ComfyServerError, Stopped, prepare_base_dir, stop_on_signals
from workflow_builder import API_DIR


DEFAULT_WORKFLOW = API_DIR / "soda_quickstart.json"
DEMO_BASE = ROOT / ".runtime" / "demo-base"
OUTPUTS = ROOT / "outputs"

FULL = "Full compute KSampler"
SODA = "SODA KSampler"
PROFILE = "Profile Sensitivity"
PLAN = "Plan SODA Schedule"
COMPARE = "Compare: SODA vs full"
REQUIRED_TITLES = (FULL, SODA, PROFILE, PLAN, COMPARE)
METRICS_KEY = "soda_metrics"
SEED_INPUTS = ("seed", "noise_seed")
MIN_PAIRS = 3
DEFAULT_PAIRS = 5
# (largest - smallest) / median of the pair ratios above this: the machine was busy and the speedup is not reliable.
# On an idle machine consecutive pairs of this demo agree within a few percent.
BUSY_SPREAD = 0.15


class DemoError(RuntimeError):
    pass


def load_workflow(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DemoError(f"workflow {path} not found")
    try:
        workflow = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DemoError(f"workflow {path} is not valid JSON: {error}") from None
    if not isinstance(workflow, dict) or not all(isinstance(n, dict) and "class_type" in n for n in workflow.values()):
        raise DemoError(
            f"{path} is not an API-format workflow ({{node_id: {{class_type, inputs}}}}); export it with 'Export (API)'"
        )
    return workflow


def find_nodes(workflow: dict[str, Any]) -> dict[str, str]:
    """Map each required ``_meta.title`` to its node id."""
    by_title: dict[str, list[str]] = {}
    for node_id, node in workflow.items():
        by_title.setdefault((node.get("_meta") or {}).get("title", ""), []).append(node_id)
    found: dict[str, str] = {}
    for title in REQUIRED_TITLES:
        ids = by_title.get(title, [])
        if len(ids) != 1:
            problem = "no node" if not ids else f"{len(ids)} nodes ({', '.join(ids)})"
            raise DemoError(f"{problem} titled {title!r} in the workflow; titles present: {sorted(by_title)}")
        found[title] = ids[0]
    return found


def seed_input(workflow: dict[str, Any], node_id: str, title: str) -> str:
    """The name of the sampler's literal seed input (the timing varies it so that ComfyUI re-runs the sampler)."""
    inputs = workflow[node_id].get("inputs") or {}
    keys = [key for key in SEED_INPUTS if isinstance(inputs.get(key), int)]
    if not keys:
        raise DemoError(
            f"{title!r} (node {node_id}) has no literal seed input ({' or '.join(SEED_INPUTS)}): the interleaved "
            "timing gives each sampler a new seed so that ComfyUI runs it again instead of serving it from its cache"
        )
    return keys[0]


def with_seed(workflow: dict[str, Any], node_id: str, key: str, seed: int) -> dict[str, Any]:
    variant = copy.deepcopy(workflow)
    variant[node_id]["inputs"][key] = seed
    return variant


@dataclass
class Pair:
    """One timed pair: both samplers with the same new seed, in ``order``; seconds are the samplers' node times."""

    seed: int
    order: str
    full_compute_seconds: float
    soda_seconds: float
    psnr_db: float | None
    ssim: float

    @property
    def speedup(self) -> float:
        return self.full_compute_seconds / max(self.soda_seconds, 1e-9)


def summarize(pairs: list[Pair], busy_spread: float = BUSY_SPREAD) -> dict[str, Any]:
    """Median of the pair ratios, their range and relative spread, and whether that spread shows a busy machine."""
    ratios = [pair.speedup for pair in pairs]
    median = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / median
    return {
        "speedup": median,
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "speedup_spread": spread,
        "busy_machine": spread > busy_spread,
        "busy_spread_threshold": busy_spread,
        "full_compute_seconds": statistics.median(pair.full_compute_seconds for pair in pairs),
        "soda_seconds": statistics.median(pair.soda_seconds for pair in pairs),
    }


def busy_warning(summary: dict[str, Any], load: tuple[float, float, float] | None, cores: int | None) -> str | None:
    if not summary["busy_machine"]:
        return None
    context = f" (load average {load[0]:.1f} on {cores} cores)" if load and cores else ""
    return (
        f"the {summary['speedup_min']:.2f}x to {summary['speedup_max']:.2f}x ratios of the pairs spread by "
        f"{summary['speedup_spread']:.0%} (more than {summary['busy_spread_threshold']:.0%}): the machine was busy"
        f"{context}, so the {summary['speedup']:.2f}x median is not a reliable figure; run `make demo` again on an "
        "idle machine"
    )


def time_pairs(
    server: ComfyServer, workflow: dict[str, Any], ids: dict[str, str], count: int, timeout: float
) -> list[Pair]:
    """``count`` interleaved pairs: full compute first in even pairs, SODA first in odd ones."""
    keys = {title: seed_input(workflow, ids[title], title) for title in (FULL, SODA)}
    first_seed = max(workflow[ids[title]]["inputs"][keys[title]] for title in (FULL, SODA)) + 1
    current, pairs = workflow, []
    for index in range(count):
        seed, order = first_seed + index, (FULL, SODA) if index % 2 == 0 else (SODA, FULL)
        seconds: dict[str, float] = {}
        for title in order:  # only this sampler's seed changes: ComfyUI re-runs it, its decode and the compare
            current = with_seed(current, ids[title], keys[title], seed)
            history, node_seconds = server.run_timed(current, timeout=timeout)
            seconds[title] = node_time(node_seconds, ids[title], title)
        metrics = read_metrics(history, ids[COMPARE])  # both samplers now share the seed
        pair = Pair(
            seed,
            " then ".join(order),
            seconds[FULL],
            seconds[SODA],
            metrics["psnr"],
            float(metrics["ssim"]),  # type: ignore[arg-type]
        )
        print(
            f"pair {index + 1}/{count} (seed {seed}, {pair.order}): full {pair.full_compute_seconds:.2f} s, "
            f"SODA {pair.soda_seconds:.2f} s, {pair.speedup:.2f}x"
        )
        pairs.append(pair)
    return pairs


def node_time(node_seconds: dict[str, float], node_id: str, title: str) -> float:
    if node_id not in node_seconds:
        raise DemoError(f"node {node_id} ({title!r}) did not execute (cached or not an ancestor of an output node)")
    return node_seconds[node_id]


def read_metrics(history: dict[str, Any], compare_id: str) -> dict[str, float | None]:
    """psnr, ssim, max_abs from the compare node's UI; a null PSNR (identical images, PSNR inf) stays None."""
    ui = (history.get("outputs") or {}).get(compare_id)
    if not isinstance(ui, dict):
        raise DemoError(f"the compare node {compare_id} ({COMPARE!r}) left no UI output in /history")
    entries = ui.get(METRICS_KEY)
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise DemoError(f"the compare node's UI output has no {METRICS_KEY!r} list; its keys are {sorted(ui)}")
    try:
        metrics = {key: entries[0][key] for key in ("psnr", "ssim", "max_abs")}
        return {key: None if key == "psnr" and value is None else float(value) for key, value in metrics.items()}
    except (KeyError, TypeError, ValueError) as error:
        raise DemoError(f"malformed {METRICS_KEY!r} entry {entries[0]!r}: {error}") from None


def copy_images(history: dict[str, Any], base_dir: Path, destination: Path) -> list[str]:
    """Copy every file the history lists (output and temp/preview images) into ``destination``; return names."""
    folders = {"output": base_dir / "output", "temp": base_dir / "temp", "input": base_dir / "input"}
    copied: list[str] = []
    for node_id, ui in (history.get("outputs") or {}).items():
        for items in ui.values():
            for item in items if isinstance(items, list) else []:
                if not (isinstance(item, dict) and "filename" in item and item.get("type") in folders):
                    continue
                source = folders[item["type"]] / item.get("subfolder", "") / item["filename"]
                if not source.is_file():
                    raise DemoError(f"node {node_id} lists {source}, which does not exist")
                name = item["filename"] if item["type"] == "output" else f"{item['type']}_{item['filename']}"
                shutil.copy2(source, destination / name)
                copied.append(name)
    return copied


def remove_previous_images() -> None:
    """Delete the images the previous demo copied into outputs/ (listed in its demo_results.json)."""
    try:
        previous = json.loads((OUTPUTS / "demo_results.json").read_text()).get("images", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    for name in previous if isinstance(previous, list) else []:
        (OUTPUTS / Path(str(name)).name).unlink(missing_ok=True)


def literal_inputs(node: dict[str, Any]) -> dict[str, Any]:
    """A node's widget values (links, which are [node_id, index] pairs, left out)."""
    return {key: value for key, value in (node.get("inputs") or {}).items() if not isinstance(value, list)}


def print_table(results: dict[str, Any]) -> None:
    psnr, count = results["psnr_db"], len(results["pairs"])
    rows = [
        (f"full-compute sampler (median of {count})", f"{results['full_compute_seconds']:.2f} s"),
        (f"SODA sampler (median of {count})", f"{results['soda_seconds']:.2f} s"),
        (f"speedup (median of {count} pair ratios)", f"{results['speedup']:.2f}x"),
        ("speedup range over the pairs", f"{results['speedup_min']:.2f}-{results['speedup_max']:.2f}x"),
        ("spread of the pair ratios", f"{results['speedup_spread']:.0%}"),
        ("sensitivity profiling (offline, once)", f"{results['profiling_seconds']:.2f} s"),
        ("schedule planning (offline, once)", f"{results['planning_seconds']:.2f} s"),
        ("fidelity: PSNR vs full", "inf (identical)" if psnr is None else f"{psnr:.2f} dB"),
        ("fidelity: SSIM vs full", f"{results['ssim']:.4f}"),
        ("fidelity: max |difference|", f"{results['max_abs']:.4f}"),
    ]
    width = max(len(label) for label, _ in rows)
    print()
    print(f"SODA quickstart on ComfyUI {results['comfyui_version']} ({results['device']})")
    print("-" * (width + 14))
    for label, value in rows:
        print(f"{label:<{width}}  {value:>12}")
    print("-" * (width + 14))
    print(f"images: {', '.join(results['images']) or 'none'} (in {OUTPUTS.relative_to(ROOT)}/)")
    print(f"numbers: {OUTPUTS.relative_to(ROOT) / 'demo_results.json'}")
    if results["warning"]:
        print(f"\nWARNING: {results['warning']}")


def run_demo(workflow_path: Path, timeout: float, port: int | None, pair_count: int) -> dict[str, Any]:
    workflow = load_workflow(workflow_path)
    ids = find_nodes(workflow)
    for title in (FULL, SODA):
        seed_input(workflow, ids[title], title)  # refuse before the server starts
    shutil.rmtree(DEMO_BASE / "output", ignore_errors=True)  # stable image names from run to run
    base_dir = prepare_base_dir(DEMO_BASE)
    OUTPUTS.mkdir(exist_ok=True)
    remove_previous_images()

    print(
        f"starting ComfyUI (base directory {base_dir.relative_to(ROOT)}, log {base_dir.relative_to(ROOT)}/comfyui.log)"
    )
    with ComfyServer(base_dir=base_dir, port=port) as server:
        print(f"ComfyUI ready on {server.url} after {server.startup_seconds:.1f} s; running {workflow_path.name}")
        stats = server.system_stats()
        print("first run: the workflow as committed (profiling, planning, both samplers, images, fidelity)")
        started = time.monotonic()
        history, first_seconds = server.run_timed(workflow, timeout=timeout)
        total = time.monotonic() - started
        images = copy_images(history, base_dir, OUTPUTS)  # temp (preview) files vanish with the server
        print(f"timing {pair_count} interleaved pairs of the two samplers (a new seed per pair)")
        load_before = os.getloadavg()
        pairs = time_pairs(server, workflow, ids, pair_count, timeout)
        load_after = os.getloadavg()

    metrics = read_metrics(history, ids[COMPARE])
    summary = summarize(pairs)
    cores = os.cpu_count()
    return {
        "workflow": str(workflow_path.relative_to(ROOT) if workflow_path.is_relative_to(ROOT) else workflow_path),
        "comfyui_version": stats["system"]["comfyui_version"],
        "pytorch_version": stats["system"]["pytorch_version"],
        "device": stats["devices"][0]["name"] if stats.get("devices") else "cpu",
        "server_start_seconds": round(server.startup_seconds or 0.0, 2),
        "first_run_seconds": round(total, 3),
        **summary,
        "warning": busy_warning(summary, load_after, cores),
        "timing": (
            "median over interleaved pairs (order alternating, a new seed per pair so only that sampler re-runs) of "
            "each KSampler's node time from the server's websocket messages; the first run is not timed"
        ),
        "pairs": [{**asdict(pair), "speedup": pair.speedup} for pair in pairs],
        "load_average": {"cores": cores, "before_pairs": load_before, "after_pairs": load_after},
        "profiling_seconds": node_time(first_seconds, ids[PROFILE], PROFILE),
        "planning_seconds": node_time(first_seconds, ids[PLAN], PLAN),
        "psnr_db": metrics["psnr"],
        "ssim": metrics["ssim"],
        "max_abs": metrics["max_abs"],
        "psnr_db_of_pairs": [pair.psnr_db for pair in pairs],
        "settings": {title: literal_inputs(workflow[node_id]) for title, node_id in ids.items()},
        "first_run_node_seconds": {
            node_id: {
                "title": (workflow.get(node_id, {}).get("_meta") or {}).get("title"),
                "class_type": workflow.get(node_id, {}).get("class_type"),
                "seconds": round(seconds, 4),
            }
            for node_id, seconds in first_seconds.items()
        },
        "images": images,
        "compare_ui": history["outputs"][ids[COMPARE]],
    }


def pair_count(text: str) -> int:
    value = int(text)
    if value < MIN_PAIRS:
        raise argparse.ArgumentTypeError(f"--pairs {value}: at least {MIN_PAIRS} pairs give a median and a spread")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for each run of the workflow")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--pairs",
        type=pair_count,
        default=DEFAULT_PAIRS,
        help=f"timed pairs (default {DEFAULT_PAIRS}, >= {MIN_PAIRS})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the server helper's steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    stop_on_signals()  # SIGTERM or Ctrl-C: the with block stops ComfyUI
    try:
        results = run_demo(args.workflow.resolve(), args.timeout, args.port, args.pairs)
    except Stopped as stop:
        print(f"\nmake demo stopped by {stop}", file=sys.stderr)
        return 128 + stop.signum
    except (DemoError, ComfyServerError, OSError) as error:
        print(f"\nmake demo failed: {error}", file=sys.stderr)
        if isinstance(error, ComfyServerError):
            print(f"server log: {DEMO_BASE / 'comfyui.log'}", file=sys.stderr)
        return 1
    (OUTPUTS / "demo_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
