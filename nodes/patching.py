"""ComfyUI glue for SODA runs: install SODA's seams on a ModelPatcher clone and give each sampling run its own state.

Seams used (no ComfyUI code is edited or copied; all are undone by ComfyUI when another clone of the model loads):
  * OUTER_SAMPLE wrapper: creates the ``SodaRun`` of a run from its sigmas and puts it in the patched model's run
    slot; ``finally`` empties the slot, logs the summary and drops every cache;
  * APPLY_MODEL wrapper: tells the run the sigma, the rows, what else the call computes and the shapes of each
    model call (and lets it measure FLOPs on the first call of a shape);
  * object patches of each served block's ``forward`` and of the ``forward`` of the block submodules its program
    intercepts (``soda_core.seams``): pass-throughs unless a SODA run is active;
  * ``transformer_options["optimized_attention_override"]``: attention calls inside served blocks (an override set
    before SODA's is called by it).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import comfy.model_patcher
import comfy.patcher_extension
import torch

from ..soda_core.adapters import ServedModel, serve
from ..soda_core.adapters.patterns import program_for
from ..soda_core.layout import Granularity
from ..soda_core.policy import FixedPolicy, RunContext, RunPolicy
from ..soda_core.run_report import RunReport
from ..soda_core.runtime import CostBook, SodaRun
from ..soda_core.schedule import Schedule
from ..soda_core.seams import AttentionSeam, BlockSeam, RunSlot, Shared, TapSeam
from ..soda_core.tokens import TokenScore


logger = logging.getLogger(__name__)

WRAPPER_KEY = "soda"
OPTIONS_KEY = "soda"  # transformer_options entry holding the SodaHook of a patched model
ATTENTION_OVERRIDE = "optimized_attention_override"
REPORTS_KEPT = 16


def comfy_version() -> str:
    try:
        from comfyui_version import __version__

        return str(__version__)
    except ImportError:
        return "unknown"


def prepare(model: comfy.model_patcher.ModelPatcher, granularity: Granularity = Granularity.MODULE) -> ServedModel:
    """The served blocks and layout of a ComfyUI model (a family without a record is served at block granularity,
    which its notes say)."""
    served = serve(model.get_model_object("diffusion_model"), granularity)
    for note in served.family.notes:
        logger.warning("%s", note)
    return served


@dataclass(eq=False)
class SodaHook(Shared):
    """What a patched model carries: the policy that sets up each run, and what runs reported. Shared by every
    clone of the patched model (ComfyUI deep-copies model options when it clones)."""

    served: ServedModel
    policy: RunPolicy
    score: TokenScore = TokenScore.MEAN
    reports: deque[RunReport] = field(default_factory=lambda: deque(maxlen=REPORTS_KEPT))
    slot: RunSlot = field(default_factory=RunSlot)
    costs: CostBook = field(default_factory=CostBook)

    def start(self, context: RunContext) -> tuple[SodaRun, str]:
        setup = self.policy.begin(context)
        where = f"ComfyUI {comfy_version()}"
        run = SodaRun(self.served, setup.schedule, self.score, setup.observer, self.costs, where, setup.timer)
        return run, setup.message


def planned(served: ServedModel, schedule_for: Callable[[torch.Tensor], Schedule], **kwargs: Any) -> SodaHook:
    """A hook whose runs follow ``schedule_for(sigmas)`` (``kwargs``: ``score``; ``observer_for``, ``on_finish``
    of ``FixedPolicy``)."""
    score = kwargs.pop("score", TokenScore.MEAN)
    return SodaHook(served, FixedPolicy(schedule_for, **kwargs), score)


def _own_forward(module: torch.nn.Module) -> Callable[..., Any]:
    """The forward a module's class defines, bound to it (not an instance patch another clone may have left)."""
    return type(module).forward.__get__(module)  # type: ignore[no-any-return]


