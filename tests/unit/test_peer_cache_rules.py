"""The MagCache-like and TeaCache-like decision rules of ``benchmarks.peer_caches`` on synthetic sequences:
accumulators, the consecutive-skip cap, retention, the polynomial rescaling, resets."""

from __future__ import annotations

import pytest

from benchmarks.peer_cache_rules import (
    MagCacheConfig,
    MagCacheRule,
    TeaCacheConfig,
    TeaCacheRule,
    fit_rescale,
    resample,
    rescale,
    simulate,
    threshold_for,
)
from benchmarks.peer_caches import first_block


S, C = True, False  # skip, compute


def mag(threshold: float, ratios: list[float], steps: int | None = None, **kwargs: float) -> list[bool]:
    config = MagCacheConfig(threshold, tuple(ratios), **kwargs)  # type: ignore[arg-type]
    return simulate(MagCacheRule(config, steps or len(ratios)))


def tea(threshold: float, coefficients: tuple[float, ...], distances: list[float]) -> list[bool]:
    return simulate(TeaCacheRule(TeaCacheConfig(threshold, coefficients), len(distances) + 1), distances)


# ------------------------------------------------------------------------------------------------------ MagCache


def test_magcache_flat_ratios_skip_only_up_to_k_in_a_row():
    # ratio 1 everywhere: no error accumulates, so only K (5) and the retained first 10 % (2 of 20) stop skipping
    assert mag(0.1, [1.0] * 20) == [C, C] + [S] * 5 + [C] + [S] * 5 + [C] + [S] * 5 + [C]


def test_magcache_k_caps_consecutive_skips():
    assert mag(10.0, [1.0] * 10, max_skips=1, retention=0.0) == [C] + [S, C] * 4 + [S]
    assert mag(10.0, [1.0] * 10, max_skips=0, retention=0.0) == [C] * 10


def test_magcache_accumulates_the_error_of_the_ratio_product():
    # ratio 0.9: the skipped steps' errors are |1 - 0.9| = 0.1, then |1 - 0.81| = 0.19 (sum 0.29), then
    # |1 - 0.729| = 0.271 (sum 0.561): with threshold 0.3 two skips, then a computed step that resets everything
    assert mag(0.3, [1.0] + [0.9] * 9, retention=0.0) == [C, S, S, C, S, S, C, S, S, C]
    assert mag(0.28, [1.0] + [0.9] * 9, retention=0.0) == [C, S, C, S, C, S, C, S, C, S]
    rule = MagCacheRule(MagCacheConfig(0.3, (1.0,) + (0.9,) * 9, retention=0.0), 10)
    rule.decide(0), rule.decide(1), rule.decide(2)
    assert rule.error == pytest.approx(0.29) and rule.ratio == pytest.approx(0.81) and rule.skips == 2
    assert rule.decide(3) is False and (rule.ratio, rule.error, rule.skips) == (1.0, 0.0, 0)


def test_magcache_retention_keeps_the_first_steps_and_step_zero():
    assert mag(100.0, [1.0] * 10, retention=0.5)[:5] == [C] * 5
    assert mag(100.0, [1.0] * 10, retention=0.5)[5] is S
    assert mag(100.0, [1.0] * 10, retention=0.0)[:2] == [C, S]  # step 0 has no residual to reuse


def test_magcache_threshold_zero_never_skips():
    assert mag(0.0, [1.0] * 20) == [C] * 20


def test_magcache_reads_a_curve_of_another_length_by_position():
    assert resample([1.0, 2.0, 3.0], 5) == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])
    assert resample([1.0, 0.5], 2) == [1.0, 0.5]
    assert len(mag(0.3, [1.0, 0.9, 0.9], steps=12)) == 12


def test_rules_give_the_same_decisions_after_reset():
    rule = MagCacheRule(MagCacheConfig(0.3, (1.0,) + (0.9,) * 9, retention=0.0), 10)
    assert simulate(rule) == simulate(rule)
    rule = TeaCacheRule(TeaCacheConfig(0.25, (1.0, 0.0)), 10)
    assert simulate(rule, [0.1] * 9) == simulate(rule, [0.1] * 9)


# ------------------------------------------------------------------------------------------------------ TeaCache


def test_rescale_is_the_polynomial_clamped_at_zero():
    assert rescale((2.0, 0.0, 1.0), 3.0) == pytest.approx(19.0)  # 2x^2 + 1
    assert rescale((1.0, -1.0), 0.5) == 0.0  # x - 1 < 0: no negative change
    assert rescale((4.0,), 123.0) == 4.0


def test_teacache_accumulates_resets_on_compute_and_computes_the_ends():
    # identity rescaling, distance 0.1 per step, threshold 0.25: 0.1, 0.2 skip, 0.3 computes and resets
    assert tea(0.25, (1.0, 0.0), [0.1] * 9) == [C, S, S, C, S, S, C, S, S, C]
    rule = TeaCacheRule(TeaCacheConfig(0.25, (1.0, 0.0)), 10)
    assert [rule.decide(t, 0.1 if t else None) for t in range(4)] == [C, S, S, C]
    assert rule.accumulated == 0.0
    assert rule.decide(4, 0.1) is S and rule.accumulated == pytest.approx(0.1)


def test_teacache_decides_on_the_rescaled_distance():
    # the same distances doubled by the polynomial reach the threshold one step sooner; squared, never
    assert tea(0.25, (2.0, 0.0), [0.1] * 9) == [C, S, C, S, C, S, C, S, C, C]
    assert tea(0.25, (1.0, 0.0, 0.0), [0.1] * 9) == [C] + [S] * 8 + [C]


def test_teacache_first_and_last_steps_are_computed_and_zero_threshold_never_skips():
    assert tea(1e9, (1.0, 0.0), [0.1] * 9) == [C] + [S] * 8 + [C]
    assert tea(0.0, (1.0, 0.0), [0.1] * 9) == [C] * 10
    assert TeaCacheRule(TeaCacheConfig(1e9, (1.0, 0.0)), 10).decide(3, None) is C  # no previous input: compute


def test_fit_rescale_recovers_a_polynomial_and_caps_the_degree():
    xs = [0.02 * k for k in range(1, 12)]
    ys = [3 * x * x + 0.5 * x + 0.01 for x in xs]
    coefficients = fit_rescale(xs, ys)
    assert len(coefficients) == 5  # degree 4
    assert all(rescale(coefficients, x) == pytest.approx(y, rel=1e-6) for x, y in zip(xs, ys))
    assert len(fit_rescale(xs[:4], ys[:4])) == 3  # 4 points: degree 2
    assert fit_rescale([0.1], [0.2]) == (1.0, 0.0)


def test_threshold_for_hits_the_nearest_reachable_step_count():
    ratios = (1.0,) + (0.95,) * 19

    def skips(threshold: float) -> int:
        return sum(mag(threshold, list(ratios)))

    for target in (1.5, 2.0, 3.0):
        threshold, computed = threshold_for(skips, 20, target)
        assert 20 - skips(threshold) == computed
        reachable = {20 - skips(t) for t in (1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)}
        assert all(abs(computed - 20 / target) <= abs(c - 20 / target) for c in reachable)


def test_teacache_needs_a_flux_style_first_block():
    with pytest.raises(ValueError, match="no Flux-style first double block"):
        first_block(object())
