"""Wall-time planning on synthetic profiles and time models (no ComfyUI): FLOPs plans stay bit-exact, the probe's
fit recovers known costs, slow partial recomputes are never planned, the DP in seconds matches a brute force, and
profile files keep the time model."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math

import pytest
import torch
from test_planner import make_profile, random_profile, realistic_profile

from comfyui_soda.soda_core.dcs import step_costs
from comfyui_soda.soda_core.planner import PlanConfig, plan
from comfyui_soda.soda_core.planner_wall import ratio_caps
from comfyui_soda.soda_core.pricing import anchor_flops, schedule_flops
from comfyui_soda.soda_core.profile import SensitivityProfile
from comfyui_soda.soda_core.schedule import Schedule
from comfyui_soda.soda_core.timing import TimeModel, fit_line
from comfyui_soda.soda_core.timing_probe import ProbeCall, TimeProbe


# ----------------------------------------------------------------------------------------------------- helpers


def time_model(profile: SensitivityProfile, fixed_share: float, per_share: float, base: float = 0.02) -> TimeModel:
    """Seconds proportional to FLOPs (1 s per unit), partial recompute ``fixed_share·full + r·per_share·full``."""
    full = profile.flops.full.double()
    layers = full.shape[0]
    reuse = torch.full((layers,), 0.01, dtype=torch.float64)
    block = reuse + full.sum(dim=1)
    return TimeModel(
        full, fixed_share * full, per_share * full, reuse, block, torch.zeros(layers, dtype=torch.float64), base
    )


def timed(profile: SensitivityProfile, fixed_share: float, per_share: float, base: float = 0.02):
    return dataclasses.replace(profile, time=time_model(profile, fixed_share, per_share, base))


def digest(schedule: Schedule) -> str:
    h = hashlib.sha256()
    h.update(
        repr((schedule.anchors, schedule.predicted_flops_ratio, schedule.predicted_error, schedule.notes)).encode()
    )
    h.update(schedule.recompute.numpy().tobytes())
    return h.hexdigest()[:16]


def partial_cells(schedule: Schedule) -> torch.Tensor:
    return (schedule.recompute > 0) & (schedule.recompute < 1)


# --------------------------------------------------------------------------------------- "flops": today's plans

# digests of the plans the planner made before wall-time planning existed (commit aafad46)
GOLDEN = [
    ("realistic", {"target": 2.0}, "b85191e2f0784326"),
    ("realistic", {"target": 3.0, "lam": 0.5}, "a99043958d488067"),
    ("realistic", {"target": 2.5, "joint_cost": True}, "420d9f28a8b2dc32"),
    ("realistic", {"target": 2.0, "pruning": False}, "ff3c299bbd59664d"),
    ("realistic", {"target": 2.0, "anchors": "uniform"}, "c0d5725d2c787517"),
    ("random", {"target": 1.8, "ratio_min": 0.1, "ratio_max": 0.6}, "6bb5c52e4d76ddbd"),
]


@pytest.mark.parametrize(("name", "config", "expected"), GOLDEN)
def test_flops_plans_are_bit_exact_with_todays(name, config, expected):
    profile = realistic_profile() if name == "realistic" else random_profile(3)
    assert digest(plan(profile, PlanConfig(**config))) == expected
    assert digest(plan(profile, PlanConfig(**config, speedup_in="flops"))) == expected
    # a time model in the profile changes nothing in FLOPs mode
    with_time = plan(timed(profile, 0.5, 2.0), PlanConfig(**config))
    assert digest(with_time) == expected and with_time.predicted_wall_ratio is None


def test_speedup_in_is_checked():
    with pytest.raises(ValueError, match="speedup_in must be one of.*got 'seconds'.*Fix"):
        PlanConfig(speedup_in="seconds")


# ------------------------------------------------------------------------------------------- the probe's fit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_probe_recovers_known_costs():
    """A block whose configurations take known seconds (the first call of each a slow warm-up)."""
    profile = realistic_profile(steps=6, layers=3)
    layout = profile.layout
    clock = FakeClock()
    block, reuse, record = 1.0, 0.1, 0.05
    full = {"attn": 0.5, "mlp": 0.4}
    line = {"attn": (0.1, 0.6), "mlp": (0.02, 0.5)}
    calls = []

    def seconds(ratios, record_):
        if ratios is None:
            return block
        if all(r >= 1.0 for r in ratios.values()):
            return block + (record if record_ else 0.0)
        total = reuse
        for m, r in ratios.items():
            if r >= 1.0:
                total += full[m]
            elif r > 0:
                total += line[m][0] + r * line[m][1]
        return total

    def prepare(ratios, cache, record_):
        def run():
            calls.append(ratios)
            first = calls.count(ratios) == 1 if ratios is not None else len([c for c in calls if c is None]) == 1
            clock.now += seconds(ratios, record_) * (5.0 if first else 1.0)

        return run

    probe = TimeProbe(layout, step=1, repeats=3, ratios=(0.2, 0.5, 0.8), clock=clock)
    assert not probe.wants(0, 0, "double", layout.modules)  # not the probe step
    assert probe.wants(1, 0, "double", layout.modules)
    probe.probe("double", ProbeCall(layout.modules, frozenset(layout.modules), dict, prepare, torch.device("cpu")))
    assert not probe.wants(1, 1, "double", layout.modules) and not probe.wants(1, 0, "double", layout.modules)
    assert not probe.wants(1, 2, "double", layout.modules)  # every layer of the kind shares the timed call
    for step, spent in enumerate([9.0, 3.0, 3.0, 3.0]):
        probe.called(step)
        probe.spent(step, spent)
    step_seconds = [10.0, 3.5 + clock.now, 3.6, 3.4]  # step 1 also holds the probe's own time
    model = probe.result(step_seconds, profile.flops)
    assert model is not None
    assert model.base == pytest.approx(0.5)  # median of 0.5, 0.6, 0.4: step 0 (FLOP counting) left out
    for layer in range(3):
        assert float(model.block[layer]) == pytest.approx(block)
        assert float(model.reuse[layer]) == pytest.approx(reuse)
        assert float(model.record[layer]) == pytest.approx(record)
        for m, name in enumerate(layout.modules):
            assert float(model.full[layer, m]) == pytest.approx(full[name])
            assert float(model.fixed[layer, m]) == pytest.approx(line[name][0])
            assert float(model.per_ratio[layer, m]) == pytest.approx(line[name][1])
    # the cost model: an anchor is base + Σ block, a reuse step base + Σ reuse
    cost = model.cost_model(profile.flops)
    assert cost.step_full == pytest.approx(0.5 + 3 * block) and cost.base == pytest.approx(0.5 + 3 * reuse)
    limit = model.partial_limit()
    assert float(limit[0, 1]) == pytest.approx((0.4 - 0.02) / 0.5)


def test_fit_line_least_squares_and_clamps():
    assert fit_line([0.25, 0.75], [0.3, 0.8]) == pytest.approx((0.05, 1.0))
    fixed, per = fit_line([0.2, 0.5, 0.8], [0.1 + 0.4 * r + e for r, e in zip([0.2, 0.5, 0.8], [0.01, -0.02, 0.01])])
    assert fixed == pytest.approx(0.1, abs=0.02) and per == pytest.approx(0.4, abs=0.05)
    assert fit_line([0.25, 0.75], [0.5, 0.4])[1] == 0.0  # noise tilting the line down: flat
    with pytest.raises(ValueError, match="two different ratios"):
        fit_line([0.5, 0.5], [1.0, 1.0])


# ------------------------------------------------------------------------------------- partial recompute in time


def test_slow_partial_recomputes_are_never_planned():
    profile = realistic_profile()
    slow = plan(timed(profile, fixed_share=1.0, per_share=0.5), PlanConfig(target=2.0, speedup_in="wall"))
    assert not bool(partial_cells(slow).any())
    assert slow.predicted_wall_ratio is not None and slow.predicted_wall_ratio >= 2.0 * (1 - 1e-5)
    assert "never partially recomputed" in " ".join(slow.notes)


def test_cheap_partial_recomputes_are_planned():
    profile = realistic_profile()
    cheap = plan(timed(profile, fixed_share=0.05, per_share=0.9), PlanConfig(target=2.0, speedup_in="wall"))
    assert bool(partial_cells(cheap).any())
    summary = cheap.summary()
    assert f"{cheap.predicted_wall_ratio:.2f}x wall time" in summary and "x transformer FLOPs" in summary
    # the FLOPs figure is the profile's FLOP model's
    expected = cheap.steps * profile.flops.step_full / schedule_flops(profile.flops, cheap.anchors, cheap.recompute)
    assert cheap.predicted_flops_ratio == pytest.approx(expected)


def test_partial_recompute_stays_below_the_ratio_where_it_costs_a_full_computation():
    profile = realistic_profile()
    timed_profile = timed(profile, fixed_share=0.1, per_share=1.5)  # cheaper than full below r = 0.6
    schedule = plan(timed_profile, PlanConfig(target=2.0, speedup_in="wall"))
    assert timed_profile.time is not None
    limits = timed_profile.time.partial_limit().expand_as(schedule.recompute)
    cells = partial_cells(schedule)
    assert bool(cells.any()) and bool((schedule.recompute.double()[cells] < limits[cells]).all())
    assert schedule.config["ratio_cap"] < 0.6


def test_ratio_caps():
    limits = torch.tensor([[0.3, 2.0], [0.02, math.inf]], dtype=torch.float64)
    prunable = torch.tensor([[True, True], [True, False]])
    caps = ratio_caps(limits, prunable, PlanConfig())
    assert caps == [pytest.approx(0.3, abs=1e-5), 0.9]


def brute_force(profile: SensitivityProfile, target: float, longest: int) -> tuple[float, int]:
    """Least Σ E_c over anchor sets whose wall ratio under the time model meets ``target`` (ties: more anchors)."""
    assert profile.time is not None
    cost = profile.time.cost_model(profile.flops)
    steps, errors = profile.steps, step_costs(profile.cache_error).tolist()
    best: tuple[float, int] | None = None
    for n in range(1, steps + 1):
        for rest in itertools.combinations(range(1, steps), n - 1):
            anchors = (0, *rest)
            gaps = [b - a for a, b in zip(anchors, (*anchors[1:], steps), strict=True)]
            if max(gaps) > longest:
                continue
            if steps * cost.step_full / anchor_flops(cost, anchors, steps) < target:
                continue
            error, last = 0.0, 0
            for t in range(steps):
                last = t if t in anchors else last
                error += errors[t][t - last - 1] if t != last else 0.0
            key = (error, -n)
            best = key if best is None or key < best else best
    assert best is not None
    return best[0], -best[1]


@pytest.mark.parametrize("seed", range(4))
def test_dp_in_seconds_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    profile = random_profile(seed, steps=7, layers=2, distances=3)
    base = float(torch.rand(1, generator=g)) * 2.0  # a per-step fixed cost: the wall reach is below the FLOPs one
    profile = timed(profile, 0.2, 1.0, base=base)
    cost = profile.time.cost_model(profile.flops)  # type: ignore[union-attr]
    reach = 7 * cost.step_full / anchor_flops(cost, (0, 4), 7)
    target = 1.0 + (reach - 1.0) * float(torch.rand(1, generator=g))
    schedule = plan(profile, PlanConfig(target=target, pruning=False, speedup_in="wall"))
    error, count = brute_force(profile, target, longest=4)
    assert schedule.predicted_error == pytest.approx(error) and len(schedule.anchors) == count


# ----------------------------------------------------------------------------------------------- profile files


def test_profile_file_keeps_the_time_model(tmp_path):
    profile = timed(realistic_profile(steps=8, layers=3), 0.1, 1.2, base=0.3)
    path = tmp_path / "timed.safetensors"
    profile.save(path)
    loaded = SensitivityProfile.load(path)
    assert loaded.time is not None and profile.time is not None
    for key, value in profile.time.to_tensors().items():
        assert torch.equal(loaded.time.to_tensors()[key], value)
    a = plan(profile, PlanConfig(target=2.0, speedup_in="wall"))
    b = plan(loaded, PlanConfig(target=2.0, speedup_in="wall"))
    assert torch.equal(a.recompute, b.recompute) and a.anchors == b.anchors
    assert Schedule.from_json(a.to_json()).predicted_wall_ratio == a.predicted_wall_ratio


def test_old_profiles_load_and_refuse_wall_planning_clearly(tmp_path):
    old = realistic_profile(steps=8, layers=3)
    path = tmp_path / "old.safetensors"
    old.save(path)
    loaded = SensitivityProfile.load(path)
    assert loaded.time is None
    plan(loaded, PlanConfig(target=2.0))  # FLOPs plans as before
    with pytest.raises(ValueError, match=r"speedup_in='wall'.*has none.*Fix: profile again.*speedup_in='flops'"):
        plan(loaded, PlanConfig(target=2.0, speedup_in="wall"))


def test_a_partial_time_model_in_a_file_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    profile = timed(realistic_profile(steps=8, layers=3), 0.1, 1.2)
    path = tmp_path / "timed.safetensors"
    profile.save(path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as file:
        metadata = dict(file.metadata())
    del tensors["time.fixed"], metadata["soda.sha256"]  # a file without a hash is checked for everything else
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"time.fixed: is missing, expected it with time.full.*Fix: re-profile"):
        SensitivityProfile.load(path)


def test_time_model_values_are_checked():
    profile = realistic_profile(steps=8, layers=3)
    bad = dataclasses.replace(time_model(profile, 0.1, 1.0), base=-1.0)
    with pytest.raises(ValueError, match="base seconds"):
        dataclasses.replace(profile, time=bad)
    wrong = time_model(make_profile(torch.rand(8, 2, 2, 3)), 0.1, 1.0)
    with pytest.raises(ValueError, match=r"time.full has shape \(2, 2\), expected \(3, 2\)"):
        dataclasses.replace(profile, time=wrong)
