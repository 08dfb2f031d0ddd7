"""MagCache-like and TeaCache-like step caches: what users install instead of SODA, re-implemented for the benchmark
from the methods' papers and READMEs (no peer code), hooked the way ComfyUI core's EasyCache hooks.

Both decide at every sampling step whether to run the diffusion model or to reuse the residual of the last step it
ran, ``out = x + (out_prev - x_prev)``, so a skipped step costs no transformer FLOPs.

* **MagCache-like** (Ma et al. 2025, magnitude-aware cache): a per-step *magnitude ratio* ``||r_t|| / ||r_{t-1}||``
  of consecutive residuals ``r = out - x`` (mean over latent positions of the channel norms), measured once on a
  full-compute calibration run. While sampling, over the steps skipped since the last computed one, ``ratio *=
  mag_ratio[t]`` and ``error += |1 - ratio|``; the step is skipped while ``error < threshold`` and at most ``K``
  steps in a row are skipped; the first ``retention`` share of the steps is always computed. No tensor of the run is
  read: the schedule is fixed by the calibration.
* **TeaCache-like** (Liu et al. 2024, timestep-embedding aware cache): the relative L1 distance between consecutive
  steps of the first block's timestep-modulated image input (Flux: ``(1 + scale) * norm1(img) + shift`` of
  ``double_blocks[0]``), rescaled by a polynomial (degree <= 4) fitted on the calibration run to the relative L1
  change of the residual; accumulated, skip while below ``threshold``, reset on every computed step; the first and
  the last step are computed.

Differences from the originals, so the comparison is read right: the residual is the whole model call's output minus
its input in latent space (EasyCache's "cache diff"; the originals take the block stack's hidden-state residual and
still run the final layer); calibration is one full-compute run of the benchmark setting on its calibration seed
(the papers fit over many prompts); TeaCache's rescaled distance is clamped at 0; a calibration curve of another
length is read at the same relative position. The step is the run's sigma nearest the call's; the first call of a
step decides, later calls at that step (e.g. an uncond batch run on its own) follow when they hold a residual.

Hooks (config -> state with ``reset()`` -> hook -> ``apply_*``), as EasyCache: ``apply_*`` clones the ModelPatcher,
puts the frozen config in ``transformer_options`` and adds keyed wrappers. OUTER_SAMPLE creates the run's state in a
clone of the guider's options and, in ``finally``, logs ``<name> - skipped S/T steps`` and resets it; DIFFUSION_MODEL
decides, reuses or computes and stores the residual. TeaCache-like also replaces ``double_blocks[0]`` through
``patches_replace["dit"]`` to read its modulated input; a skip ends the call there with an exception its own
DIFFUSION_MODEL wrapper catches (the input embeddings and the modulation ran: the decision's cost, counted as FLOPs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .peer_cache_rules import (
    TEA_DEGREE,
    MagCacheConfig,
    MagCacheRule,
    TeaCacheConfig,
    TeaCacheRule,
    fit_rescale,
)


logger = logging.getLogger(__name__)

MAGCACHE_KEY = "magcache_like"
TEACACHE_KEY = "teacache_like"
MAGCACHE = "MagCache-like"
TEACACHE = "TeaCache-like"
NAMES = {MAGCACHE_KEY: MAGCACHE, TEACACHE_KEY: TEACACHE}
RUN_SUFFIX = "_run"  # transformer_options[<key> + RUN_SUFFIX]: the active run's state (OUTER_SAMPLE wrapper)
# ------------------------------------------------------------------------------------------------ run state, hooks


class _Skip(Exception):
    """Control flow, not an error: ends a skipped TeaCache-like call inside its first block."""


class PeerRun:
    """One sampling run's state: the rule, the step, the residual of each stream (created by the OUTER_SAMPLE
    wrapper, emptied by ``reset`` in its ``finally``)."""

    def __init__(self, name: str, rule: MagCacheRule | TeaCacheRule, sigmas: torch.Tensor) -> None:
        self.name, self.rule = name, rule
        self.sigmas = sigmas.detach().double().cpu()[:-1]
        self.steps = int(self.sigmas.numel())
        self.residuals: dict[Any, torch.Tensor] = {}
        self.previous: torch.Tensor | None = None  # TeaCache-like: the last step's modulated input
        self.step, self.skip, self.deciding, self.skipped = -1, False, False, 0
        self.can_skip = False  # TeaCache-like: the deciding call's stream holds a residual of its shape
        self.block: Any = None

    def reset(self) -> None:
        self.rule.reset()
        self.residuals.clear()
        self.previous, self.block = None, None
        self.step, self.skip, self.deciding, self.skipped, self.can_skip = -1, False, False, 0, False

    def enter(self, sigma: torch.Tensor) -> bool:
        """Set the step of a call at ``sigma``; True for the first call of a step (the one that decides)."""
        step = int(torch.argmin((self.sigmas - float(sigma.flatten()[0])).abs()))
        first, self.step = step != self.step, step
        return first

    def usable(self, key: Any, x: torch.Tensor) -> bool:
        cached = self.residuals.get(key)
        return cached is not None and cached.shape == x.shape

    def reuse(self, key: Any, x: torch.Tensor, first: bool) -> torch.Tensor:
        self.skipped += int(first)
        return x + self.residuals[key]


def _options(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The transformer_options of a DIFFUSION_MODEL call (the last positional argument, as EasyCache reads it)."""
    options = args[-1] if args and isinstance(args[-1], dict) else kwargs.get("transformer_options")
    return options if isinstance(options, dict) else {}


