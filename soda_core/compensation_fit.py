"""Profiling the predictors of ``compensation``: their errors and GOC's fitted weight, from inner products alone.

A profiling run keeps, per calibration row, the inner products of each module's output with its own outputs up to
K steps earlier, ``G[t, j] = <D_t, D_{t-j}>`` (j = 0..K; the profiler computes them for E_c anyway, on the same
sketches). Every forecast is an affine combination ``f = Σ_i c_i D_{t - o_i}`` of past outputs (o_i steps back), so

    <f, D_t> = Σ_i c_i G[t, o_i]        |f|^2 = Σ_{i,j} c_i c_j G[t - min(o_i, o_j), |o_i - o_j|]

give ``1 - cos(f, D_t)`` exactly without keeping any output. A reuse step at distance k from its anchor, whose
anchor is p steps after the anchor before it, has o = (k, k + p) (and k + 2p for taylor2, taken with equal
spacing), so each error is a table over (t, k, p); entries with an offset beyond K are NaN (not measured).

GOC's weight ``g`` per (layer, module) scales the Taylor step, ``w = g k / p``; it minimises the calibration
error by gradient descent (torch autograd, Adam, ``FIT_STEPS`` iterations from ``g = 0``, keeping the best value
seen, so the fitted error is never above plain reuse's) over the cells that are not inflections. An inflection is
a cell whose mean ``cos(D_t - a_1, a_1 - a_2)`` over the calibration rows is negative: the trajectory turns back
there, and GOC switches its correction off (w = 0).
"""

from __future__ import annotations

import math

import torch

from .compensation import taylor2


Tensor = torch.Tensor
FIT_STEPS = 60
FIT_RATE = 0.05
FIT_RANGE = (0.0, 2.0)  # g: 0 = plain reuse, 1 = taylor1


def _read(gram: Tensor, back: int, lag: int) -> Tensor:
    """``G[t - back, lag]`` for every t (T, B); NaN where ``t - back < 0``."""
    steps = gram.shape[0]
    out = torch.full((steps, gram.shape[2]), math.nan, dtype=gram.dtype)
    if back < steps:
        out[back:] = gram[: steps - back, lag]
    return out


def combination_cosine(gram: Tensor, offsets: tuple[int, ...], coefficients: tuple[float, ...]) -> Tensor:
    """``cos(Σ_i c_i D_{t - o_i}, D_t)`` per step and row (T, B) from ``gram`` (T, K+1, B); NaN where unmeasured."""
    dot = torch.zeros(gram.shape[0], gram.shape[2], dtype=gram.dtype)
    for c, o in zip(coefficients, offsets, strict=True):
        dot = dot + c * _read(gram, 0, o)
    norm = torch.zeros_like(dot)
    for ci, oi in zip(coefficients, offsets, strict=True):
        for cj, oj in zip(coefficients, offsets, strict=True):
            norm = norm + ci * cj * _read(gram, min(oi, oj), abs(oi - oj))
    return dot / (norm.clamp(min=0.0) * _read(gram, 0, 0)).sqrt().clamp(min=1e-30)


def _goc_terms(gram: Tensor, k: int, p: int) -> tuple[Tensor, ...]:
    """(y1, y2, a11, a12, a22, yy), each (T, B): the inner products GOC's error at weight w is a function of."""
    return (
        _read(gram, 0, k),
        _read(gram, 0, k + p),
        _read(gram, k, 0),
        _read(gram, k, p),
        _read(gram, k + p, 0),
        _read(gram, 0, 0),
    )


def _goc_error(terms: tuple[Tensor, ...], w: Tensor | float) -> Tensor:
    """``1 - cos(a_1 + w (a_1 - a_2), y)`` (T, B) from ``_goc_terms`` (differentiable in ``w``)."""
    y1, y2, a11, a12, a22, yy = terms
    c1, c2 = 1.0 + w, -w
    dot = c1 * y1 + c2 * y2
    norm = c1 * c1 * a11 + 2 * c1 * c2 * a12 + c2 * c2 * a22
    return 1.0 - dot / (norm.clamp(min=0.0) * yy).sqrt().clamp(min=1e-30)


