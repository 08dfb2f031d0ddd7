"""Profile the embedded reference model and ship the result in profiles/, so Load SODA Profile works out of the box.

    .venv/bin/python scripts/make_reference_profile.py

Settings (those of the quick-start workflow): the digits model, its labels (ten of each digit: a batch of 100 16x16
latents), 20 steps euler/simple, cfg 1.0, 2 calibration runs (seeds 0-1), module granularity, caching and pruning
errors.
"""

from __future__ import annotations

import logging
import sys

from comfy_env import ROOT


sys.path.append(str(ROOT))  # the benchmarks package (appended: ComfyUI's own top-level modules win)
from benchmarks import env  # noqa: E402


OUT = ROOT / "profiles" / "soda_reference_digits_euler_simple_20.safetensors"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    env.setup()

    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.profiler import ProfileConfig

    model, positive, negative, latent = env.quickstart_inputs()
    latent = {"samples": latent}
    settings = SamplingSettings(seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", runs=2)
    profile, _ = profile_model(model, positive, negative, latent, settings, ProfileConfig())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    profile.save(OUT)
    logging.getLogger(__name__).info("wrote %s (%d bytes)", OUT.relative_to(ROOT), OUT.stat().st_size)


if __name__ == "__main__":
    main()
