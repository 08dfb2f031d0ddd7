"""Compensation on reuse steps (no ComfyUI): the predictors' forecasts, GOC's fit, the inner-product errors, the DP
with the previous interval against brute force, and the planner's per-cell choice."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from test_planner import make_profile

from comfyui_soda.soda_core.compensation import (
    GOC,
    NONE,
    TAYLOR1,
    TAYLOR2,
    AnchorHistory,
    CompensationConfig,
    coefficients,
    combine,
    needed_anchors,
)
from comfyui_soda.soda_core.compensation_fit import combination_cosine, fit_goc, forecast_tables, inflections
from comfyui_soda.soda_core.compensation_plan import previous_intervals
from comfyui_soda.soda_core.dcs import backtrack_after, dp_table_after, interval_costs_after
from comfyui_soda.soda_core.planner import PlanConfig, plan
from comfyui_soda.soda_core.profile import SensitivityProfile


def _trajectory(steps: int, rows: int = 3, tokens: int = 5, channels: int = 8, seed: int = 0, curve=None):
    """D_t = A + t B (+ curve(t) C): (T, B, N, C)."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = (torch.randn(rows, tokens, channels, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.arange(steps, dtype=torch.float64)[:, None, None, None]
    out = a + t * b * 0.1
    return out + (curve(t) * c if curve is not None else 0.0)


def _gram(outputs: torch.Tensor, distances: int) -> torch.Tensor:
    """G[t, j] = <D_t, D_{t-j}> per row, as the profiler keeps it: (T, K+1, B), NaN where t < j."""
    steps = outputs.shape[0]
    gram = torch.full((steps, distances + 1, outputs.shape[1]), math.nan, dtype=torch.float64)
    for t in range(steps):
        for j in range(min(t, distances) + 1):
            gram[t, j] = (outputs[t] * outputs[t - j]).sum(dim=(1, 2))
    return gram


def _history(outputs: torch.Tensor, anchors: list[int], depth: int) -> tuple[AnchorHistory, dict]:
    history, cache = AnchorHistory(depth), {}
    for a in anchors:
        cache = {"mlp": {"x": outputs[a].float()}}
        history.push(a, cache)
    return history, cache


# ------------------------------------------------------------------------------------------------- predictors


def test_taylor1_is_exact_on_a_linear_trajectory():
    outputs = _trajectory(12)
    history, cache = _history(outputs, [0, 3, 5], depth=2)  # the last two anchors: 3 and 5 (d = 2)
    for t in (6, 7, 9):
        served = history.forecast(cache, t, {"mlp": (TAYLOR1, 0.0)})["mlp"]["x"]
        torch.testing.assert_close(served, outputs[t].float(), rtol=1e-5, atol=1e-5)
        stale = history.forecast(cache, t, {"mlp": (NONE, 0.0)})["mlp"]["x"]
        assert not torch.allclose(stale, outputs[t].float(), atol=1e-3)  # the test can tell reuse from a forecast


