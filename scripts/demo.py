"""`make demo`: run the SODA quickstart workflow on the real ComfyUI server and report speed and fidelity.

Loads workflows/api/soda_quickstart.json (API format), starts ComfyUI headless on the CPU with base directory
.runtime/demo-base, times every node from the websocket, prints a short table, copies the output images into
outputs/ and writes outputs/demo_results.json. Exits non-zero with a message on any failure.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from comfy_server import ROOT, ComfyServer, ComfyServerError, prepare_base_dir


DEFAULT_WORKFLOW = ROOT / "workflows" / "api" / "soda_quickstart.json"
DEMO_BASE = ROOT / ".runtime" / "demo-base"
OUTPUTS = ROOT / "outputs"

FULL = "Full compute KSampler"
SODA = "SODA KSampler"
PROFILE = "Profile Sensitivity"
PLAN = "Plan SODA Schedule"
COMPARE = "Compare: SODA vs full"
REQUIRED_TITLES = (FULL, SODA, PROFILE, PLAN, COMPARE)
METRICS_KEY = "soda_metrics"


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


def warmup_variant(workflow: dict[str, Any], ids: dict[str, str]) -> dict[str, Any] | None:
    """The workflow with both samplers' seeds changed (None if a sampler has no literal seed input).

    The first sampler ComfyUI runs also pays the model load and first-call warm-up, so a run of this variant first
    keeps that cost out of the timed run; the nodes upstream of the samplers run in it and are cached afterwards.
    """
    variant = copy.deepcopy(workflow)
    for title in (FULL, SODA):
        inputs = variant[ids[title]].get("inputs") or {}
        seeds = [key for key in ("seed", "noise_seed") if isinstance(inputs.get(key), int)]
        if not seeds:
            return None
        for key in seeds:
            inputs[key] += 1
    return variant


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
    psnr = results["psnr_db"]
    rows = [
        ("full-compute sampler", f"{results['full_compute_seconds']:.2f} s"),
        ("SODA sampler", f"{results['soda_seconds']:.2f} s"),
        ("speedup (full / SODA)", f"{results['speedup']:.2f}x"),
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


def run_demo(workflow_path: Path, timeout: float, port: int | None, warmup: bool) -> dict[str, Any]:
    workflow = load_workflow(workflow_path)
    ids = find_nodes(workflow)
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
        variant = warmup_variant(workflow, ids) if warmup else None
        warmup_seconds: dict[str, float] = {}
        if variant is not None:
            print("warm-up run (samplers with other seeds: model load and first-call costs stay out of the timings)")
            _, warmup_seconds = server.run_timed(variant, timeout=timeout)
        elif warmup:
            print("no warm-up: a sampler has no literal seed input; the first sampler's time includes the model load")
        print("timed run")
        started = time.monotonic()
        history, node_seconds = server.run_timed(workflow, timeout=timeout)
        total = time.monotonic() - started
        offline_seconds = {**warmup_seconds, **node_seconds}  # profiling/planning ran in the warm-up if there was one
        images = copy_images(history, base_dir, OUTPUTS)  # temp (preview) files vanish with the server

    full = node_time(node_seconds, ids[FULL], FULL)
    soda = node_time(node_seconds, ids[SODA], SODA)
    metrics = read_metrics(history, ids[COMPARE])
    return {
        "workflow": str(workflow_path.relative_to(ROOT) if workflow_path.is_relative_to(ROOT) else workflow_path),
        "comfyui_version": stats["system"]["comfyui_version"],
        "pytorch_version": stats["system"]["pytorch_version"],
        "device": stats["devices"][0]["name"] if stats.get("devices") else "cpu",
        "server_start_seconds": round(server.startup_seconds or 0.0, 2),
        "workflow_seconds": round(total, 3),
        "full_compute_seconds": full,
        "soda_seconds": soda,
        "speedup": full / max(soda, 1e-9),
        "profiling_seconds": node_time(offline_seconds, ids[PROFILE], PROFILE),
        "planning_seconds": node_time(offline_seconds, ids[PLAN], PLAN),
        "warmup_run": variant is not None,
        "psnr_db": metrics["psnr"],
        "ssim": metrics["ssim"],
        "max_abs": metrics["max_abs"],
        "settings": {title: literal_inputs(workflow[node_id]) for title, node_id in ids.items()},
        "node_seconds": {
            node_id: {
                "title": (workflow.get(node_id, {}).get("_meta") or {}).get("title"),
                "class_type": workflow.get(node_id, {}).get("class_type"),
                "seconds": round(seconds, 4),
            }
            for node_id, seconds in node_seconds.items()
        },
        "warmup_node_seconds": {node_id: round(seconds, 4) for node_id, seconds in warmup_seconds.items()},
        "images": images,
        "compare_ui": history["outputs"][ids[COMPARE]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed for the workflow")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="time the first run (includes the model load)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log the server helper's steps")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        results = run_demo(args.workflow.resolve(), args.timeout, args.port, args.warmup)
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
