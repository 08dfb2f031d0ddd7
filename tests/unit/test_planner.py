"""DCS + UAS planning on synthetic profiles (no ComfyUI): the DP against brute force, the speed target, the UAS gate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from comfyui_soda.soda_core.dcs import dp_anchors, interval_costs, step_costs, uniform_anchors
from comfyui_soda.soda_core.flops import FlopModel
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
from comfyui_soda.soda_core.planner import PlanConfig, plan, reuse_steps, schedule_flops
from comfyui_soda.soda_core.profile import SensitivityProfile
from comfyui_soda.soda_core.schedule import Schedule
from comfyui_soda.soda_core.uas import build_uas_table, gate_on, prune_error_at, pruned_flops, switch_points


RATIOS = torch.linspace(0.1, 0.9, 9)


# ----------------------------------------------------------------------------------------------------- helpers


def make_profile(
    cache_error: torch.Tensor,  # (T, L, M, K)
    prune_error: torch.Tensor | None = None,  # (T, L, M, K, R)
    full: torch.Tensor | None = None,  # (L, M)
    fixed_share: float = 0.1,
    meta: dict[str, object] | None = None,
) -> SensitivityProfile:
    """A profile from error tables (entries with t < k become NaN, as OFS leaves them; values capped at 2, the
    largest 1 - cos) and a simple FLOP model."""
    steps, layers, modules, distances = cache_error.shape
    cache = cache_error.clone().float().clamp(max=2.0)
    prune = torch.zeros(0) if prune_error is None else prune_error.clone().float().clamp(max=2.0)
    for k in range(1, distances + 1):
        cache[:k, ..., k - 1] = float("nan")
        if prune.numel():
            prune[:k, ..., k - 1, :] = float("nan")
    full = torch.ones(layers, modules, dtype=torch.float64) if full is None else full.double()
    flops = FlopModel(full, fixed_share * full, (1 - fixed_share) * full, base=0.02 * float(full.sum()), record=0.0)
    layout = ModelLayout(
        tuple(BlockRef("double_blocks", i) for i in range(layers)), ("attn", "mlp", "cross")[:modules]
    )
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    return SensitivityProfile(layout, sigmas, cache, prune, RATIOS.clone(), flops, dict(meta or {}))


def realistic_profile(steps: int = 50, layers: int = 12, distances: int = 6, seed: int = 0) -> SensitivityProfile:
    """Errors large early and late, growing with k; pruning the MLP works well, pruning attention works poorly."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, steps)
    per_step = 0.02 + 0.2 * (1 - t) ** 4 + 0.05 * t**6  # (T,)
    per_layer = 0.5 + torch.rand(layers, generator=g)  # (L,)
    k = torch.arange(1, distances + 1, dtype=torch.float32)
    ec = per_step[:, None, None, None] * per_layer[None, :, None, None] * torch.tensor([1.0, 0.7])[:, None] * k**1.3
    ec = ec * (1 + 0.1 * torch.rand(ec.shape, generator=g))  # (T, L, 2, K)
    quality = torch.tensor([1.3, 0.4])[None, None, :, None, None]  # attention pruning is worse than reuse early on
    ep = ec[..., None] * quality * (1 - RATIOS) ** 1.5  # (T, L, 2, K, R), falls with r
    return make_profile(ec, ep, full=torch.tensor([1.0, 2.0]).repeat(layers, 1))


def random_profile(seed: int, steps: int = 24, layers: int = 4, modules: int = 2, distances: int = 4):
    """Random E_c, and E_p = E_c·q·(1 - r)^γ per entry: decreasing in r on the grid."""
    g = torch.Generator().manual_seed(seed)
    ec = torch.rand(steps, layers, modules, distances, generator=g) * torch.arange(1, distances + 1) * 0.1
    q = 0.2 + 1.6 * torch.rand(steps, layers, modules, distances, 1, generator=g)
    gamma = 0.5 + 1.5 * torch.rand(steps, layers, modules, distances, 1, generator=g)
    return make_profile(ec, ec[..., None] * q * (1 - RATIOS) ** gamma)


