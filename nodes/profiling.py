"""OFS inside ComfyUI: sample at full compute through ComfyUI's own sampler and record module sensitivities."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.utils
import latent_preview
import torch

from ..soda_core.adapters import ServedModel
from ..soda_core.layout import Granularity, ModelLayout
from ..soda_core.profile import SensitivityProfile
from ..soda_core.profiler import ProfileConfig, SensitivityRecorder, check_memory
from ..soda_core.runtime import SodaRun
from ..soda_core.schedule import Schedule
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


@dataclass
class _Collector:
    layout: ModelLayout
    config: ProfileConfig
    recorder: SensitivityRecorder | None = None
    sigmas: torch.Tensor | None = None
    runs: list[SodaRun] = field(default_factory=list)

    def observer_for(self, sigmas: torch.Tensor) -> Any:
        if self.recorder is None:
            self.recorder, self.sigmas = SensitivityRecorder(self.layout, sigmas.numel() - 1, self.config), sigmas
        elif self.sigmas is None or not torch.equal(self.sigmas, sigmas):
            raise RuntimeError("SODA profiling: calibration runs sampled on different sigmas.")
        self.recorder.new_run()
        return self.recorder.observe


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
    _check_memory_before(model, served, config, latent_image, positive, settings)
    collector = _Collector(layout, config)
    clone = model.clone()
    hook = SodaHook(
        served,
        lambda sigmas: Schedule.full_compute(layout, sigmas),
        score=config.score,
        observer_for=collector.observer_for,
        on_finish=collector.runs.append,
    )
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
    if collector.recorder is None or collector.sigmas is None or not collector.runs:
        raise RuntimeError("SODA profiling: sampling finished without calling the model.")
    last = collector.runs[-1]
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
        "image_tokens": last.tokens.image,
        "text_tokens": last.tokens.text,
        "seconds": round(sum(r.seconds for r in hook.reports), 3),
    }
    profile = collector.recorder.result(collector.sigmas, last.flop_model(), meta)
    return only_prunable(profile, last.prunable()), {**latent, "samples": samples}


def only_prunable(profile: SensitivityProfile, cells: set[tuple[int, str]]) -> SensitivityProfile:
    """The profile with E_p = inf (never recompute selected tokens) wherever the served program cannot."""
    if not profile.has_prune_error:
        return profile
    prune = profile.prune_error.clone()
    for layer in range(profile.layout.num_layers):
        for m, module in enumerate(profile.layout.modules):
            if (layer, module) not in cells:
                prune[:, layer, m] = float("inf")
    return dataclasses.replace(profile, prune_error=prune)


def _check_memory_before(
    model: Any,
    served: ServedModel,
    config: ProfileConfig,
    latent: torch.Tensor,
    positive: Any,
    settings: SamplingSettings,
) -> None:
    """Enforce the ring-buffer bound before any sampling starts, from the latent and conditioning shapes."""
    diffusion_model = model.get_model_object("diffusion_model")
    layout = served.layout
    image = served.image_tokens(latent.shape)  # as the run counts them (a video latent's patch is one per dim)
    text = max((int(c[0].shape[1]) for c in positive), default=0)
    rows = latent.shape[0] * (2 if settings.cfg != 1.0 else 1)
    channels = int(getattr(diffusion_model, "hidden_size", 0))
    on_gpu = model.load_device.type != "cpu"
    itemsize = 2 if (config.half_precision_ring or (config.half_precision_ring is None and on_gpu)) else 4
    need = check_memory(layout, config, rows, text + image, channels, itemsize)
    logger.info("SODA profiling: ring buffer of %.0f MB (%s)", need / 2**20, layout.describe())
