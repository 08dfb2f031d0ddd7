"""What a sensitivity profile must hold before anything plans from it (``SensitivityProfile.__post_init__``).

A profile with increasing sigmas, NaN where the planner reads, or negative errors plans a schedule that still runs
and silently gives a worse image, so every value is checked where it is made or loaded:

  * shapes: ``sigmas (T+1,)``, ``cache_error (T, L, M, K)``, ``prune_error (T, L, M, K, R)`` (or empty),
    ``prune_ratios (R,)``, FLOP tables ``(L, M)``, with ``T, K >= 1`` and L, M from the layout;
  * sigmas finite, strictly decreasing and positive (the last may be 0);
  * errors ``1 - cos`` inside ``[0, 2]`` (up to float rounding); NaN only where no value can exist: at ``t < k``
    (nothing k steps back) and in a (layer, module) whose FLOPs are all 0 (a module this layer does not have);
    ``E_p = +inf`` is the legal marker "never recompute this module partially";
  * FLOPs finite and >= 0, positive for at least one module, and small enough that sums over a run stay finite.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch


if TYPE_CHECKING:
    from .profile import SensitivityProfile

ROUNDING = 1e-4  # 1 - cos computed in float32 / float16 may dip this far below 0 (or above 2)
UNMEASURED = (
    "NaN is legal only where t < k or in a module the layer does not have; elsewhere no output was measured: another "
    "cache node such as EasyCache or LazyCache skipped model calls while profiling, or the file was damaged"
)


class ProfileProblems(ValueError):
    """The profile breaks the rules above; ``problems`` lists each as '<key>: <what is wrong, what is expected>'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Inconsistent SODA profile: " + "; ".join(problems) + ".")
        self.problems = problems


def check_profile(profile: SensitivityProfile) -> None:
    problems = shape_problems(profile)
    if not problems:
        absent = absent_modules(profile)
        problems = [
            *sigma_problems(profile.sigmas),
            *ratio_problems(profile.prune_ratios),
            *flop_problems(profile),
            *error_problems("cache_error", profile.cache_error, absent, profile.layout.modules, allow_inf=False),
        ]
        if profile.has_prune_error:
            problems += error_problems("prune_error", profile.prune_error, absent, profile.layout.modules, True)
        problems += forecast_problems(profile)
        if profile.time is not None:
            problems += profile.time.problems(profile.layout.num_layers, profile.layout.num_modules)
    if not isinstance(profile.meta, dict) or not all(isinstance(k, str) for k in profile.meta):
        problems.append(f"meta must be a dict with str keys, got {type(profile.meta).__name__}")
    if problems:
        raise ProfileProblems(problems)


def forecast_problems(profile: SensitivityProfile) -> list[str]:
    """The predictors' tables (``compensation_fit``): both empty, or (3, T, L, M, K, K) errors in [0, 2] and
    (T, L, M, K, K) finite weights, NaN where not measured."""
    error, weight = profile.forecast_error, profile.forecast_weight
    if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (error, weight)):
        return ["forecast_error and forecast_weight must be floating-point tensors"]
    if error.numel() == 0 and weight.numel() == 0:
        return []
    t, layers, m, k = profile.cache_error.shape
    if tuple(error.shape) != (3, t, layers, m, k, k) or tuple(weight.shape) != (t, layers, m, k, k):
        return [
            f"forecast_error has shape {tuple(error.shape)} and forecast_weight {tuple(weight.shape)}, expected "
            f"(3, {t}, {layers}, {m}, {k}, {k}) and ({t}, {layers}, {m}, {k}, {k}) (or both empty)"
        ]
    problems = []
    measured = error[~error.isnan()]
    if measured.numel() and not (bool((measured >= -ROUNDING).all()) and bool((measured <= 2 + ROUNDING).all())):
        problems.append("forecast_error must lie in [0, 2] (1 - cos) or be NaN")
    if bool(weight.isinf().any()):
        problems.append("forecast_weight must be finite or NaN")
    return problems


def shape_problems(profile: SensitivityProfile) -> list[str]:
    layers, m = profile.layout.num_layers, profile.layout.num_modules
    tensors = {
        "sigmas": profile.sigmas,
        "cache_error": profile.cache_error,
        "prune_error": profile.prune_error,
        "prune_ratios": profile.prune_ratios,
        "flops.full": profile.flops.full,
        "flops.fixed": profile.flops.fixed,
        "flops.per_ratio": profile.flops.per_ratio,
    }
    problems = [
        f"{key} must be a floating-point tensor, got {type(t).__name__}{'' if not isinstance(t, torch.Tensor) else ' ' + str(t.dtype)}"
        for key, t in tensors.items()
        if not isinstance(t, torch.Tensor) or not t.is_floating_point()
    ]
    if problems:
        return problems
    cache = profile.cache_error
    if cache.dim() != 4 or cache.shape[0] < 1 or cache.shape[3] < 1 or tuple(cache.shape[1:3]) != (layers, m):
        return [f"cache_error has shape {tuple(cache.shape)}, expected (T, {layers}, {m}, K) with T, K >= 1"]
    t = int(cache.shape[0])
    if profile.sigmas.shape != (t + 1,):
        problems.append(f"sigmas has shape {tuple(profile.sigmas.shape)}, expected ({t + 1},)")
    if profile.prune_ratios.dim() != 1:
        problems.append(f"prune_ratios has shape {tuple(profile.prune_ratios.shape)}, expected (R,)")
    expected_prune = (*cache.shape, profile.prune_ratios.numel())
    if profile.prune_error.numel() and tuple(profile.prune_error.shape) != expected_prune:
        problems.append(f"prune_error has shape {tuple(profile.prune_error.shape)}, expected {expected_prune}")
    for key in ("flops.full", "flops.fixed", "flops.per_ratio"):
        if tensors[key].shape != (layers, m):
            problems.append(f"{key} has shape {tuple(tensors[key].shape)}, expected ({layers}, {m})")
    return problems