def _stream(options: dict[str, Any]) -> Any:
    return tuple(options.get("uuids") or options.get("cond_or_uncond") or ())


def _sample_with(key: str, make_rule: Callable[[Any, int], Any], executor: Any, *args: Any, **kwargs: Any) -> Any:
    """OUTER_SAMPLE body: a fresh PeerRun for this run in a clone of the guider's options; reset in ``finally``."""
    import comfy.model_patcher

    guider = executor.class_obj
    original = guider.model_options
    run: PeerRun | None = None
    try:
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        options = guider.model_options["transformer_options"]
        config, sigmas = options[key], args[3]
        run = PeerRun(NAMES[key], make_rule(config, sigmas.numel() - 1), sigmas)
        options[key + RUN_SUFFIX] = run
        return executor(*args, **kwargs)
    finally:
        if run is not None:
            speedup, threshold = run.steps / max(run.steps - run.skipped, 1), run.rule.config.threshold
            line = f"skipped {run.skipped}/{run.steps} steps ({speedup:.2f}x speedup; threshold {threshold:g})"
            logger.info("%s - %s", run.name, line)
            run.reset()
        guider.model_options = original


# ------------------------------------------------------------------------------------------ MagCache-like: hooks


def _mag_outer_sample(executor: Any, *args: Any, **kwargs: Any) -> Any:
    return _sample_with(MAGCACHE_KEY, MagCacheRule, executor, *args, **kwargs)


def _mag_forward(executor: Any, *args: Any, **kwargs: Any) -> Any:
    options = _options(args, kwargs)
    run: PeerRun | None = options.get(MAGCACHE_KEY + RUN_SUFFIX)
    if run is None:  # called outside a sampling run of this clone
        return executor(*args, **kwargs)
    x, key = args[0], _stream(options)
    first = run.enter(options["sigmas"])
    if first:
        run.skip = run.rule.decide(run.step)
    if run.skip and run.usable(key, x):
        return run.reuse(key, x, first)
    if run.skip and first:
        run.rule.reset()  # no residual to reuse: computed, so the accumulators start again
        run.skip = False
    out = executor(*args, **kwargs)
    run.residuals[key] = out - x
    return out


def apply_magcache(model: Any, config: MagCacheConfig) -> Any:
    """A clone of ``model`` sampling with the MagCache-like cache."""
    import comfy.patcher_extension as ext

    patched = model.clone()
    patched.model_options["transformer_options"][MAGCACHE_KEY] = config
    patched.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, MAGCACHE_KEY, _mag_outer_sample)
    patched.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, MAGCACHE_KEY, _mag_forward)
    return patched


# ------------------------------------------------------------------------------------------ TeaCache-like: hooks


def first_block(diffusion_model: Any) -> Any:
    """The first double block of a Flux-style model, whose modulated image input TeaCache-like reads."""
    blocks = getattr(diffusion_model, "double_blocks", None)
    if not blocks or not hasattr(blocks[0], "img_norm1"):
        raise ValueError(
            f"TeaCache-like: {type(diffusion_model).__name__} has no Flux-style first double block "
            "(double_blocks[0] with img_norm1 and img_mod); use it on Flux-family models."
        )
    return blocks[0]


def modulated_input(block: Any, img: torch.Tensor, vec: Any) -> torch.Tensor:
    """``(1 + scale) * norm1(img) + shift`` of the block's first image modulation (Flux; Flux.2's global
    modulation hands the block ``((img_mod1, img_mod2), txt_mods)`` instead of ``vec``)."""
    mod = vec[0][0] if isinstance(vec, tuple) else block.img_mod(vec)[0]
    return (1 + mod.scale) * block.img_norm1(img) + mod.shift


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    return float((current - previous).abs().mean() / previous.abs().mean().clamp_min(1e-12))


def _tea_outer_sample(executor: Any, *args: Any, **kwargs: Any) -> Any:
    return _sample_with(TEACACHE_KEY, TeaCacheRule, executor, *args, **kwargs)


