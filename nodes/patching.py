"""ComfyUI glue for SODA runs: install the hooks on a ModelPatcher clone and give each sampling run its own state.

Seams used (no ComfyUI code is edited or copied):
  * OUTER_SAMPLE wrapper: creates the ``SodaRun`` for this run from the run's sigmas; ``finally`` logs the summary,
    drops every cache and restores the guider's model options;
  * APPLY_MODEL wrapper: tells the run the sigma, CFG stream and latent/text shapes of each model call;
  * ``patches_replace["dit"]`` on every block: runs the block as the schedule says.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import comfy.model_patcher
import comfy.patcher_extension
import torch

from ..soda_core.adapters import Granularity, ModelAdapter, adapter_for, check_block_source, model_layout
from ..soda_core.layout import ModelLayout
from ..soda_core.runtime import RunReport, SodaRun, StepObserver
from ..soda_core.schedule import Schedule
from ..soda_core.tokens import TokenScore


logger = logging.getLogger(__name__)

WRAPPER_KEY = "soda"
OPTIONS_KEY = "soda"  # transformer_options entry holding the SodaHook of a patched model
RUN_KEY = "soda_run"  # transformer_options entry holding the SodaRun of the current sampling run


def comfy_version() -> str:
    try:
        from comfyui_version import __version__

        return str(__version__)
    except ImportError:
        return "unknown"


def _resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _linear_weights(cast: Callable[..., Any]) -> Callable[[torch.nn.Module, torch.Tensor], Any]:
    """Weights of a linear layer as ComfyUI would use them for ``x`` (device/dtype casts, LoRA weight functions)."""

    def weights(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if hasattr(module, "weight_function"):
            return cast(module, x)  # type: ignore[no-any-return]
        return module.weight, module.bias  # type: ignore[return-value]

    return weights


def resolve_ops(adapter: ModelAdapter) -> dict[str, Callable[..., Any]]:
    ops = {name: _resolve(path) for name, path in adapter.functions.items()}
    ops["linear_weights"] = _linear_weights(ops["linear_weights"])
    return ops


def prepare(
    model: comfy.model_patcher.ModelPatcher, granularity: Granularity = Granularity.MODULE
) -> tuple[ModelAdapter, ModelLayout]:
    """The adapter and layout of a ComfyUI model; refuses models whose block code SODA does not mirror."""
    diffusion_model = model.get_model_object("diffusion_model")
    adapter = adapter_for(diffusion_model)
    for attribute, _ in adapter.block_lists:
        blocks = getattr(diffusion_model, attribute)
        if len(blocks):
            check_block_source(adapter, type(blocks[0]), comfy_version())
    return adapter, model_layout(adapter, diffusion_model, granularity)


@dataclass
class SodaHook:
    """What a patched model carries: how to make the schedule and observer of each run, and what runs reported."""

    adapter: ModelAdapter
    schedule_for: Callable[[torch.Tensor], Schedule]
    score: TokenScore = TokenScore.MEAN
    observer_for: Callable[[torch.Tensor], StepObserver | None] = lambda sigmas: None
    on_finish: Callable[[SodaRun], None] | None = None
    reports: list[RunReport] = field(default_factory=list)

    def start(self, sigmas: torch.Tensor) -> SodaRun:
        schedule = self.schedule_for(sigmas)
        return SodaRun(self.adapter, schedule, resolve_ops(self.adapter), self.score, self.observer_for(sigmas))


def install(model: comfy.model_patcher.ModelPatcher, hook: SodaHook, layout: ModelLayout) -> None:
    """Put SODA's wrappers and block patches on ``model`` (a clone the caller owns)."""
    model.model_options["transformer_options"][OPTIONS_KEY] = hook
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, _apply_model)
    for block in layout.blocks:
        model.set_model_patch_replace(_BlockPatch(block.kind, block.index), "dit", block.kind, block.index)


def _outer_sample(executor: Any, *args: Any, **kwargs: Any) -> Any:
    guider = executor.class_obj
    original_options = guider.model_options
    hook: SodaHook = original_options["transformer_options"][OPTIONS_KEY]
    sigmas = args[3]  # CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, ...)
    run = hook.start(sigmas.detach().double().cpu())
    guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
    guider.model_options["transformer_options"][RUN_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original_options
        if hook.on_finish is not None:
            hook.on_finish(run)
        report = run.finish()
        hook.reports.append(report)
        logger.info("SODA: %s", report.summary())


def _apply_model(
    executor: Any,
    x: torch.Tensor,
    t: torch.Tensor,
    c_concat: Any = None,
    c_crossattn: Any = None,
    control: Any = None,
    transformer_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    options = transformer_options if transformer_options is not None else {}
    run: SodaRun | None = options.get(RUN_KEY)
    if run is not None:
        stream = tuple(int(c) for c in options.get("cond_or_uncond", ()))
        # the one host read of a device value per model call: the step is decided in Python from the sigma
        run.begin_call(executor.class_obj.diffusion_model, x, float(t.flatten()[0]), c_crossattn, stream)
    return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)


class _BlockPatch:
    """``patches_replace["dit"][(kind, index)]``: hands the block call to the run (or runs it as is, outside one)."""

    def __init__(self, kind: str, index: int) -> None:
        self.kind, self.index = kind, index

    def __call__(self, args: dict[str, Any], extra: dict[str, Any]) -> dict[str, torch.Tensor]:
        original = extra["original_block"]
        options = args.get("transformer_options") or {}
        run: SodaRun | None = options.get(RUN_KEY)
        if run is None:
            return original(args)  # type: ignore[no-any-return]
        return run.run_block(self.kind, self.index, run.block_module(self.kind, self.index), args, original)