def test_taylor2_is_exact_on_a_quadratic_trajectory_and_taylor1_is_not():
    outputs = _trajectory(12, curve=lambda t: 0.05 * t**2)
    history, cache = _history(outputs, [0, 2, 5, 7], depth=3)  # unequal spacing: 2, 5, 7
    second = history.forecast(cache, 9, {"mlp": (TAYLOR2, 0.0)})["mlp"]["x"]
    first = history.forecast(cache, 9, {"mlp": (TAYLOR1, 0.0)})["mlp"]["x"]
    torch.testing.assert_close(second, outputs[9].float(), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(first, outputs[9].float(), atol=1e-2)


def test_none_serves_the_cache_itself_and_one_anchor_is_plain_reuse():
    outputs = _trajectory(6)
    history, cache = _history(outputs, [0, 2], depth=2)
    served = history.forecast(cache, 3, {"mlp": (NONE, 0.0)})
    assert served["mlp"] is cache["mlp"]  # the very dict: partial recomputes update it as without compensation
    single, only = _history(outputs, [2], depth=2)
    torch.testing.assert_close(single.forecast(only, 3, {"mlp": (TAYLOR1, 0.0)})["mlp"]["x"], outputs[2].float())
    assert coefficients(TAYLOR2, 5.0, [4.0, 2.0]) == coefficients(TAYLOR1, 5.0, [4.0, 2.0])  # two anchors: a line


def test_goc_coefficients_and_combine_keep_the_dtype():
    assert coefficients(GOC, 9.0, [4.0, 2.0], weight=0.5) == (1.5, -0.5)
    a, b = torch.ones(1, 2, 3, dtype=torch.float16), torch.zeros(1, 2, 3, dtype=torch.float16)
    out = combine([a, b], (1.5, -0.5))
    assert out.dtype == torch.float16 and bool((out == 1.5).all())


def test_history_keeps_depth_anchors_and_counts_the_older_ones():
    outputs = _trajectory(8)
    history, _ = _history(outputs, [0, 2, 4, 6], depth=2)
    chain = history.entries["mlp"]["x"]
    assert [s for s, _ in chain] == [6, 4]
    assert history.extra_bytes({"mlp": {"x": chain[0][1]}}) == outputs[0].float().numel() * 4
    history.reset()
    assert history.entries == {}


def test_needed_anchors_are_the_last_ones_before_compensated_steps():
    # anchors 0, 1, 4; reuse steps 2, 3 read two anchors (0 and 1), 5 reads 1 and 4
    assert needed_anchors((0, 1, 4), 6, [0, 0, 2, 2, 0, 2]) == {0, 1, 4}
    assert needed_anchors((0, 1, 4), 6, [0, 0, 0, 0, 0, 0]) == set()


@pytest.mark.parametrize("bad", ["taylor", "", None, 1, "AUTO"])
def test_bad_mode_is_refused_naming_the_value_and_the_choices(bad):
    with pytest.raises(ValueError, match=r"none, taylor1, taylor2, goc, auto.*Fix"):
        CompensationConfig(bad)
    with pytest.raises(ValueError, match=r"PlanConfig.compensation=" + repr(bad).replace("'", ".")):
        PlanConfig(compensation=bad)


def test_joint_cost_and_compensation_are_refused_together():
    with pytest.raises(ValueError, match="joint_cost"):
        PlanConfig(joint_cost=True, compensation="taylor1")


# ------------------------------------------------------------------------------------------- profiled errors


def test_errors_from_inner_products_equal_the_direct_cosines():
    outputs = _trajectory(10, curve=lambda t: torch.sin(t))
    gram = _gram(outputs, 6)
    k, p = 2, 3
    c = coefficients(TAYLOR1, 5.0 + k, [5.0, 5.0 - p])
    cos = combination_cosine(gram, (k, k + p), c)  # (T, B)
    for t in range(k + p, 10):
        forecast = c[0] * outputs[t - k] + c[1] * outputs[t - k - p]
        direct = torch.nn.functional.cosine_similarity(forecast.flatten(1), outputs[t].flatten(1), dim=1)
        torch.testing.assert_close(cos[t], direct, rtol=1e-9, atol=1e-9)
    assert cos[: k + p].isnan().all()


def test_goc_fit_lowers_the_calibration_error_it_was_fitted_on():
    outputs = _trajectory(16, rows=4, curve=lambda t: 0.3 * torch.sqrt(t + 1.0))  # bends, never turns back
    g, fitted, plain = fit_goc(_gram(outputs, 6))
    assert 0.0 < g <= 2.0
    assert fitted < 0.8 * plain


def test_goc_fits_the_same_under_inference_mode_as_comfyuis_server_samples():
    outputs = _trajectory(16, rows=4, curve=lambda t: 0.3 * torch.sqrt(t + 1.0))
    with torch.inference_mode():
        gram = _gram(outputs, 6)  # an inference tensor, as the profiler makes it in the server
        fitted = fit_goc(gram)
    assert fitted == fit_goc(_gram(outputs, 6)) and fitted[0] > 0.0


def test_inflections_switch_goc_off_where_the_trajectory_turns_back():
    outputs = _trajectory(12, curve=lambda t: 2.0 * torch.cos(t * math.pi / 6))  # turns around t = 6
    gram = _gram(outputs, 4)
    turned = inflections(gram, 1, 1)
    assert turned.any() and not turned.all()
    error, weight = forecast_tables({(0, 0): gram}, 12, 1, 1, 4)
    w = weight[:, 0, 0, 0, 0]  # k = 1, p = 1
    assert bool((w[turned] == 0).all()) and bool((w[~turned & w.isfinite()] != 0).any())
    assert error.shape == (3, 12, 1, 1, 4, 4) and error.isnan()[:, :, 0, 0, 3, 3].all()  # k + p > K: unmeasured


# ------------------------------------------------------------------------------------------------ DP and plan


def _cost(step_cost: torch.Tensor, anchors: tuple[int, ...], steps: int) -> float:
    bounds = (*anchors, steps)
    total = 0.0
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        previous = a - anchors[i - 1] if i else 0
        total += sum(float(step_cost[t, t - a - 1, previous]) for t in range(a + 1, b))
    return total


def brute_force_after(step_cost: torch.Tensor, n_anchors: int, max_interval: int):
    steps = step_cost.shape[0]
    best = None
    for rest in itertools.combinations(range(1, steps), n_anchors - 1):
        bounds = (0, *rest, steps)
        if any(b - a > max_interval for a, b in itertools.pairwise(bounds)):
            continue
        candidate = (_cost(step_cost, bounds[:-1], steps), bounds[:-1])
        best = candidate if best is None or candidate < best else best
    return best


@pytest.mark.parametrize("dyadic", [True, False], ids=["ties", "random"])
def test_dp_with_the_previous_interval_matches_brute_force(dyadic):
    g = torch.Generator().manual_seed(3)
    for steps in range(1, 11):
        for max_interval in (1, 2, 3, 4):
            step_cost = torch.rand(steps, 4, max_interval + 1, generator=g, dtype=torch.float64)
            if dyadic:
                step_cost = torch.floor(step_cost * 4) / 8
            best, choice = dp_table_after(interval_costs_after(step_cost, max_interval), steps)
            choices = choice.tolist()
            for n in range(math.ceil(steps / max_interval), steps + 1):
                expected = brute_force_after(step_cost, n, max_interval)
                assert expected is not None
                assert backtrack_after(choices, n) == expected[1], (steps, max_interval, n)
                assert float(best[0, n, 0]) == pytest.approx(expected[0], rel=1e-12, abs=1e-12)


def test_previous_intervals_of_reuse_steps():
    steps = torch.tensor([1, 2, 4, 7, 8])
    assert previous_intervals((0, 3, 6), steps).tolist() == [0, 0, 3, 3, 3]


def _compensated_profile(seed: int = 0) -> SensitivityProfile:
    g = torch.Generator().manual_seed(seed)
    steps, layers, modules, distances = 16, 2, 2, 4
    ec = 0.01 + 0.05 * torch.rand(steps, layers, modules, distances, generator=g) * torch.arange(1, distances + 1)
    profile = make_profile(ec)
    forecast = ec[None, ..., None].expand(3, -1, -1, -1, -1, distances) * torch.rand(3, 1, 1, 1, 1, 1, generator=g)
    forecast = forecast.clone()
    forecast[..., 1, 0, :, :] = 1.5  # taylor*/goc are bad for layer 1, module 0
    weight = torch.full((steps, layers, modules, distances, distances), 0.4)
    k, p = torch.meshgrid(torch.arange(1, distances + 1), torch.arange(1, distances + 1), indexing="ij")
    forecast[..., (k + p) > distances] = float("nan")
    weight[..., (k + p) > distances] = float("nan")
    return dataclasses.replace(profile, forecast_error=forecast.float(), forecast_weight=weight)


@pytest.mark.parametrize("target", [2.0, 3.0])
def test_auto_picks_the_least_error_per_cell_and_never_predicts_worse_than_none(target):
    profile = _compensated_profile()
    none = plan(profile, PlanConfig(target=target, pruning=False))
    auto = plan(profile, PlanConfig(target=target, pruning=False, compensation="auto"))
    assert auto.predicted_error <= none.predicted_error
    assert auto.compensated and not none.compensated
    reused = ~auto.anchor_mask
    assert bool((auto.compensation[reused][:, 1, 0] == NONE).all())  # where every predictor is worse: plain reuse
    assert bool((auto.compensation[auto.anchor_mask] == NONE).all())
    goc_cells = auto.compensation == GOC
    assert bool((auto.weights[goc_cells] != 0).all()) and bool((auto.weights[~goc_cells] == 0).all())


def test_plain_reuse_reasons_sort_every_uncompensated_reuse_cell_by_its_anchors():
    profile = _compensated_profile()
    auto = plan(profile, PlanConfig(target=3.0, pruning=False, compensation="auto"))
    reasons, window = auto.plain_reuse_reasons(profile.max_distance), profile.max_distance
    reused = [t for t in range(auto.steps) if t not in auto.anchors]
    before = [[a for a in auto.anchors if a <= t] for t in reused]  # brute force, anchor by anchor
    k = torch.tensor([t - b[-1] for t, b in zip(reused, before, strict=True)])  # (n,)
    p = torch.tensor([b[-1] - b[-2] if len(b) > 1 else 0 for b in before])  # (n,)
    plain = (auto.compensation[reused] == NONE).flatten(1).sum(dim=1)  # (n,) plain cells per reuse step
    outside, inside = (p > 0) & (k + p > window), (p > 0) & (k + p <= window)
    assert reasons["first_interval"] == int(plain[p == 0].sum()) > 0
    assert reasons["beyond_window"] == int(plain[outside].sum()) > 0
    assert bool((plain[outside] == auto.compensation[0].numel()).all())  # never measured there: never forecast
    assert reasons["measured_better"] == int(plain[inside].sum()) >= int(inside.sum())  # layer 1 module 0 is bad
    assert sum(reasons.values()) == auto.compensated_cells()["none"]
    assert plan(profile, PlanConfig(target=3.0, pruning=False)).plain_reuse_reasons(window) == {}


def test_none_plans_exactly_as_without_the_option():
    profile = _compensated_profile()
    for pruning in (False, True):
        before, after = (
            plan(profile, PlanConfig(target=2.0, pruning=pruning)),
            plan(profile, PlanConfig(target=2.0, pruning=pruning, compensation="none")),
        )
        assert before.anchors == after.anchors and torch.equal(before.recompute, after.recompute)
        assert after.compensation.numel() == 0 and not after.compensated


def test_a_profile_without_forecasts_prices_taylor_as_reuse_and_turns_goc_off():
    profile = make_profile(0.01 + 0.05 * torch.rand(12, 2, 2, 4, generator=torch.Generator().manual_seed(1)))
    taylor = plan(profile, PlanConfig(target=2.0, pruning=False, compensation="taylor1"))
    goc = plan(profile, PlanConfig(target=2.0, pruning=False, compensation="goc"))
    assert taylor.compensated and any("not profiled" in n for n in taylor.notes)
    assert not goc.compensated and any("no predictor errors" in n for n in goc.notes)


def test_the_profiler_measures_the_predictors_and_the_file_keeps_them(tmp_path):
    from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
    from comfyui_soda.soda_core.profiler import ProfileConfig, SensitivityRecorder
    from comfyui_soda.soda_core.tokens import TokenLayout

    steps, distances = 10, 4
    layout = ModelLayout((BlockRef("double_blocks", 0),), ("attn", "mlp"))
    recorder = SensitivityRecorder(layout, steps, ProfileConfig(max_distance=distances, sketch_dim=0))
    linear = _trajectory(steps, tokens=6).float()  # attn: linear in t
    bent = _trajectory(steps, tokens=6, seed=1, curve=lambda t: 0.1 * t**2).float()  # mlp: quadratic
    recorder.new_run()
    for t in range(steps):
        for module, outputs in (("attn", linear), ("mlp", bent)):
            recorder.observe(t, 0, module, "cond", outputs[t], torch.zeros(3, 6), TokenLayout(text=0, image=6))
    profile = make_profile(torch.zeros(steps, 1, 2, distances))  # for the FLOP model
    profile = recorder.result(profile.sigmas, profile.flops, {})
    taylor1, taylor2 = profile.forecast_error[0, :, 0], profile.forecast_error[1, :, 0]  # (T, M, K, K)
    assert float(taylor1[:, 0].nan_to_num().max()) < 1e-6  # exact on the linear module
    assert float(taylor1[:, 1].nan_to_num().max()) > 1e-4  # not on the quadratic one
    assert float(taylor2[:, 1].nan_to_num().max()) < 1e-5  # taylor2 is
    assert float(profile.forecast_error[0, 5, 0, 0, 0, 0]) < float(profile.cache_error[5, 0, 0, 0])
    path = tmp_path / "p.safetensors"
    profile.save(path)
    loaded = SensitivityProfile.load(path)
    assert torch.equal(loaded.forecast_error.nan_to_num(-1), profile.forecast_error.nan_to_num(-1))
    assert torch.equal(loaded.forecast_weight.nan_to_num(-1), profile.forecast_weight.nan_to_num(-1))
    resampled = profile.resample(torch.linspace(1.0, 0.0, 8, dtype=torch.float64))
    assert not resampled.has_forecasts


def test_with_compensation_replans_a_recipe_and_none_keeps_the_plan():
    from comfyui_soda.soda_core.api import plan_schedule, with_compensation

    recipe = plan_schedule(_compensated_profile(), PlanConfig(target=2.0, compensation="auto"), prune_attention=False)
    assert with_compensation(recipe, "none") is recipe and with_compensation(recipe, "auto") is recipe
    taylor = with_compensation(recipe, "taylor1")
    assert taylor.config.compensation == "taylor1" and taylor.schedule is not recipe.schedule
    with pytest.raises(ValueError, match="'bogus'"):
        with_compensation(recipe, "bogus")
