"""Profile the embedded reference model and ship the result in profiles/, so Load SODA Profile works out of the box.

    .venv/bin/python scripts/make_reference_profile.py

Settings (those of the quick-start workflow): the digits model, its labels (ten of each digit: a batch of 100 16x16
latents), 20 steps euler/simple, cfg 1.0, 2 calibration runs (seeds 0-1), module granularity, caching and pruning
errors.
"""

from __future__ import annotations

import logging

from comfy_env import ROOT, import_comfy, register_pack
from workflow_builder.definitions import QUICKSTART_LABELS


OUT = ROOT / "profiles" / "soda_reference_digits_euler_simple_20.safetensors"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    register_pack()
    import_comfy()

    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.nodes.reference_model import (
        DEFAULT_MODEL,
        EMBEDDED_MODELS_DIR,
        SODAReferenceClassEncode,
        SODAReferenceTextEncode,
        load_reference_model,
    )
    from comfyui_soda.soda_core.profiler import ProfileConfig

    model = load_reference_model(EMBEDDED_MODELS_DIR / DEFAULT_MODEL)
    positive, latent = SODAReferenceClassEncode.execute(model, QUICKSTART_LABELS).args
    negative = SODAReferenceTextEncode.execute(model, "").args[0]
    settings = SamplingSettings(seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", runs=2)
    profile, _ = profile_model(model, positive, negative, latent, settings, ProfileConfig())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    profile.save(OUT)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