def inflections(gram: Tensor, k: int, p: int) -> Tensor:
    """(T,) True where the mean over rows of ``cos(D_t - a_1, a_1 - a_2)`` is negative (the path turns back)."""
    y1, y2, a11, a12, a22, yy = _goc_terms(gram, k, p)
    turn = (y1 - y2 - a11 + a12) / ((yy - 2 * y1 + a11).clamp(min=0) * (a11 - 2 * a12 + a22).clamp(min=0)).sqrt()
    return torch.nan_to_num(turn, nan=1.0).mean(dim=1) < 0  # (T,)


def _pairs(distances: int) -> list[tuple[int, int]]:
    return [(k, p) for k in range(1, distances + 1) for p in range(1, distances + 1) if k + p <= distances]


def fit_goc(gram: Tensor, steps: int = FIT_STEPS, rate: float = FIT_RATE) -> tuple[float, float, float]:
    """GOC's ``g`` for one (layer, module) from its ``gram`` (T, K+1, B): ``(g, error at g, error at 0)``, both
    errors the mean over the non-inflection cells it is fitted on (rows and (t, k, p) with every term measured).

    Runs with autograd on whatever mode the caller is in: ComfyUI's server samples under ``torch.inference_mode``,
    whose tensors autograd cannot save, so the fit works on normal copies of them."""
    with torch.inference_mode(False), torch.enable_grad():
        return _fit_goc(gram.clone(), steps, rate)


def _fit_goc(gram: Tensor, steps: int, rate: float) -> tuple[float, float, float]:
    data = []
    for k, p in _pairs(gram.shape[1] - 1):
        terms = _goc_terms(gram, k, p)
        keep = ~inflections(gram, k, p)[:, None] & torch.stack(terms).isfinite().all(dim=0)  # (T, B)
        if bool(keep.any()):
            data.append((tuple(t[keep] for t in terms), k / p))
    if not data:
        return 0.0, math.nan, math.nan

    def loss(g: Tensor) -> Tensor:
        errors = torch.cat([_goc_error(terms, g * ratio) for terms, ratio in data])
        return errors.mean()

    g = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([g], lr=rate)
    with torch.no_grad():
        start = float(loss(g))
    best = (start, 0.0)
    for _ in range(steps):
        optimiser.zero_grad()
        value = loss(g)
        value.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        with torch.no_grad():
            g.clamp_(*FIT_RANGE)
            now = float(loss(g))
        best = min(best, (now, float(g.detach())))
    return best[1], best[0], start


def forecast_tables(
    grams: dict[tuple[int, int], Tensor], steps: int, layers: int, modules: int, distances: int
) -> tuple[Tensor, Tensor]:
    """``(forecast_error (3, T, L, M, K, K), forecast_weight (T, L, M, K, K))`` from the rows' inner products per
    (layer, module) ``grams[(l, m)]`` (T, K+1, B). Entry ``[..., k-1, p-1]``: distance k from the anchor, p between
    the last two anchors; rows ``compensation.MEASURED``; NaN where not measured. The weight is GOC's effective
    ``w`` (0 at inflections)."""
    shape = (steps, layers, modules, distances, distances)
    error = torch.full((3, *shape), math.nan)
    weight = torch.full(shape, math.nan)
    for (layer, m), gram in grams.items():
        g, _, _ = fit_goc(gram)
        for k, p in _pairs(distances):
            t1 = 1.0 - combination_cosine(gram, (k, k + p), (1.0 + k / p, -k / p))  # (T, B)
            error[0, :, layer, m, k - 1, p - 1] = t1.mean(dim=1).float()
            if k + 2 * p <= distances:
                c = taylor2(float(k), (0.0, float(-p), float(-2 * p)))
                t2 = 1.0 - combination_cosine(gram, (k, k + p, k + 2 * p), c)
                error[1, :, layer, m, k - 1, p - 1] = t2.mean(dim=1).float()
            w = torch.where(inflections(gram, k, p), 0.0, g * k / p)  # (T,)
            goc_error = _goc_error(_goc_terms(gram, k, p), w[:, None])  # (T, B)
            error[2, :, layer, m, k - 1, p - 1] = goc_error.mean(dim=1).float()
            measured = _read(gram, k + p, 0).isfinite().all(dim=1)  # (T,)
            weight[:, layer, m, k - 1, p - 1] = torch.where(measured, w, math.nan).float()
    return error.clamp(0.0, 2.0), weight
