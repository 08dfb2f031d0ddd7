"""One sampling run through ``comfy.sample.sample``, and what is measured on it.

* wall seconds of the whole ``comfy.sample.sample`` call, and per-step seconds from the sampler callback (which
  fires right after each step's model call: step i lasts from callback i-1, or the start, to callback i); also
  the process CPU seconds (all threads), which other processes on the machine disturb less than wall time;
* peak RSS delta: the kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` before the
  run, after ``gc.collect()`` and ``malloc_trim(0)`` so freed heap from earlier runs does not hide new allocations;
  where that is not available, ``ru_maxrss`` (monotonic, so deltas are lower bounds);
* FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (matrix products only, as SODA's own counter);
* fidelity of a final latent against the full-compute one: PSNR and SSIM of the latent preview decode
  (``latent_preview_rgb``, one pixel per latent pixel) and the relative L2 of the latents.
"""

from __future__ import annotations

import ctypes
import gc
import math
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .env import load_average


@dataclass
class Context:
    """Everything identical across methods: seeds, noise, latent, conditioning, sampler.

    ``seeds[r]`` is the noise seed of timed repeat ``r``: one seed for every repeat (the runs of a method must be
    bit-identical), or a new seed per repeat (``distinct_repeats``: more samples for the fidelity figures)."""

    steps: int
    cfg: float
    sampler: str
    scheduler: str
    seeds: list[int]
    positive: Any
    negative: Any
    latent: torch.Tensor

    @classmethod
    def create(cls, model: Any, setting: Any, steps: int, positive: Any, negative: Any) -> Context:
        import comfy.sample

        latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros(setting.latent_shape))
        seeds = [setting.seed + (r if setting.distinct_repeats else 0) for r in range(setting.repeats)]
        return cls(steps, setting.cfg, setting.sampler, setting.scheduler, seeds, positive, negative, latent)

    @property
    def seed(self) -> int:
        return self.seeds[0]

    def noise(self, repeat: int = 0) -> torch.Tensor:
        import comfy.sample

        return comfy.sample.prepare_noise(self.latent, self.seeds[repeat])


@dataclass
class Sample:
    latent: torch.Tensor
    seconds: float
    step_seconds: list[float]
    peak_rss_mb: float
    cpu_seconds: float = 0.0  # process CPU time (all threads): less sensitive than wall time to other processes
    load: list[float] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------- memory

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRss:
    """Peak resident memory above the level at ``start()``, in MB."""

    method = "unknown"

    def start(self) -> None:
        gc.collect()
        _malloc_trim()
        self._hwm = False
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self._hwm = True
        except OSError:
            pass
        self._base_kb = _status_kb("VmRSS") if self._hwm else None
        if self._base_kb is None:
            self._hwm = False
            self._base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        PeakRss.method = "VmHWM reset via /proc/self/clear_refs" if self._hwm else "ru_maxrss (lower bound)"

    def stop(self) -> float:
        peak = _status_kb("VmHWM") if self._hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0.0, ((peak or 0) - self._base_kb) / 1024.0)


# ----------------------------------------------------------------------------------------------------- sampling


def _sample(model: Any, ctx: Context, callback: Any, repeat: int = 0) -> torch.Tensor:
    import comfy.sample

    return comfy.sample.sample(
        model,
        ctx.noise(repeat),
        ctx.steps,
        ctx.cfg,
        ctx.sampler,
        ctx.scheduler,
        ctx.positive,
        ctx.negative,
        ctx.latent,
        denoise=1.0,
        callback=callback,
        disable_pbar=True,
        seed=ctx.seeds[repeat],
    )


def sample(model: Any, ctx: Context, repeat: int = 0) -> Sample:
    """One timed sampling run (of repeat ``repeat``'s noise)."""
    marks: list[float] = []

    def callback(step: int, x0: torch.Tensor, x: torch.Tensor, total: int) -> None:
        marks.append(time.perf_counter())

    rss = PeakRss()
    load = load_average()
    rss.start()
    cpu = time.process_time()
    start = time.perf_counter()
    latent = _sample(model, ctx, callback, repeat)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = rss.stop()
    edges = [start, *marks]
    steps = [b - a for a, b in zip(edges, edges[1:])]
    return Sample(latent, seconds, steps, peak, cpu, load)


def count_flops(model: Any, ctx: Context) -> tuple[float, torch.Tensor]:
    """Total FLOPs of one sampling run as FlopCounterMode counts them, and the run's latent (untimed)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        latent = _sample(model, ctx, None)
    return float(counter.get_total_flops()), latent


def sigmas_of(model: Any, ctx: Context) -> torch.Tensor:
    """The sigmas a run with ``ctx`` samples on (what a SODA schedule is planned over)."""
    import comfy.samplers

    sampling = model.get_model_object("model_sampling")
    return comfy.samplers.calculate_sigmas(sampling, ctx.scheduler, ctx.steps).double().cpu()


# ----------------------------------------------------------------------------------------------------- fidelity


def preview(latent_format: Any, latent: torch.Tensor) -> torch.Tensor:
    """The latent preview decode, one pixel per latent pixel: IMAGE (B, H, W, 3)."""
    from comfyui_soda.nodes.reference_model import latent_preview_rgb

    return latent_preview_rgb(latent_format, latent, 1)


def fidelity(latent_format: Any, reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, Any]:
    """PSNR, SSIM of the previews and relative L2 of the latents, over the whole batch (all samples)."""
    from comfyui_soda.soda_core.metrics import psnr, relative_l2, ssim

    ref_image, image = preview(latent_format, reference), preview(latent_format, candidate)
    identical = bool(torch.equal(reference, candidate))
    value = psnr(ref_image, image)
    return {
        "psnr": value if math.isfinite(value) else None,
        "ssim": ssim(ref_image, image),
        "rel_l2_latent": relative_l2(reference, candidate),
        "identical": identical,
    }