def brute_force(step_cost: torch.Tensor, n_anchors: int, max_interval: int) -> tuple[float, tuple[int, ...]] | None:
    """Every anchor set (step 0 first, gaps and the tail <= max_interval); least cost, ties: smallest anchor tuple."""
    steps = step_cost.shape[0]
    cost = step_cost.tolist()
    best: tuple[float, tuple[int, ...]] | None = None
    for rest in itertools.combinations(range(1, steps), n_anchors - 1):
        bounds = (0, *rest, steps)
        if any(b - a > max_interval for a, b in itertools.pairwise(bounds)):
            continue
        total = sum(cost[t][t - a - 1] for a, b in itertools.pairwise(bounds) for t in range(a + 1, b))
        if best is None or (total, bounds[:-1]) < best:
            best = (total, bounds[:-1])
    return best


def reference_prune_error(profile: SensitivityProfile, t: int, layer: int, module: int, k: int, r: float) -> float:
    """E_p through (0, E_c), (r_j, E_p[j]), (1, 0) with numpy."""
    ec = float(profile.cache_error[t, layer, module, k - 1])
    ep = profile.prune_error[t, layer, module, k - 1].double().numpy()
    return float(np.interp(r, [0.0, *profile.prune_ratios.double().tolist(), 1.0], [ec, *ep, 0.0]))


def partial_entries(schedule: Schedule):
    """(t, l, m, k, r) of every partially recomputed module on a reuse step."""
    steps, distances = reuse_steps(schedule.anchors, schedule.steps)
    for t, k in zip(steps.tolist(), distances.tolist()):
        for layer, module in (schedule.recompute[t] > 0).nonzero().tolist():
            yield t, layer, module, k, float(schedule.recompute[t, layer, module])


# ------------------------------------------------------------------------------------------------------------- DP


@pytest.mark.parametrize("dyadic", [True, False], ids=["ties", "random"])
def test_dp_matches_brute_force_on_every_small_case(dyadic):
    g = torch.Generator().manual_seed(1)
    for steps in range(1, 13):
        for max_interval in (1, 2, 3, 4):
            step_cost = torch.rand(steps, 3, generator=g, dtype=torch.float64)
            if dyadic:  # few distinct values, exact sums: many ties, resolved the same way
                step_cost = torch.floor(step_cost * 4) / 8
            for n_anchors in range(math.ceil(steps / max_interval), steps + 1):
                value, anchors = dp_anchors(step_cost, n_anchors, max_interval)
                expected = brute_force(step_cost, n_anchors, max_interval)
                assert expected is not None
                assert anchors == expected[1], (steps, max_interval, n_anchors)
                assert value == pytest.approx(expected[0], rel=1e-12, abs=1e-12)


def test_dp_all_anchors_cost_nothing():
    step_cost = torch.rand(9, 4, dtype=torch.float64)
    assert dp_anchors(step_cost, 9, 5) == (0.0, tuple(range(9)))


def test_dp_uniform_errors_give_even_intervals():
    for steps, n_anchors in [(24, 6), (25, 6), (31, 7), (50, 9)]:
        step_cost = torch.arange(1, 9, dtype=torch.float64).repeat(steps, 1)  # E[t, k] = k everywhere
        _, anchors = dp_anchors(step_cost, n_anchors, 9)
        lengths = np.diff([*anchors, steps])
        assert lengths.max() - lengths.min() <= 1, anchors


def test_dp_spike_shortens_the_interval_around_it():
    steps, n_anchors = 40, 8
    step_cost = torch.arange(1, 9, dtype=torch.float64).repeat(steps, 1)
    _, even = dp_anchors(step_cost, n_anchors, 9)
    assert 17 not in even
    spiked = step_cost.clone()
    spiked[17:20] *= 100.0  # reusing steps 17-19 is very costly
    _, anchors = dp_anchors(spiked, n_anchors, 9)
    assert {17, 18, 19} <= set(anchors)
    bump = step_cost.clone()
    bump[12:20] *= 6.0  # a sensitive stretch: anchors get denser there
    _, anchors = dp_anchors(bump, n_anchors, 9)
    lengths = dict(zip(anchors, np.diff([*anchors, steps])))
    inside = [n for a, n in lengths.items() if 12 <= a and a + n <= 20]
    outside = [n for a, n in lengths.items() if a + n <= 12 or a >= 20]
    assert max(inside) < min(outside), anchors


