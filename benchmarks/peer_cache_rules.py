"""The skip rules of the MagCache-like and TeaCache-like step caches (``peer_caches``), pure: calibration curves in,
a skip decision per step out, no model, no ComfyUI; what the benchmark simulates to match a speed-up and what the
hooks call while sampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


MAG_K = 5  # at most this many steps skipped in a row
MAG_RETENTION = 0.1  # share of the first steps always computed
TEA_DEGREE = 4
THRESHOLD_GRID = tuple(10 ** (k / 40) for k in range(-240, 61))  # 1e-6 .. ~32, 40 per decade


def resample(curve: Sequence[float], steps: int) -> list[float]:
    """A per-step curve calibrated on ``len(curve)`` steps, read at ``steps`` steps by relative position."""
    n = len(curve)
    if n == steps or n < 2:
        return [float(curve[min(t, n - 1)]) for t in range(steps)] if n else [1.0] * steps
    positions = torch.linspace(0, n - 1, steps, dtype=torch.float64)
    values = torch.tensor(curve, dtype=torch.float64)
    low = positions.floor().long().clamp(max=n - 2)
    frac = positions - low
    return (values[low] * (1 - frac) + values[low + 1] * frac).tolist()


# --------------------------------------------------------------------------------------------- MagCache-like rule


@dataclass(frozen=True)
class MagCacheConfig:
    threshold: float
    mag_ratios: tuple[float, ...]  # per step of the calibration run; [0] = 1
    max_skips: int = MAG_K
    retention: float = MAG_RETENTION


class MagCacheRule:
    """MagCache's decision over one run of ``steps`` steps; ``decide(t)`` is called once per step, in order."""

    def __init__(self, config: MagCacheConfig, steps: int) -> None:
        self.config, self.steps = config, steps
        self.ratios = resample(config.mag_ratios, steps)
        self.retained = max(1, int(config.retention * steps))  # step 0 has no residual to reuse
        self.reset()

    def reset(self) -> None:
        self.ratio, self.error, self.skips = 1.0, 0.0, 0

    def decide(self, step: int, distance: float | None = None) -> bool:
        """True: skip ``step`` (reuse the last residual). ``distance`` is unused (the schedule is offline)."""
        if step < self.retained:
            self.reset()
            return False
        self.ratio *= self.ratios[step]
        self.error += abs(1.0 - self.ratio)
        self.skips += 1
        if self.error < self.config.threshold and self.skips <= self.config.max_skips:
            return True
        self.reset()
        return False


# --------------------------------------------------------------------------------------------- TeaCache-like rule


@dataclass(frozen=True)
class TeaCacheConfig:
    threshold: float
    coefficients: tuple[float, ...]  # rescaling polynomial, highest power first (numpy.polyval order)


def rescale(coefficients: Sequence[float], distance: float) -> float:
    """The polynomial at ``distance`` (Horner), clamped at 0: an estimated change is never negative."""
    value = 0.0
    for c in coefficients:
        value = value * distance + c
    return max(value, 0.0)


class TeaCacheRule:
    """TeaCache's decision; ``decide(t, distance)`` once per step with the modulated input's relative L1 distance
    to the previous step's (None at the first step)."""

    def __init__(self, config: TeaCacheConfig, steps: int) -> None:
        self.config, self.steps = config, steps
        self.reset()

    def reset(self) -> None:
        self.accumulated = 0.0

    def decide(self, step: int, distance: float | None = None) -> bool:
        if distance is None or step == 0 or step >= self.steps - 1:
            self.reset()
            return False
        self.accumulated += rescale(self.config.coefficients, distance)
        if self.accumulated < self.config.threshold:
            return True
        self.reset()
        return False


def fit_rescale(distances: Sequence[float], changes: Sequence[float], degree: int = TEA_DEGREE) -> tuple[float, ...]:
    """Least-squares polynomial ``changes ~ p(distances)`` of degree ``min(degree, points - 2)`` (at least 1)."""
    import numpy as np

    if len(distances) < 2:
        return (1.0, 0.0)  # no fit possible: the distance itself
    deg = max(1, min(degree, len(distances) - 2))
    return tuple(float(c) for c in np.polyfit(np.asarray(distances), np.asarray(changes), deg))


def simulate(rule: MagCacheRule | TeaCacheRule, distances: Sequence[float] = ()) -> list[bool]:
    """The skip decision of every step of ``rule`` on a sequence (``distances[t - 1]`` for step ``t``)."""
    rule.reset()
    return [rule.decide(t, distances[t - 1] if 0 < t <= len(distances) else None) for t in range(rule.steps)]


def threshold_for(skips: Callable[[float], int], steps: int, target: float) -> tuple[float, int]:
    """A threshold whose simulated run computes the step count nearest ``steps / target`` (the middle one of the
    grid thresholds that do), and that count."""
    counts = [(t, steps - skips(t)) for t in THRESHOLD_GRID]
    best = min(abs(c - steps / target) for _, c in counts)
    chosen = [(t, c) for t, c in counts if abs(c - steps / target) == best]
    return chosen[len(chosen) // 2]