def install(model: comfy.model_patcher.ModelPatcher, hook: SodaHook) -> None:
    """Put SODA's wrappers, object patches and attention override on ``model`` (a clone the caller owns)."""
    options = model.model_options["transformer_options"]
    options[OPTIONS_KEY] = hook
    previous = options.get(ATTENTION_OVERRIDE)
    if isinstance(previous, AttentionSeam):  # patching a SODA model again replaces the earlier SODA patch
        logger.warning("SODA: this model is already SODA-patched; the new patch replaces the earlier one.")
        previous = previous.previous
    options[ATTENTION_OVERRIDE] = AttentionSeam(hook.slot, previous)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, _apply_model)
    modular = hook.served.granularity is Granularity.MODULE
    for index, layer in enumerate(hook.served.layers):
        prefix = f"diffusion_model.{layer.path}"
        model.add_object_patch(f"{prefix}.forward", BlockSeam(hook.slot, index, _own_forward(layer.block)))
        for tap, (path, _) in enumerate(program_for(layer.spec, modular).taps):
            try:
                submodule = layer.block.get_submodule(path)
            except AttributeError:
                continue  # the behavioural check notices the missing submodule on the first call
            model.add_object_patch(f"{prefix}.{path}.forward", TapSeam(hook.slot, index, tap, _own_forward(submodule)))


def sampler_name(sampler: Any) -> str:
    """The name of a ComfyUI sampler object (KSAMPLER wraps a ``sample_<name>`` function)."""
    function = getattr(sampler, "sampler_function", None)
    function = getattr(function, "func", function)  # functools.partial
    name = getattr(function, "__name__", None) or type(sampler).__name__
    return name.removeprefix("sample_")


def run_context(guider: Any, args: tuple[Any, ...]) -> RunContext:
    """What the sampling run that ``CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, ...)`` starts does."""
    latent, sampler, sigmas = args[1], args[2], args[3]
    cfg = float(getattr(guider, "cfg", 1.0))
    return RunContext(sigmas.detach().double().cpu(), sampler_name(sampler), tuple(latent.shape), cfg)


def show(text: str) -> None:
    """Show ``text`` on the node that is executing (the sampler), where ComfyUI shows a node's progress text."""
    if not text:
        return
    logger.info("%s", text)
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return
    context, server = get_executing_context(), getattr(PromptServer, "instance", None)
    if context is not None and server is not None:
        server.send_progress_text(text, context.node_id)


def _outer_sample(executor: Any, *args: Any, **kwargs: Any) -> Any:
    guider = executor.class_obj
    hook: SodaHook = guider.model_options["transformer_options"][OPTIONS_KEY]
    run, message = hook.start(run_context(guider, args))
    show(message)
    outer, hook.slot.run = hook.slot.run, run
    completed = False
    try:
        out = executor(*args, **kwargs)
        completed = True
        return out
    finally:
        hook.slot.run = outer
        report = run.finish()
        hook.reports.append(report)
        logger.info("SODA: %s", report.summary())
        show(hook.policy.end(run, completed))


def _name(value: Any) -> str:
    return str(getattr(value, "__qualname__", None) or type(value).__qualname__)


def computation_identity(options: dict[str, Any]) -> Hashable:
    """What, besides the rows, tells one model call's computation from another's: the block and attention
    replacements and patches other nodes put in ``transformer_options`` (e.g. SkipLayerGuidance's skipped layers),
    by kind, key and function name, so it stays the same from step to step."""
    parts: list[tuple[str, ...]] = []
    for kind, entries in (options.get("patches_replace") or {}).items():
        parts.extend((str(kind), str(key), _name(fn)) for key, fn in entries.items())
    for kind, functions in (options.get("patches") or {}).items():
        parts.append((str(kind), *(_name(fn) for fn in functions)))
    return tuple(sorted(parts))


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
    hook: SodaHook | None = options.get(OPTIONS_KEY)
    run = hook.slot.run if hook is not None else None
    if run is None:
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
    rows = tuple(int(c) for c in options.get("cond_or_uncond", ()))
    context = int(c_crossattn.shape[1]) if torch.is_tensor(c_crossattn) and c_crossattn.dim() >= 2 else 0
    # the one host read of a device value per model call: the step is decided in Python from the sigma
    run.begin_call(x, float(t.flatten()[0]), context, rows, computation_identity(options))
    with run.measuring():
        return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)
