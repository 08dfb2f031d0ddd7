"""OFS inside ComfyUI: sample at full compute through ComfyUI's own sampler and record module sensitivities."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.utils
import latent_preview
import torch

from ..soda_core.adapters import ServedModel
from ..soda_core.layout import Granularity
from ..soda_core.policy import ProfilingSession
from ..soda_core.profile import SensitivityProfile
from ..soda_core.profiler import ProfileConfig, check_memory
from .patching import SodaHook, comfy_version, install, prepare


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    """The KSampler settings a profile is measured with (same meaning as KSampler's inputs)."""

    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    denoise: float = 1.0
    runs: int = 1  # calibration runs, seeds seed, seed+1, ...


def profile_model(
    model: comfy.model_patcher.ModelPatcher,
    positive: Any,
    negative: Any,
    latent: dict[str, Any],
    settings: SamplingSettings,
    config: ProfileConfig,
    granularity: Granularity = Granularity.MODULE,
) -> tuple[SensitivityProfile, dict[str, Any]]:
    """Sample ``settings.runs`` times at full compute and return the profile and the last run's latent."""
    served = prepare(model, granularity)
    layout, granularity = served.layout, served.granularity
    diffusion_model = model.get_model_object("diffusion_model")
    if granularity is Granularity.BLOCK and config.measure_pruning:
        config = ProfileConfig(**{**config.__dict__, "measure_pruning": False})
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    _check_memory_before(model, served, config, latent_image, (positive, negative), settings)
    session = ProfilingSession(layout, config)
    clone = model.clone()
    hook = SodaHook(served, session, config.score)
    install(clone, hook)
    total = settings.steps * settings.runs
    progress = comfy.utils.ProgressBar(total)
    samples = latent_image
    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)
    for run in range(settings.runs):

        def callback(step: int, x0: torch.Tensor, x: torch.Tensor, steps: int, run: int = run) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
            progress.update_absolute(run * settings.steps + step + 1, total, preview)

        noise = comfy.sample.prepare_noise(latent_image, settings.seed + run, latent.get("batch_index"))
        samples = comfy.sample.sample(
            clone,
            noise,
            settings.steps,
            settings.cfg,
            settings.sampler_name,
            settings.scheduler,
            positive,
            negative,
            latent_image,
            denoise=settings.denoise,
            noise_mask=latent.get("noise_mask"),
            callback=callback,
            disable_pbar=True,
            seed=settings.seed + run,
        )
    meta = {
        "model_family": served.family.name,
        "model_class": type(diffusion_model).__name__,
        "granularity": granularity.value,
        "comfyui_version": comfy_version(),
        "steps": settings.steps,
        "sampler": settings.sampler_name,
        "scheduler": settings.scheduler,
        "denoise": settings.denoise,
        "cfg": settings.cfg,
        "calibration_runs": settings.runs,
        "latent_shape": list(latent_image.shape),
        "seconds": round(sum(r.seconds for r in hook.reports), 3),
    }
    return session.profile(meta), {**latent, "samples": samples}


def _check_memory_before(
    model: Any,
    served: ServedModel,
    config: ProfileConfig,
    latent: torch.Tensor,
    conditioning: Sequence[Any],
    settings: SamplingSettings,
) -> None:
    """Enforce the bound on every profiling buffer (``soda_core.profiler_memory``) before any sampling starts, from
    the latent and conditioning shapes and the widest module output the served blocks can produce."""
    image = served.image_tokens(latent.shape)
    text = max((int(c[0].shape[1]) for cond in conditioning for c in cond), default=0)
    rows = latent.shape[0] * (2 if settings.cfg != 1.0 else 1)
    on_gpu = model.load_device.type != "cpu"
    half = config.half_precision_ring or (config.half_precision_ring is None and on_gpu)
    compute_dtype = getattr(model.model, "manual_cast_dtype", None) or model.model.get_dtype()  # module outputs
    itemsize = 2 if half else int(compute_dtype.itemsize)
    width, layout = served.output_width(), served.layout  # the widest output; at most one width per module
    need = check_memory(layout, config, rows, text + image, width, itemsize, settings.steps, layout.num_modules)
    logger.info(
        "SODA profiling: %.0f MB of buffers (%s; %s)", need.total / 2**20, need.describe(), served.layout.describe()
    )