def sigma_problems(sigmas: torch.Tensor) -> list[str]:
    s = sigmas.double()
    if not bool(s.isfinite().all()):
        bad = int((~s.isfinite()).nonzero()[0])
        return [f"sigmas[{bad}] is {float(s[bad])}, expected finite noise levels"]
    if bool((s.diff() >= 0).any()):
        bad = int((s.diff() >= 0).nonzero()[0])
        return [
            f"sigmas must decrease strictly (noisy -> clean), but sigmas[{bad}] = {float(s[bad]):.6g} and "
            f"sigmas[{bad + 1}] = {float(s[bad + 1]):.6g}"
        ]
    if float(s[-1]) < 0:
        return [f"sigmas end at {float(s[-1]):.6g}, expected noise levels >= 0"]
    return []


def ratio_problems(ratios: torch.Tensor) -> list[str]:
    if ratios.numel() and not (
        bool(ratios.isfinite().all() and (ratios > 0).all() and (ratios < 1).all()) and bool((ratios.diff() > 0).all())
    ):
        return [f"prune_ratios must increase strictly inside (0, 1), got {ratios.tolist()}"]
    return []


def flop_problems(profile: SensitivityProfile) -> list[str]:
    flops, problems = profile.flops, []
    for key, table in (("flops.full", flops.full), ("flops.fixed", flops.fixed), ("flops.per_ratio", flops.per_ratio)):
        if not bool((table.isfinite() & (table >= 0)).all()):
            problems.append(f"{key} must be finite FLOP counts >= 0, got {table.tolist()}")
    for key, value in (("flops.base", flops.base), ("flops.record", flops.record)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            problems.append(f"{key} must be a finite FLOP count >= 0, got {value!r}")
    if problems:
        return problems
    if flops.full.numel() and not float(flops.full.sum()) > 0:  # no layers: a model SODA does not serve
        problems.append("flops.full is 0 for every module, expected a positive FLOP count for at least one")
    run_total = (profile.steps + 1) * (
        flops.base + flops.record + float((flops.full + flops.fixed + flops.per_ratio).sum())
    )
    if not math.isfinite(run_total):
        problems.append("the FLOP counts overflow when summed over the run, expected counts of real model calls")
    return problems


def absent_modules(profile: SensitivityProfile) -> torch.Tensor:
    """(L, M) bool: modules a layer does not have (all their FLOPs are 0), whose errors may be NaN."""
    flops = profile.flops
    return (flops.full == 0) & (flops.fixed == 0) & (flops.per_ratio == 0)


def error_problems(
    key: str, table: torch.Tensor, absent: torch.Tensor, modules: tuple[str, ...], allow_inf: bool
) -> list[str]:
    """``table[t, l, m, k-1, ...]``: NaN only at t < k or in absent modules; finite values in [0, 2]; +inf only when
    ``allow_inf`` (E_p's "never prune")."""
    steps, _, _, distances = table.shape[:4]
    early = torch.arange(steps)[:, None] < torch.arange(1, distances + 1)[None, :]  # (T, K): t < k
    legal_nan = early[:, None, None, :] | absent[None, :, :, None]  # (T, L, M, K)
    if table.dim() == 5:
        legal_nan = legal_nan[..., None]  # (T, L, M, K, 1)
    checks = [
        (table.isnan() & ~legal_nan, f"is NaN, where a measured value belongs ({UNMEASURED})"),
        (table < -ROUNDING, "is negative, expected 1 - cos >= 0"),
        (table.isfinite() & (table > 2 + ROUNDING), "is above 2, expected 1 - cos <= 2"),
        (table == -math.inf, "is -inf, expected 1 - cos >= 0"),
    ]
    if not allow_inf:
        checks.append((table == math.inf, "is +inf, expected a finite 1 - cos (only prune_error may be +inf)"))
    problems = []
    for bad, what in checks:
        if bool(bad.any()):
            index = [int(i) for i in bad.nonzero()[0]]
            t, layer, m, k = index[:4]
            where = f"step {t}, layer {layer}, module {m} ({modules[m]}), distance {k + 1}"
            where += f", prune ratio #{index[4]}" if len(index) > 4 else ""
            count = int(bad.sum())
            problems.append(f"{key} at {where} {what} ({float(table[tuple(index)])!r}; {count} such value(s))")
    return problems
