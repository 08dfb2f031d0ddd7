"""`make bench`: SODA against full compute, FORA, ToCa, EasyCache, LazyCache, MagCache-like and TeaCache-like, in one
command.

    python benchmarks/run.py [--setting flux160m|reference|digits32|all] [--quick] [--repeats N] [--targets 1.5,2]
                             [--out benchmarks/results] [--replot]

Writes ``<out>/<setting>.json``, ``<out>/<setting>.md`` and PNG plots; logs progress to stderr. ``--quick`` runs a
tiny Flux and the reference model on a few steps and samples, in about a minute (what the test suite runs to keep
the harness working).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402


# ``make bench``: the two trained models (fidelity, accuracy, margins); flux160m (speed at size, random weights) runs
# on its own, ``--setting flux160m``
ALL = ("reference", "digits32")


logger = logging.getLogger("benchmarks")
DEFAULT_OUT = env.ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--setting",
        choices=["flux160m", "reference", "digits32", "all"],
        default="all",
        help="all (make bench): " + " and ".join(ALL),
    )
    parser.add_argument("--quick", action="store_true", help="tiny Flux and reference model, 6 steps (~1 min)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default: per setting)")
    parser.add_argument(
        "--targets", type=str, default=None, help="comma-separated SODA targets, overriding the setting's"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--replot", action="store_true", help="re-assess and re-draw the results in --out (no sampling)"
    )
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def _configure_logging() -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_soda_bench", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._soda_bench = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_setting(setting: Any, out: Path, command: str) -> dict[str, Any]:
    from benchmarks import analysis, harness, report

    started, clock = datetime.now(timezone.utc), time.perf_counter()
    load_start = env.load_average()
    logger.info("bench: setting %s: %s", setting.name, setting.description)
    built = setting.build()
    result: dict[str, Any] = {
        "setting": setting.name,
        "description": setting.description,
        "random_weights": setting.random_weights,
        "facts": setting.facts,
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "hardware": env.hardware(),
        "load_start": load_start,
        "runs": [],
        "plots": [],
    }
    for spec in setting.runs:
        result["runs"].append(harness.run(setting, built, spec))
    result["load_end"] = env.load_average()
    result["across_runs"] = analysis.few_step_rows(result["runs"])
    result["wall_seconds"] = time.perf_counter() - clock
    result["plots"] = draw(result, out)
    report.write_json(result, out / f"{setting.name}.json")
    report.write_markdown(result, out / f"{setting.name}.md")
    logger.info("bench: %s done in %.1f min -> %s", setting.name, result["wall_seconds"] / 60, out / setting.name)
    return result


def draw(result: dict[str, Any], out: Path) -> list[str]:
    """The plots of every run of a result (speed-up vs PSNR, SODA schedules); paths relative to ``out``."""
    from benchmarks import plots

    paths = []
    for run in result["runs"]:
        label, stem = run.get("label", f"{run['steps']} steps"), run.get("stem", f"{run['steps']}steps")
        title, stem = f"{result['setting']}, {label}", f"{result['setting']}_{stem}"
        paths.append(plots.speedup_psnr(run, title, out / f"{stem}_speedup_psnr.png"))
        paths.append(plots.schedules(run, f"SODA schedules: {title}", out / f"{stem}_schedules.png"))
    return [str(p.relative_to(out)) for p in paths if p is not None]


def replot(out: Path, names: list[str]) -> None:
    """Re-derive the matched-speed-up tables and targets of results already in ``out`` and re-draw their plots and
    Markdown (no measuring): after a change to the analysis or the figures only."""
    from benchmarks import analysis, harness, report

    for name in names:
        path = out / f"{name}.json"
        if not path.is_file():
            raise SystemExit(f"--replot: {path} does not exist; run the benchmark first.")
        result = json.loads(path.read_text())
        result["runs"] = [harness.assess(run) for run in result["runs"]]
        result["across_runs"] = analysis.few_step_rows(result["runs"])
        result["plots"] = draw(result, out)
        report.write_json(result, path)
        report.write_markdown(result, out / f"{name}.md")
        logger.info("bench: re-assessed and re-drew %s", path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging()
    if args.replot:
        replot(args.out, list(ALL) if args.setting == "all" else [args.setting])
        return 0
    env.setup()
    from benchmarks.settings import SETTINGS

    names = ["quick", "quick-reference"] if args.quick else (list(ALL) if args.setting == "all" else [args.setting])
    targets = tuple(float(t) for t in args.targets.split(",")) if args.targets else None
    args.out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    for name in names:
        setting = SETTINGS[name].with_overrides(args.repeats, targets)
        run_setting(setting, args.out, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
