"""SODA's own costs on the embedded reference model (the quick-start workflow's run: 100 digits, 16x16 latents, 20
steps euler/simple):

* a schedule that computes every step fully (target 1.0) against the unpatched model: wall time and bit-exactness;
* profiling (Profile Sensitivity, one calibration run) in units of one full-compute sampling run.

    python benchmarks/overhead.py [--repeats 7] [--out benchmarks/results/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402


logger = logging.getLogger("benchmarks.overhead")


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=env.ROOT / "benchmarks" / "results" / "overhead.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    env.setup()

    import comfy.sample
    import torch

    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.nodes.soda import SODAModelPatch, SODAPlanSchedule
    from comfyui_soda.soda_core.profiler import ProfileConfig

    model, positive, negative, latent = env.quickstart_inputs()
    noise = comfy.sample.prepare_noise(latent, 0)

    def sample(m: object) -> torch.Tensor:
        return comfy.sample.sample(
            m, noise, 20, 1.0, "euler", "simple", positive, negative, latent, seed=0, disable_pbar=True
        )

    reference = sample(model)  # warm-up (model load, first-call costs)
    started = time.perf_counter()
    profile, _ = profile_model(
        model,
        positive,
        negative,
        {"samples": latent},
        SamplingSettings(0, 20, 1.0, "euler", "simple"),
        ProfileConfig(),
    )
    profiling_seconds = time.perf_counter() - started
    patched = SODAModelPatch.execute(model, SODAPlanSchedule.execute(profile, 1.0, 1, True).result[0]).result[0]
    unpatched_s, patched_s, exact = [], [], True
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        for times, m in ((unpatched_s, model), (patched_s, patched)):
            started = time.perf_counter()
            out = sample(m)
            times.append(time.perf_counter() - started)
            exact = exact and bool(torch.equal(out, reference))
    full = statistics.median(unpatched_s)
    result = {
        "command": "python benchmarks/overhead.py" + ("" if argv is None else " " + " ".join(argv)),
        "hardware": env.hardware(),
        "unpatched_median_s": round(full, 4),
        "all_anchor_median_s": round(statistics.median(patched_s), 4),
        "all_anchor_overhead": round(statistics.median(patched_s) / full - 1, 4),
        "all_anchor_bit_exact": exact,
        "profiling_s": round(profiling_seconds, 3),
        "profiling_in_full_runs": round(profiling_seconds / full, 3),
        "repeats": args.repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("%s", json.dumps(result))
    return result


if __name__ == "__main__":
    main()