@pytest.mark.parametrize("n_anchors", [0, 2, 11])
def test_dp_infeasible_budget_names_the_valid_range(n_anchors):
    with pytest.raises(ValueError, match=r"valid range is 3\.\.10"):
        dp_anchors(torch.rand(10, 4, dtype=torch.float64), n_anchors, 4)


def test_interval_costs_sum_the_steps_of_an_interval():
    step_cost = torch.rand(7, 3, dtype=torch.float64)
    costs = interval_costs(step_cost, 4)
    assert costs[2, 3] == pytest.approx(float(step_cost[3, 0] + step_cost[4, 1] + step_cost[5, 2]))
    assert costs[5, 3] == pytest.approx(float(step_cost[6, 0]))  # steps past the end are dropped
    with pytest.raises(ValueError, match="between 1 and 4"):
        interval_costs(step_cost, 5)


# -------------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target": 0.5}, "target"),
        ({"target": math.nan}, "target"),
        ({"min_full_steps": 0}, "min_full_steps"),
        ({"min_full_steps": 2.0}, "min_full_steps"),
        ({"max_interval": 0}, "max_interval"),
        ({"pruning": 1}, "pruning"),
        ({"lam": -1.0}, "lam"),
        ({"ratio_min": 0.0}, "ratio_min"),
        ({"ratio_min": 0.5, "ratio_max": 0.4}, "ratio_max"),
        ({"ratio_max": 1.5}, "ratio_max"),
        ({"joint_cost": "yes"}, "joint_cost"),
        ({"anchors": "even"}, "anchors"),
    ],
)
def test_bad_config_is_refused_with_a_fix(kwargs, field):
    with pytest.raises(ValueError, match=field) as error:
        PlanConfig(**kwargs)
    assert "got" in str(error.value) and ("Fix" in str(error.value) or "True or False" in str(error.value))


def test_joint_cost_needs_dp_anchors():
    with pytest.raises(ValueError, match="joint_cost.*anchors='dp'"):
        PlanConfig(joint_cost=True, anchors="uniform")


def test_unreachable_target_names_the_best_ratio_and_the_fix():
    profile = realistic_profile(steps=20, distances=3)
    with pytest.raises(ValueError, match=r"6x .*highest ratio is 3\.\d+x.*lower the target.*max_interval"):
        plan(profile, PlanConfig(target=6.0))
    with pytest.raises(ValueError, match=r"valid range is 1\.\.20"):
        plan(profile, PlanConfig(min_full_steps=21))


def test_profile_nan_where_the_planner_reads_is_refused():
    profile = realistic_profile(steps=10, distances=3)
    profile.cache_error[5, 1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"step 5, layer 1, module 0 \(attn\), distance 3"):
        plan(profile, PlanConfig())


# ------------------------------------------------------------------------------------------------------- targets


def test_target_one_is_full_compute():
    profile = realistic_profile(steps=20)
    schedule = plan(profile, PlanConfig(target=1.0))
    assert schedule.anchors == tuple(range(20))
    assert torch.equal(schedule.recompute, torch.ones(20, 12, 2))
    assert schedule.predicted_flops_ratio == 1.0 and schedule.predicted_error == 0.0


@pytest.mark.parametrize("target", [1.5, 2.0, 2.5, 3.0])
@pytest.mark.parametrize("pruning", [True, False])
def test_target_is_met_and_pruning_spends_the_slack(target, pruning):
    profile = realistic_profile()
    schedule = plan(profile, PlanConfig(target=target, pruning=pruning))
    total = schedule_flops(profile.flops, schedule.anchors, schedule.recompute)
    assert schedule.predicted_flops_ratio == pytest.approx(profile.steps * profile.flops.step_full / total, rel=1e-12)
    assert schedule.predicted_flops_ratio >= target
    if pruning:
        assert schedule.predicted_flops_ratio <= 1.03 * target
        assert schedule.config["beta"] is not None
    else:
        assert schedule.config["beta"] is None
    assert schedule.config["target"] == target and "intervals of at most" in schedule.notes[0]
    assert f"full steps: {len(schedule.anchors)} (steps 0, " in schedule.summary().splitlines()[1]
    assert Schedule.from_json(schedule.to_json()).anchors == schedule.anchors