def _tea_forward(executor: Any, *args: Any, **kwargs: Any) -> Any:
    options = _options(args, kwargs)
    run: PeerRun | None = options.get(TEACACHE_KEY + RUN_SUFFIX)
    if run is None:
        return executor(*args, **kwargs)
    x, key = args[0], _stream(options)
    first = run.enter(options["sigmas"])
    if not first and run.skip and run.usable(key, x):
        return run.reuse(key, x, first)
    run.block, run.deciding, run.can_skip = first_block(executor.class_obj), first, run.usable(key, x)
    if first:
        run.skip = False
    try:
        out = executor(*args, **kwargs)
    except _Skip:
        return run.reuse(key, x, first)
    finally:
        run.deciding = False
    run.residuals[key] = out - x
    return out


def _tea_first_block(args: dict[str, Any], extra: dict[str, Any]) -> Any:
    """``patches_replace["dit"][("double_block", 0)]``: the decision of the step's first call, then the block."""
    run: PeerRun | None = (args.get("transformer_options") or {}).get(TEACACHE_KEY + RUN_SUFFIX)
    if run is not None and run.deciding:
        run.deciding = False
        current = modulated_input(run.block, args["img"], args["vec"]).detach()
        distance = None if run.previous is None else relative_l1(current, run.previous)
        run.previous = current
        run.skip = run.rule.decide(run.step, distance)
        if run.skip and run.can_skip:
            raise _Skip
        if run.skip:
            run.rule.reset()
            run.skip = False
    return extra["original_block"](args)


def apply_teacache(model: Any, config: TeaCacheConfig) -> Any:
    """A clone of ``model`` sampling with the TeaCache-like cache (Flux-family models)."""
    import comfy.patcher_extension as ext

    first_block(model.get_model_object("diffusion_model"))
    patched = model.clone()
    patched.model_options["transformer_options"][TEACACHE_KEY] = config
    patched.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, TEACACHE_KEY, _tea_outer_sample)
    patched.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, TEACACHE_KEY, _tea_forward)
    patched.set_model_patch_replace(_tea_first_block, "dit", "double_block", 0)
    return patched


# -------------------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Calibration:
    """What one full-compute calibration run measured (per step after the first)."""

    steps: int
    mag_ratios: tuple[float, ...]  # length steps, [0] = 1
    distances: tuple[float, ...]  # rel. L1 of the first block's modulated input to the previous step's
    changes: tuple[float, ...]  # rel. L1 change of the residual from the previous step's
    coefficients: tuple[float, ...]  # TeaCache-like rescaling, fitted changes ~ p(distances)
    seconds: float = 0.0


class _Recorder:
    """Observes a full-compute run (first call of each step): residual ratios and changes, modulated inputs."""

    def __init__(self) -> None:
        self.sigma: float | None = None
        self.first, self.block = False, None
        self.residual: torch.Tensor | None = None
        self.modulated: torch.Tensor | None = None
        self.ratios: list[float] = []
        self.changes: list[float] = []
        self.distances: list[float] = []

    def forward(self, executor: Any, *args: Any, **kwargs: Any) -> Any:
        options = _options(args, kwargs)
        sigma = float(options["sigmas"].flatten()[0])
        self.first, self.sigma = sigma != self.sigma, sigma
        self.block = first_block(executor.class_obj)
        out = executor(*args, **kwargs)
        if self.first:
            residual = (out - args[0]).detach()
            if self.residual is not None:
                norms = residual.norm(dim=1) / self.residual.norm(dim=1).clamp_min(1e-12)
                self.ratios.append(float(norms.mean()))
                self.changes.append(relative_l1(residual, self.residual))
            self.residual = residual
        return out

    def block_patch(self, args: dict[str, Any], extra: dict[str, Any]) -> Any:
        if self.first:
            current = modulated_input(self.block, args["img"], args["vec"]).detach()
            if self.modulated is not None:
                self.distances.append(relative_l1(current, self.modulated))
            self.modulated = current
        return extra["original_block"](args)


def calibrate(model: Any, run: Callable[[Any], Any], degree: int = TEA_DEGREE) -> Calibration:
    """One full-compute run ``run(clone)`` of an observing clone of ``model``: MagCache's ratios and TeaCache's
    rescaling polynomial for this model, sampler and step count."""
    import time

    import comfy.patcher_extension as ext

    recorder = _Recorder()
    clone = model.clone()
    clone.add_wrapper_with_key(ext.WrappersMP.DIFFUSION_MODEL, "peer_calibration", recorder.forward)
    clone.set_model_patch_replace(recorder.block_patch, "dit", "double_block", 0)
    start = time.perf_counter()
    run(clone)
    seconds = time.perf_counter() - start
    steps = len(recorder.ratios) + 1
    coefficients = fit_rescale(recorder.distances, recorder.changes, degree)
    logger.info("bench: peer caches calibrated on %d steps in %.1f s", steps, seconds)
    ratios, distances, changes = (1.0, *recorder.ratios), tuple(recorder.distances), tuple(recorder.changes)
    return Calibration(steps, ratios, distances, changes, coefficients, seconds)
