"""Profiling memory at Flux width, measured and by the formula (``soda_core/profiler_memory.py``).

    python benchmarks/profiling_memory.py [--steps 3] [--skip-exact] [--quick] [--out benchmarks/results/...json]

Builds a Flux model of Flux.1's width from ComfyUI's own classes (hidden 3072, 24 heads, 1 double + 1 single block,
every parameter seeded: ``build_flux_patcher(config, seed=0)``), and profiles it through ``profile_model`` at 4096
image tokens (latent 1x16x128x128) + 512 random text tokens, batch 1, cfg 1.0, euler/simple, for a few steps: once
sketched (the default ``ProfileConfig()``), once exact (``sketch_dim=0``). For each run it records

* the bytes of the tensors the recorder holds (``SensitivityRecorder.held_bytes``: ring or sketches, per-token norms,
  float64 accumulators, projections) at its peak, against the formula for the same shapes;
* resident memory (psutil RSS, after ``gc`` and ``malloc_trim``) freed when the recorder is dropped;
* the peak RSS of the profiling run (``VmHWM`` reset before each run) above the peak of a plain run of the same steps,
  and above an *observe-only* run: the same profiling path with a recorder that ignores every output, which isolates
  the recorder from what the runtime itself allocates to observe (e.g. splitting a single block's fused output);

and extrapolates to Flux.1 at 1024^2 (19 double + 38 single blocks, K = 8, 20 / 50 steps, batch 1 with and without
CFG) twice: by the formula, and by scaling the measured bytes per (layer, module, ring entry). Tracemalloc does not
see torch's allocations, hence tensor sizes and RSS. About 20 minutes on 2 shared CPU cores (13 steps in all, 30-80 s
each; ``--skip-exact`` saves 3 of them); ``--quick`` runs a tiny Flux in seconds (what the test suite runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any


if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import env  # noqa: E402
from benchmarks.measure import PeakRss, _malloc_trim  # noqa: E402
from benchmarks.settings import FLUX_COMMON, random_conditioning  # noqa: E402


logger = logging.getLogger("benchmarks.profiling_memory")
DEFAULT_OUT = env.ROOT / "benchmarks" / "results" / "profiling_memory.json"
MB = 2**20
FLUX_WIDTH = {
    "hidden_size": 3072,
    "num_heads": 24,
    "axes_dim": [16, 56, 56],
    "context_in_dim": 4096,
    "vec_in_dim": 768,
}
QUICK_WIDTH = {"hidden_size": 128, "num_heads": 2, "axes_dim": [16, 24, 24], "context_in_dim": 64, "vec_in_dim": 32}
# channels: the widest module output bound the pre-check uses (the served blocks' widest linear, linear1 of the single
# blocks: 3 * 3072 + 4 * 3072)
FLUX_1024 = {"double_blocks": 19, "single_blocks": 38, "image_tokens": 4096, "text_tokens": 512, "channels": 21504}


def _rss() -> int:
    import psutil

    gc.collect()
    _malloc_trim()
    return int(psutil.Process().memory_info().rss)


class _Case:
    """One problem size: the model, its conditioning and latent, and how to sample or profile it."""

    def __init__(self, quick: bool, steps: int) -> None:
        import torch

        from comfyui_soda.nodes.reference_model import build_flux_patcher

        width = QUICK_WIDTH if quick else FLUX_WIDTH
        self.config = {**FLUX_COMMON, **width, "depth": 1, "depth_single_blocks": 1}
        self.model = build_flux_patcher(self.config, seed=0)
        self.text_tokens, side = (16, 32) if quick else (512, 128)
        self.image_tokens = (side // 2) ** 2
        self.positive = random_conditioning(width["context_in_dim"], width["vec_in_dim"], self.text_tokens, seed=1)
        self.latent = torch.zeros(1, 16, side, side)
        self.steps = steps

    def sample(self, steps: int) -> None:
        import comfy.sample

        noise = comfy.sample.prepare_noise(self.latent, 0)
        comfy.sample.sample(
            self.model, noise, steps, 1.0, "euler", "simple", self.positive, self.positive, self.latent, seed=0,
            disable_pbar=True,
        )  # fmt: skip

    def profile(self, config: Any) -> Any:
        from comfyui_soda.nodes.profiling import SamplingSettings, profile_model

        settings = SamplingSettings(seed=0, steps=self.steps, cfg=1.0, sampler_name="euler", scheduler="simple")
        latent = {"samples": self.latent}
        return profile_model(self.model, self.positive, self.positive, latent, settings, config)[0]


def _recording_recorder(observing: bool) -> tuple[type, list[Any]]:
    """A SensitivityRecorder that notes the peak of what it holds after every call and stays reachable; with
    ``observing`` off it ignores every output (the profiling path's own cost, without any profiling state)."""
    from comfyui_soda.soda_core.profiler import SensitivityRecorder

    made: list[Any] = []

    class Recording(SensitivityRecorder):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.peak = self.held_bytes()
            made.append(self)

        def observe(self, *args: Any, **kwargs: Any) -> None:
            if not observing:
                return
            super().observe(*args, **kwargs)
            held = self.held_bytes()
            if held.held > self.peak.held:
                self.peak = held

    return Recording, made


def _run(case: _Case, config: Any, observing: bool = True) -> tuple[Any, float, float, Any]:
    """One profiling run through ``profile_model``: the profile, seconds, peak RSS (MB above its start), recorder."""
    from comfyui_soda.soda_core import policy  # ProfilingSession makes the recorder
    from comfyui_soda.soda_core.profile_checks import ProfileProblems

    recording, made = _recording_recorder(observing)
    original, policy.SensitivityRecorder = policy.SensitivityRecorder, recording  # type: ignore[misc]
    try:
        rss, started = PeakRss(), time.perf_counter()
        rss.start()
        try:
            profile = case.profile(config)
        except ProfileProblems:
            if observing:
                raise
            profile = None  # the observe-only run measured nothing, so its profile is refused as empty: expected
        seconds, peak_mb = time.perf_counter() - started, rss.stop()
    finally:
        policy.SensitivityRecorder = original  # type: ignore[misc]
    (recorder,) = made
    made.clear()
    return profile, seconds, peak_mb, recorder


def _measure(case: _Case, config: Any, plain_peak_mb: float, path_peak_mb: float) -> dict[str, Any]:
    """Profile once with ``config``: the recorder's held bytes against the formula, RSS freed with the recorder,
    peak RSS above a plain run and above the observe-only run."""
    from comfyui_soda.soda_core.profiler import profiling_memory

    profile, seconds, peak_mb, recorder = _run(case, config)
    peak, final, layout = recorder.peak, recorder.held_bytes(), recorder.layout
    from comfyui_soda.soda_core.adapters import serve

    channels = serve(case.model.model.diffusion_model).output_width()  # widest module output, as the pre-check
    tokens = case.text_tokens + case.image_tokens
    formula = profiling_memory(layout, config, 1, tokens, channels, 4, case.steps, layout.num_modules)
    before = _rss()
    del recorder
    freed = before - _rss()
    logger.info("sketch_dim=%d: held %.1f MB (formula %.1f MB), RSS freed %.1f MB, peak RSS +%.1f MB over observe-only",
                config.sketch_dim, peak.held / MB, formula.held / MB, freed / MB, peak_mb - path_peak_mb)  # fmt: skip
    return {
        "sketch_dim": config.sketch_dim,
        "max_distance": config.max_distance,
        "seconds": round(seconds, 1),
        "held_bytes_peak": {**peak.parts(), "held": peak.held},
        "held_bytes_at_end": final.held,
        "formula_bytes": {**formula.parts(), "held": formula.held, "total": formula.total},
        "formula_bounds_held": all(getattr(peak, k) <= getattr(formula, k) for k in ("ring", "norms", "held")),
        "sketched_ring_exact": config.sketch_dim == 0 or peak.ring == formula.ring,
        "rss_freed_bytes": freed,
        "peak_rss_above_plain_mb": round(peak_mb - plain_peak_mb, 1),
        "peak_rss_above_observe_only_mb": round(peak_mb - path_peak_mb, 1),
        "layers": layout.num_layers,
        "tokens": tokens,
        "cache_error_defined": bool(profile.cache_error[1:, :, :, 0].isfinite().all()),
    }


def _flux_layout() -> Any:
    from comfyui_soda.soda_core.layout import BlockRef, ModelLayout

    blocks = [BlockRef("double_block", i) for i in range(FLUX_1024["double_blocks"])]
    blocks += [BlockRef("single_block", i) for i in range(FLUX_1024["single_blocks"])]
    return ModelLayout(tuple(blocks), ("attn", "mlp"))


def _extrapolate(runs: dict[str, dict[str, Any]], configs: dict[str, Any], steps: int) -> list[dict[str, Any]]:
    """Flux.1 at 1024^2 by the formula, and from the measured bytes per (layer, module, ring entry, row)."""
    from comfyui_soda.soda_core.profiler import profiling_memory

    layout, tokens = _flux_layout(), FLUX_1024["image_tokens"] + FLUX_1024["text_tokens"]
    rows_out = []
    for name, config in configs.items():
        measured = runs.get(name)
        for total_steps in (20, 50):
            for rows in (1, 2):
                formula = profiling_memory(
                    layout, config, rows, tokens, FLUX_1024["channels"], 2, total_steps, layout.num_modules
                )
                row = {"mode": name, "steps": total_steps, "rows": rows, "formula": formula.parts()}
                row |= {"formula_total": formula.total, "fits_4_gb": formula.total <= 4 * 2**30}
                if measured is not None:
                    row["from_measured_held"] = _scaled(measured, config, layout, rows, total_steps, steps)
                rows_out.append(row)
    return rows_out


def _scaled(measured: dict[str, Any], config: Any, layout: Any, rows: int, total_steps: int, steps: int) -> int:
    """Measured ring + norms per token vector (layer, module, ring entry, row, token) scaled to Flux.1 at 1024^2;
    accumulators by the formula. Exact mode at Flux's bfloat16 halves the measured float32 ring."""
    held = measured["held_bytes_peak"]
    vectors = measured["layers"] * layout.num_modules * min(config.max_distance, steps) * measured["tokens"]
    target = layout.num_layers * layout.num_modules * min(config.max_distance, total_steps) * rows
    target *= FLUX_1024["image_tokens"] + FLUX_1024["text_tokens"]
    ring = held["ring"] * (0.5 if config.sketch_dim == 0 else 1.0)
    accumulators = total_steps * layout.num_layers * layout.num_modules * config.max_distance
    accumulators *= (2 + len(config.prune_ratios)) * 8
    return round((ring + held["norms"]) / vectors * target + accumulators + held["projections"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="sampling steps profiled (default 3)")
    parser.add_argument("--skip-exact", action="store_true", help="profile sketched only (half the time)")
    parser.add_argument("--quick", action="store_true", help="a tiny Flux (hidden 128, 256 + 16 tokens), seconds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (E_c needs two steps)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    env.setup()

    from comfyui_soda.soda_core.profiler import ProfileConfig

    case = _Case(args.quick, args.steps)
    started = time.perf_counter()
    case.sample(1)  # warm-up: first-call costs
    plain = PeakRss()
    plain.start()
    case.sample(args.steps)
    plain_peak_mb = plain.stop()
    _, path_seconds, path_peak_mb, _ = _run(case, ProfileConfig(), observing=False)
    configs = {"sketched": ProfileConfig()} | ({} if args.skip_exact else {"exact": ProfileConfig(sketch_dim=0)})
    runs = {name: _measure(case, config, plain_peak_mb, path_peak_mb) for name, config in configs.items()}
    all_configs = {"sketched": ProfileConfig(), "exact": ProfileConfig(sketch_dim=0)}
    result = {
        "command": "python "
        + shlex.join(["benchmarks/profiling_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "hardware": env.hardware(),
        "model": {k: case.config[k] for k in ("hidden_size", "num_heads", "depth", "depth_single_blocks")},
        "parameters": sum(p.numel() for p in case.model.model.diffusion_model.parameters()),
        "tokens": {"image": case.image_tokens, "text": case.text_tokens},
        "batch": 1,
        "steps": args.steps,
        "plain_run_peak_rss_mb": round(plain_peak_mb, 1),
        "observe_only_run": {
            "seconds": round(path_seconds, 1),
            "peak_rss_above_plain_mb": round(path_peak_mb - plain_peak_mb, 1),
        },
        "peak_rss_method": PeakRss.method,
        "runs": runs,
        "flux_1024": _extrapolate(runs, all_configs, args.steps),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", args.out)
    return result


if __name__ == "__main__":
    main()