def test_uniform_anchors_are_evenly_spread():
    assert uniform_anchors(20, 5) == (0, 4, 8, 12, 16)
    assert uniform_anchors(20, 20) == tuple(range(20))
    gaps = {b - a for a, b in itertools.pairwise((*uniform_anchors(50, 18), 50))}
    assert gaps <= {2, 3}
    with pytest.raises(ValueError, match="valid range is 1..20"):
        uniform_anchors(20, 0)


@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
def test_uniform_placement_meets_the_target_and_the_dp_is_never_worse(target):
    """The fixed-interval ablation: evenly spread full steps, UAS on the rest; the DP's choice costs at most as much."""
    profile = realistic_profile()
    uniform = plan(profile, PlanConfig(target=target, anchors="uniform"))
    dp = plan(profile, PlanConfig(target=target))
    assert uniform.anchors == uniform_anchors(profile.steps, len(uniform.anchors))
    assert uniform.predicted_flops_ratio >= target
    assert any("spread evenly" in note for note in uniform.notes)
    assert dp.predicted_error <= uniform.predicted_error * (1 + 1e-9)


@pytest.mark.parametrize("pruning", [True, False])
def test_predicted_error_is_the_schedules_own(pruning):
    profile = realistic_profile(steps=30)
    schedule = plan(profile, PlanConfig(target=2.0, pruning=pruning))
    steps, distances = reuse_steps(schedule.anchors, schedule.steps)
    error = 0.0
    for t, k in zip(steps.tolist(), distances.tolist()):
        for layer in range(12):
            for module in range(2):
                r = float(schedule.recompute[t, layer, module])
                ec = float(profile.cache_error[t, layer, module, k - 1])
                error += reference_prune_error(profile, t, layer, module, k, r) if r > 0 else ec
    assert schedule.predicted_error == pytest.approx(error, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_larger_target_never_lowers_the_predicted_error(seed):
    profile = random_profile(seed)
    errors = []
    for target in np.arange(1.2, 4.01, 0.2):
        try:
            errors.append(plan(profile, PlanConfig(target=float(target))).predicted_error)
        except ValueError:
            break
    assert len(errors) >= 8
    assert all(b >= a * (1 - 1e-9) for a, b in itertools.pairwise(errors)), errors


# ----------------------------------------------------------------------------------------------------------- UAS


def test_uas_gate_and_ratio_bounds():
    profile = random_profile(3, steps=30)
    profile.prune_error[:, :, 0] = profile.cache_error[:, :, 0, :, None] * 1.01  # module 0: pruning never pays
    config = PlanConfig(target=2.0, ratio_min=0.2, ratio_max=0.6)
    schedule = plan(profile, config)
    entries = list(partial_entries(schedule))
    assert entries, "expected some partial recomputes"
    for t, layer, module, k, r in entries:
        assert module == 1
        assert config.ratio_min - 1e-6 <= r <= config.ratio_max + 1e-6
        assert reference_prune_error(profile, t, layer, module, k, r) < float(
            profile.cache_error[t, layer, module, k - 1]
        )
    assert torch.equal(schedule.recompute[list(schedule.anchors)], torch.ones(len(schedule.anchors), 4, 2))


def test_without_pruning_recompute_is_only_zero_or_one():
    profile = random_profile(4)
    for schedule in (
        plan(profile, PlanConfig(target=2.0, pruning=False)),
        plan(make_profile(torch.nan_to_num(profile.cache_error)), PlanConfig(target=2.0)),
    ):
        assert set(schedule.recompute.unique().tolist()) <= {0.0, 1.0}
    assert any("no prune_error" in note for note in schedule.notes)


def test_infinite_prune_error_switches_a_module_off():
    profile = random_profile(5)
    profile.prune_error[:, :, 0] = float("inf")  # as SensitivityProfile.without_pruning("attn") does
    schedule = plan(profile, PlanConfig(target=1.8))
    assert not (schedule.recompute[~schedule.anchor_mask][:, :, 0] > 0).any()
    assert (schedule.recompute[~schedule.anchor_mask][:, :, 1] > 0).any()
    assert math.isfinite(schedule.predicted_error)


def wiggly_profile(seed: int = 6) -> SensitivityProfile:
    """E_p random around E_c on the grid: the gate switches on and off several times."""
    g = torch.Generator().manual_seed(seed)
    ec = 0.05 + torch.rand(12, 3, 2, 4, generator=g)
    return make_profile(ec, ec[..., None] * 2 * torch.rand(12, 3, 2, 4, 9, generator=g))


def test_gate_toggles_and_flop_curve_match_the_direct_reading():
    profile = wiggly_profile()
    table = build_uas_table(profile, lam=0.5, ratio_min=0.05, ratio_max=0.95)
    assert table.all.toggles.shape[-1] > 2  # several switches per entry somewhere
    used = table.all.cells[(table.all.cells // 4 >= table.all.cells % 4 + 1)]  # rows with t >= k
    entries = table.gather(used // 4, used % 4 + 1)
    low, high = table.bracket
    for beta in torch.linspace(low, high, 101, dtype=torch.float64).tolist():
        ratio = (entries.lam_ec + beta).clamp(0.0, table.ratio_max)
        prune = prune_error_at(entries.cache_error, profile_prune_rows(profile, used), table.knots, ratio)
        direct = (ratio >= table.ratio_min) & (prune < entries.cache_error)
        assert torch.equal(gate_on(switch_points(entries), beta), direct), beta
        curve = table.curve.at(used, torch.full(used.shape, beta, dtype=torch.float64))
        assert torch.allclose(curve, pruned_flops(table, entries, beta).sum(dim=-1), rtol=1e-10, atol=1e-10)


def profile_prune_rows(profile: SensitivityProfile, rows: torch.Tensor) -> torch.Tensor:
    """E_p of table rows t·K + k - 1: (n, L·M, R)."""
    k = profile.max_distance
    ep = profile.prune_error.double().permute(0, 3, 1, 2, 4)  # (T, K, L, M, R)
    return ep[rows // k, rows % k].flatten(1, 2)


def test_prune_error_reads_between_reuse_and_exact():
    ec, ep = torch.tensor([0.4]), torch.tensor([[0.2, 0.1]])
    knots = torch.tensor([0.0, 0.25, 0.75, 1.0], dtype=torch.float64)
    r = torch.tensor([[0.0], [0.125], [0.5], [0.875], [1.0]]).expand(5, 1)
    values = prune_error_at(ec.expand(5, 1), ep.expand(5, 1, 2), knots, r)[:, 0]
    assert values.tolist() == pytest.approx([0.4, 0.3, 0.15, 0.05, 0.0])


# ---------------------------------------------------------------------------------------------------- joint cost


def test_joint_cost_is_never_worse_than_caching_costs():
    """Pruning works early and fails late: the joint DP can move anchors to where pruning does not help."""
    steps, layers = 30, 6
    k = torch.arange(1, 5, dtype=torch.float32)
    ec = (0.05 * k).expand(steps, layers, 2, 4).clone()
    quality = torch.where(torch.arange(steps) < 15, 0.05, 1.5)[:, None, None, None, None]
    profile = make_profile(ec, ec[..., None] * quality * (1 - RATIOS) ** 1.5)
    caching = plan(profile, PlanConfig(target=2.0))
    joint = plan(profile, PlanConfig(target=2.0, joint_cost=True))
    assert joint.predicted_flops_ratio >= 2.0
    assert joint.predicted_error < caching.predicted_error  # <= by construction; < because pruning helps here
    assert "joint DP costs" in joint.notes[0] and joint.config["joint_cost"] is True


# ------------------------------------------------------------------------------------------------------- notes


def test_notes_say_when_the_profile_was_resampled_or_the_interval_capped():
    profile = make_profile(
        torch.rand(20, 3, 2, 4),
        torch.rand(20, 3, 2, 4, 9) * 0.01,
        meta={"resampled": {"from_steps": 50, "to_steps": 20}},
    )
    schedule = plan(profile, PlanConfig(target=1.5, max_interval=12))
    assert any("resampled from 50 to 20 steps" in note for note in schedule.notes)
    assert any("capped to 5" in note for note in schedule.notes)
    assert max(np.diff([*schedule.anchors, 20])) <= 5


def test_step_costs_sum_layers_and_modules():
    profile = realistic_profile(steps=10, distances=3)
    costs = step_costs(profile.cache_error)
    assert costs.shape == (10, 3) and costs[0].eq(0).all()
    assert costs[5, 1] == pytest.approx(float(profile.cache_error[5, :, :, 1].double().sum()))
