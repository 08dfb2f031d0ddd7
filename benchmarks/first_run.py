"""What SODA Accelerate costs on its first run and saves on later ones, on a benchmark setting
(``benchmarks/settings.py``: ``reference``, the trained digits model at batch 50; ``flux160m``, a 163M Flux with 1024
image tokens), 20 steps euler/simple, cfg 1.

Each repeat times, interleaved in one process: the unpatched model; SODA Accelerate's first run of a fresh setting
(profiling at full compute, the profile stored in a fresh folder); its second run (accelerated from that profile).
Reported: the median over repeats of first-run / plain and plain / second-run, their spread, and whether the first
run's image is the plain image bit for bit.

    python benchmarks/first_run.py [--setting flux160m] [--repeats 5] [--speedup 2.0] [--out ...json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402


logger = logging.getLogger("benchmarks.first_run")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=("reference", "flux160m"), default="reference")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/first_run_<setting>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    env.setup()

    import comfy.sample
    import folder_paths
    import torch

    from benchmarks.settings import SETTINGS
    from comfyui_soda.nodes.accelerate import SODAAccelerate

    setting = SETTINGS[args.setting]
    model, positive, _ = setting.build()
    latent = torch.zeros(setting.latent_shape)
    out_path = args.out or env.ROOT / "benchmarks" / "results" / f"first_run_{args.setting}.json"
    noise = comfy.sample.prepare_noise(latent, 0)

    def timed(m: object) -> tuple[float, torch.Tensor]:
        started = time.perf_counter()
        out = comfy.sample.sample(
            m, noise, args.steps, 1.0, "euler", "simple", positive, positive, latent, seed=0, disable_pbar=True
        )
        return time.perf_counter() - started, out

    timed(model)  # warm-up (allocator, kernels)
    rows = []
    original_models_dir = folder_paths.models_dir
    try:
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as folder:
                folder_paths.models_dir = folder  # a fresh profile store: the first run has to profile
                accelerated = SODAAccelerate.execute(model, args.speedup).result[0]
                plain_s, plain = timed(model)
                first_s, first = timed(accelerated)
                second_s, _ = timed(accelerated)
                report = accelerated.model_options["transformer_options"]["soda"].reports[-1]
            rows.append(
                {
                    "plain_s": round(plain_s, 3),
                    "first_s": round(first_s, 3),
                    "second_s": round(second_s, 3),
                    "first_over_plain": first_s / plain_s,
                    "plain_over_second": plain_s / second_s,
                    "first_is_plain_image": bool(torch.equal(first, plain)),
                    "second_flops_speedup": report.flops_ratio,
                    "load": env.load_average(),
                }
            )
            logger.info("repeat %d: %s", repeat, rows[-1])
    finally:
        folder_paths.models_dir = original_models_dir

    def summary(key: str) -> dict[str, float]:
        values = [r[key] for r in rows]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    result: dict[str, object] = {
        "command": "python benchmarks/first_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setting": {"name": args.setting, "latents": list(latent.shape), "steps": args.steps},
        "speedup": args.speedup,
        "first_run_cost_in_plain_runs": summary("first_over_plain"),
        "later_runs_wall_speedup": summary("plain_over_second"),
        "first_run_image_is_plain_image": all(r["first_is_plain_image"] for r in rows),
        "repeats": rows,
        "hardware": env.hardware(),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("first run %.2fx a plain run (median of %d), later runs %.2fx faster; wrote %s",
                result["first_run_cost_in_plain_runs"]["median"], args.repeats,  # type: ignore[index]
                result["later_runs_wall_speedup"]["median"], out_path)  # type: ignore[index]  # fmt: skip
    return result


if __name__ == "__main__":
    main()
