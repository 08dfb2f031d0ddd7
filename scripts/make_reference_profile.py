"""Profile the embedded reference model and ship the result in profiles/, so Load SODA Profile works out of the box.

    .venv/bin/python scripts/make_reference_profile.py

Settings: 64x64 latent, 20 steps euler/simple, cfg 1.0, 4 calibration runs (seeds 0-3), module granularity, caching
and pruning errors; prompt "a red circle above a blue square on a white background".
"""

from __future__ import annotations

import logging

from comfy_env import ROOT, import_comfy, register_pack


OUT = ROOT / "profiles" / "soda_reference_flux_euler_simple_20.safetensors"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    register_pack()
    import_comfy()
    import torch

    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.nodes.reference_model import (
        DEFAULT_MODEL,
        EMBEDDED_MODELS_DIR,
        encode_text,
        load_reference_model,
    )
    from comfyui_soda.soda_core.profiler import ProfileConfig

    model = load_reference_model(EMBEDDED_MODELS_DIR / DEFAULT_MODEL)
    width = model.model.model_config.unet_config["context_in_dim"]
    pooled_width = model.model.model_config.unet_config["vec_in_dim"]

    def conditioning(text: str) -> list[list[object]]:
        cond, pooled = encode_text(text, width, pooled_width)
        return [[cond, {"pooled_output": pooled}]]

    settings = SamplingSettings(seed=0, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", runs=4)
    profile, _ = profile_model(
        model,
        conditioning("a red circle above a blue square on a white background"),
        conditioning(""),
        {"samples": torch.zeros(1, 16, 64, 64)},
        settings,
        ProfileConfig(),
    )
    profile.save(OUT)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
