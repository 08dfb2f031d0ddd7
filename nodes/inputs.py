"""Every node input checked before any work, on ComfyUI 0.3.75 and newer.

ComfyUI 0.3.75 checks neither dropdown values nor NaN numbers that arrive over its API for V3 nodes (a sampler
'bogus' ran euler, a NaN memory bound disabled the bound). ``SodaNode`` checks every widget of its schema, dropdown
values against their options and numbers against their ``min``/``max`` (NaN and infinity refused), then the node's
own rules (``check``), twice:

  * ``validate_inputs``, which ComfyUI calls when a prompt is queued: the whole prompt is refused before any node
    runs (inputs fed by links are ``None`` there and checked later);
  * ``@checked`` on ``execute``: the same checks on the values the node really got, before it does anything.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from comfy_api.latest import io

from ..soda_core.validation import check_bool, check_choice, check_number


Execute = TypeVar("Execute", bound=Callable[..., Any])

# Inputs most users leave alone: ComfyUI 0.33's V3 API folds inputs marked ``advanced`` away; 0.3.75 has no such
# flag, so there they stay optional widgets whose tooltips start with "(advanced)".
ADVANCED: dict[str, Any] = {"advanced": True} if "advanced" in inspect.signature(io.Input.__init__).parameters else {}


def memory_limit_input(what: str) -> io.Float.Input:
    """The advanced ``memory_limit_mb`` input of the nodes that profile (``what``: who holds the buffers)."""
    return io.Float.Input(
        "memory_limit_mb",
        default=4096.0,
        min=16.0,
        max=1e6,
        step=16.0,
        optional=True,
        **ADVANCED,
        tooltip=f"(advanced) Upper bound for every buffer {what} holds (recent module outputs or their sketches, "
        "sums, working copies). It refuses to start when it would need more.",
    )


def widget_problems(node: type[io.ComfyNode], values: dict[str, Any]) -> None:
    """Raise ``ValueError`` for the first widget value of ``values`` that its schema does not allow."""
    schema = node.define_schema()
    where = schema.display_name or schema.node_id
    for spec in schema.inputs:
        value = values.get(spec.id)
        if value is None:  # not given (optional) or fed by a link that has not run yet
            continue
        if isinstance(spec, io.Combo.Input):
            check_choice(where, spec.id, value, list(spec.options))
        elif isinstance(spec, io.Int.Input | io.Float.Input):
            check_number(where, spec.id, value, spec.min, spec.max, integer=isinstance(spec, io.Int.Input))
        elif isinstance(spec, io.Boolean.Input):
            check_bool(where, spec.id, value)
        elif isinstance(spec, io.String.Input) and not isinstance(value, str):
            raise ValueError(f"{where}: {spec.id}={value!r} is not text. Fix: enter {spec.id} as text.")


def known(values: dict[str, Any], *names: str) -> bool:
    """True when every one of ``names`` has a value (not a link that has not run yet)."""
    return all(values.get(name) is not None for name in names)


def with_defaults(node: type[io.ComfyNode], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus the schema default of every widget that was left out."""
    defaults = {spec.id: getattr(spec, "default", None) for spec in node.define_schema().inputs}
    return {**{k: v for k, v in defaults.items() if v is not None}, **values}


class SodaNode(io.ComfyNode):
    """Base of the pack's nodes: the checks of this module, plus ``check`` for rules across inputs."""

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        """The node's own rules (combinations, meaning); ``values`` of links not yet run are ``None``."""

    @classmethod
    def check_inputs(cls, values: dict[str, Any]) -> None:
        values = with_defaults(cls, values)
        widget_problems(cls, values)
        cls.check(values)

    @classmethod
    def validate_inputs(cls, **values: Any) -> bool | str:  # type: ignore[override]
        try:
            cls.check_inputs(values)
        except ValueError as problem:
            return str(problem)
        return True


def checked(execute: Execute) -> Execute:
    """Run ``cls.check_inputs`` on the arguments of ``execute`` (a node's, under ``@classmethod``) before its body."""
    signature = inspect.signature(execute)

    @functools.wraps(execute)
    def wrapper(cls: type[SodaNode], *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        cls.check_inputs(dict(list(bound.arguments.items())[1:]))  # every argument but cls
        return execute(cls, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
