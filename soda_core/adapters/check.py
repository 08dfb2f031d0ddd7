"""The behavioural check: does a block program serve a block class faithfully on the ComfyUI that runs?

The first time a block class runs under SODA in a process, on that call's real inputs:

1. the block's own forward gives the reference output;
2. the program at full compute (recording) must give it bit for bit, with every intercepted submodule called once
   and, where the program skips attention, the attention call reaching ComfyUI's attention override;
3. served entirely from the cache it just filled, it must give the reference again (up to rounding) and leave the
   cache unchanged (a block that updated a served output in place would corrupt it);
4. each module that can recompute selected tokens does so at half of them, the rest from that cache, and must give
   the reference again; a module that does not loses its partial recompute only.

A class that fails 1-3 is served at block granularity (its own forward and its residual), which the caller checks
the same way; a class that fails that too is not served (it runs as ComfyUI runs it). Verdicts are kept per class
for the process. The check costs a few extra calls of one block, once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..layout import Granularity
from .patterns import BlockProgram, FusedProgram, SubmoduleProgram, program_for
from .spec import BlockSpec
from .step import BlockCall, BlockStep, Cache


logger = logging.getLogger(__name__)

Tensor = torch.Tensor
MakeStep = Callable[[dict[str, float], Cache, bool], BlockStep]  # (ratios, cache, record) -> step
RunProgram = Callable[["BlockProgram", BlockStep, BlockCall], Any]  # runs a program with its step active


@dataclass(frozen=True)
class Verdict:
    program: BlockProgram | None  # None: not served
    reason: str = ""  # why the module program was not used (empty when it was)
    no_partial: frozenset[str] = field(default_factory=frozenset)  # modules whose partial recompute failed


class _Served(Protocol):
    @property
    def spec(self) -> BlockSpec: ...

    @property
    def block(self) -> torch.nn.Module: ...


_VERDICTS: dict[tuple[str, int, Granularity], Verdict] = {}


def _key(layer: _Served, granularity: Granularity) -> tuple[str, int, Granularity]:
    cls = type(layer.block)
    return f"{cls.__module__}.{cls.__qualname__}", id(layer.spec), granularity


def known_verdict(layer: _Served, granularity: Granularity) -> Verdict | None:
    return _VERDICTS.get(_key(layer, granularity))


def forget_verdicts() -> None:
    """Check every block class again (tests change block code under SODA)."""
    _VERDICTS.clear()


def verdict_for(
    layer: _Served, call: BlockCall, granularity: Granularity, make_step: MakeStep, run: RunProgram, where: str
) -> Verdict:
    """How SODA serves ``layer``'s block class: decided on its first call in this process (see the module)."""
    key = _key(layer, granularity)
    if key not in _VERDICTS:
        _VERDICTS[key] = _decide(layer, call, granularity, make_step, run, where)
    return _VERDICTS[key]


def _decide(
    layer: _Served, call: BlockCall, granularity: Granularity, make_step: MakeStep, run: RunProgram, where: str
) -> Verdict:
    name = _key(layer, granularity)[0]
    modular = granularity is Granularity.MODULE and layer.spec.program is not None
    program = program_for(layer.spec, modular)
    reason, no_partial = check_program(program, call, make_step, run)
    if not reason:
        if no_partial:
            logger.warning(
                "SODA: %s in %s: recomputing selected tokens of %s does not reproduce the block; these modules are "
                "computed or reused whole.",
                name,
                where,
                ", ".join(sorted(no_partial)),
            )
        return Verdict(program, "", no_partial)
    if modular:
        residual = program_for(layer.spec, False)
        fallback, _ = check_program(residual, call, make_step, run)
        if not fallback:
            logger.warning(
                "SODA: %s in %s: its module program does not match this block (%s). Serving it at block "
                "granularity: whole blocks are reused; per-module caching and token pruning are lost for it.",
                name,
                where,
                reason,
            )
            return Verdict(residual, reason)
        reason = f"{reason}; at block granularity {fallback}"
    logger.warning("SODA: %s in %s cannot be served (%s); it runs as ComfyUI runs it.", name, where, reason)
    return Verdict(None, reason)


def check_program(
    program: BlockProgram, call: BlockCall, make_step: MakeStep, run: RunProgram
) -> tuple[str, frozenset[str]]:
    """("", modules without partial recompute) when ``program`` serves this call's block, else (why not, {})."""
    try:
        return _check(program, call, make_step, run)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the program on this block is a failed check
        return f"it raised {type(error).__name__}: {error}", frozenset()


def _check(program: BlockProgram, call: BlockCall, make_step: MakeStep, run: RunProgram) -> tuple[str, frozenset[str]]:
    reference = _outputs(call, call.cloned().run())
    full = make_step(dict.fromkeys(program.modules, 1.0), {}, True)
    if not _equal(_outputs(call, run(program, full, call.cloned())), reference):
        return "at full compute it does not give the block's own output", frozenset()
    for path, optional in program.taps:
        if full.calls[path] != 1 and not (optional and full.calls[path] == 0):
            return f"the block calls its submodule {path!r} {full.calls[path]} times, not once", frozenset()
    for module in _skipped_attention(program, full.calls):
        if full.calls[f"attention:{module}"] == 0:
            return f"the attention of {module!r} does not reach ComfyUI's attention override", frozenset()
    cache = _copy(full.cache)
    reuse = make_step(dict.fromkeys(program.modules, 0.0), _copy(cache), False)
    if not _close(_outputs(call, run(program, reuse, call.cloned())), reference):
        return "served from its own cache it does not reproduce the block's output", frozenset()
    if not _same(reuse.cache, cache):
        return "the block updates the outputs it is served in place", frozenset()
    failed = set()
    for module in sorted(program.partial):
        ratios = dict.fromkeys(program.modules, 0.0)
        ratios[module] = 0.5
        step = make_step(ratios, _copy(cache), False)
        try:
            if not _close(_outputs(call, run(program, step, call.cloned())), reference):
                failed.add(module)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception:  # noqa: BLE001 - this module cannot recompute selected tokens; the rest still serves
            failed.add(module)
    return "", frozenset(failed)


def _skipped_attention(program: BlockProgram, calls: Counter[str]) -> list[str]:
    """Modules whose attention call the program skips on reuse (so it must be able to intercept it): those whose
    input linears ran (a module whose optional inputs this block does not have has no attention to skip)."""
    if isinstance(program, SubmoduleProgram):
        return [m.name for m in program.spec.modules if any(calls[i.path] for i in m.inputs)]
    if isinstance(program, FusedProgram):
        return [program.attn]
    return []


def _outputs(call: BlockCall, out: Any) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in call.outputs(out).items()}


def _equal(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _close(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    """Equal up to the rounding of a different order of the same products (relative to the output's scale)."""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape or not bool(torch.isfinite(x).all()):
            return False
        tolerance = 1e-4 if y.dtype in (torch.float32, torch.float64) else 2e-2
        scale = float(y.abs().max()) if y.numel() else 0.0
        if float((x.float() - y.float()).abs().max()) > tolerance * max(scale, 1e-6):
            return False
    return True


def _copy(cache: Cache) -> Cache:
    return {m: {s: t.clone() for s, t in streams.items()} for m, streams in cache.items()}


def _same(a: Cache, b: Cache) -> bool:
    return a.keys() == b.keys() and all(_equal(a[m], b[m]) for m in a)
