"""Sketched profiling on synthetic data: the estimator's error, the token mix in sketch space, the memory formula
against the bytes the recorder holds, and that nothing is copied to the host per call."""

from __future__ import annotations

import math

import pytest
import torch

from comfyui_soda.soda_core.flops import FlopModel
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
from comfyui_soda.soda_core.profile import SensitivityProfile
from comfyui_soda.soda_core.profiler import (
    ProfileConfig,
    SensitivityRecorder,
    check_memory,
    profiling_bytes,
    profiling_memory,
)
from comfyui_soda.soda_core.sketch import projection
from comfyui_soda.soda_core.tokens import TokenLayout, recompute_positions


ONE = ModelLayout((BlockRef("double_block", 0),), ("attn",))
TWO = ModelLayout((BlockRef("double_block", 0), BlockRef("single_block", 0)), ("attn", "mlp"))
GB = 2**30


def _profile(recorder: SensitivityRecorder) -> SensitivityProfile:
    zeros = torch.zeros(recorder.layout.num_layers, recorder.layout.num_modules, dtype=torch.float64)
    sigmas = torch.linspace(1, 0, recorder.steps + 1)
    ones = torch.ones_like(zeros)  # positive FLOPs: a profile without any is refused
    return recorder.result(sigmas, FlopModel(ones, zeros, zeros, 0.0, 0.0), {})


def _cache_error(a: torch.Tensor, b: torch.Tensor, **config: object) -> float:
    """E_c(step 1, k = 1) of serving ``b`` (B, N, C) from ``a`` as the recorder measures it."""
    recorder = SensitivityRecorder(ONE, 2, ProfileConfig(max_distance=1, measure_pruning=False, **config))
    tokens = TokenLayout(text=0, image=a.shape[1])
    for step, out in enumerate((a, b)):
        recorder.observe(step, 0, "attn", "cond", out, torch.zeros(out.shape[:2]), tokens)
    return float(_profile(recorder).cache_error[1, 0, 0, 0])


def _effective_rank(x: torch.Tensor) -> float:
    gram = x.double().flatten(0, 1).T @ x.double().flatten(0, 1)  # (C, C)
    return float(torch.trace(gram) ** 2 / gram.square().sum())


def _pair(kind: str, eps: float, n: int = 64, c: int = 256) -> tuple[torch.Tensor, torch.Tensor, float]:
    """b (1, n, c) and a = b + a perturbation of relative size eps; the predicted relative std of the estimate."""
    g = torch.Generator().manual_seed(1)
    b, e = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
    if kind == "massive":  # a few channels carry most of the energy, as in DiT activations
        b[:, :4] *= 30
        e[:, 4:8] *= 30
    elif kind == "rank1":  # every token along one direction: the worst case of a shared projection
        b = torch.randn(n, 1, generator=g) @ torch.randn(1, c, generator=g)
        e = torch.randn(n, 1, generator=g) @ torch.randn(1, c, generator=g)
    e = e - (e * b).sum() / b.square().sum() * b  # orthogonal to b: all of it moves the cosine
    a = b + eps * e / e.norm() * b.norm()
    predicted = math.sqrt(2 / 64) * math.sqrt(1 / _effective_rank(e[None]) + 1 / _effective_rank(b[None]))
    return a[None], b[None], predicted


@pytest.mark.parametrize("kind", ["isotropic", "massive", "rank1"])
def test_sketched_cache_error_has_the_documented_relative_error_at_every_size(kind: str) -> None:
    """Relative error of 1 - cos from d = 64 sketches over 40 projections: its spread is the documented
    sqrt(2/d) sqrt(1/rho_e + 1/rho_b) (within a factor 0.6-1.5) and does not grow as 1 - cos shrinks 1000x."""
    spreads = []
    for eps in (0.01, 0.1, 0.3):  # 1 - cos from ~5e-5 to ~4e-2
        a, b, predicted = _pair(kind, eps)
        exact = 1 - float(torch.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0))
        assert _cache_error(a, b, sketch_dim=0) == pytest.approx(exact, rel=1e-3, abs=3e-7)  # float32 resolution
        rel = torch.tensor([_cache_error(a, b, sketch_dim=64, sketch_seed=s) / exact - 1 for s in range(40)])
        assert 0.6 * predicted <= float(rel.std()) <= 1.5 * predicted, (eps, float(rel.std()), predicted)
        assert abs(float(rel.mean())) <= 3 * predicted / math.sqrt(40) + 1 / 64
        spreads.append(float(rel.std()))
    assert max(spreads) <= 1.5 * min(spreads)


def test_a_width_not_above_sketch_dim_is_kept_exactly() -> None:
    a, b = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
    assert _cache_error(a, b, sketch_dim=64) == _cache_error(a, b, sketch_dim=0)


def test_prune_error_from_sketches_equals_an_explicit_mix_in_sketch_space() -> None:
    """E_c and E_p of a sketched profile are 1 - cos of the projected outputs and of the projected token mix."""
    ratios = (0.25, 0.5, 0.75)
    recorder = SensitivityRecorder(ONE, 3, ProfileConfig(max_distance=2, prune_ratios=ratios, sketch_dim=16))
    tokens = TokenLayout(text=3, image=8, reference=1)
    g = torch.Generator().manual_seed(0)
    outputs = [torch.randn(2, tokens.total, 48, generator=g) for _ in range(3)]
    scores = torch.randn(2, tokens.total, generator=g)  # each row ranks its own tokens
    for step, out in enumerate(outputs):
        recorder.observe(step, 0, "attn", ("cond", 0), out, scores, tokens)
    profile = _profile(recorder)
    p = projection(48, 16, seed=0)  # (C, d): the recorder's projection for width 48

    def cosine_error(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((1 - torch.cosine_similarity((x @ p).flatten(1), (y @ p).flatten(1), dim=1)).mean())

    assert float(profile.cache_error[2, 0, 0, 1]) == pytest.approx(cosine_error(outputs[0], outputs[2]), rel=1e-5)
    for j, ratio in enumerate(ratios):
        index = recompute_positions(scores, tokens, ratio)[..., None].expand(-1, -1, 48)  # (2, n, C)
        mixed = outputs[0].clone().scatter_(1, index, outputs[2].gather(1, index))
        expected = cosine_error(mixed, outputs[2])
        assert float(profile.prune_error[2, 0, 0, 1, j]) == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize(
    ("config", "dtype", "view"),
    [
        ({"sketch_dim": 16}, torch.float32, False),
        ({"sketch_dim": 16, "measure_pruning": False}, torch.bfloat16, False),
        ({"sketch_dim": 0}, torch.float32, False),
        ({"sketch_dim": 0}, torch.float32, True),  # a view into a larger output: the ring keeps its own copy
        ({"sketch_dim": 0, "half_precision_ring": True}, torch.float32, False),
        ({"sketch_dim": 0}, torch.bfloat16, False),
    ],
)
@pytest.mark.parametrize("steps", [2, 6])
def test_memory_formula_equals_the_bytes_the_recorder_holds(config, dtype, view, steps):
    """Two streams (cond and uncond in separate calls, 2 + 1 rows), two layers, two modules, K = 3."""
    profile_config = ProfileConfig(max_distance=3, **config)
    recorder = SensitivityRecorder(TWO, steps, profile_config)
    tokens = TokenLayout(text=3, image=8)
    streams = {"cond": 2, ("uncond", 7): 1}
    for step in range(steps):
        for layer in range(2):
            for module in ("attn", "mlp"):
                for stream, rows in streams.items():
                    out = torch.randn(rows, tokens.total, 80 if view else 40).to(dtype)[..., :40]
                    recorder.observe(step, layer, module, stream, out, torch.randn(rows, tokens.total), tokens)
    itemsize = 2 if config.get("half_precision_ring") else dtype.itemsize
    formula = profiling_memory(TWO, profile_config, 3, tokens.total, 40, itemsize, steps)
    held = recorder.held_bytes()
    assert held.parts() == {**formula.parts(), "working": 0}
    assert formula.held == held.held and formula.total > formula.held
    assert profiling_bytes(TWO, profile_config, 3, tokens.total, 40, itemsize, steps) == formula.total


def test_flux_1024_fits_four_gigabytes_by_the_formula() -> None:
    """Flux.1 at 1024^2: 19 double + 38 single blocks, width 3072, 4096 image + 512 text tokens, K = 8, 50 steps."""
    flux = ModelLayout(
        tuple(BlockRef("double_block", i) for i in range(19)) + tuple(BlockRef("single_block", i) for i in range(38)),
        ("attn", "mlp"),
    )
    for rows in (1, 2):  # without and with CFG
        sketched = profiling_memory(flux, ProfileConfig(), rows, 4608, 3072, 2, 50)
        assert sketched.total <= 4 * GB
        exact = profiling_memory(flux, ProfileConfig(sketch_dim=0), rows, 4608, 3072, 2, 50)
        assert exact.ring == 8 * 57 * 2 * rows * 4608 * 3072 * 2 and exact.total > 24 * GB * rows
    assert profiling_memory(flux, ProfileConfig(), 1, 4608, 3072, 2, 50).ring == 8 * 57 * 2 * 4608 * 64 * 4


def test_check_memory_names_the_need_the_parts_and_the_fix() -> None:
    config = ProfileConfig(sketch_dim=0, memory_limit_mb=1.0)
    with pytest.raises(ValueError) as caught:
        check_memory(TWO, config, 2, 4608, 3072, 2, 20)
    message = str(caught.value)
    need = profiling_bytes(TWO, config, 2, 4608, 3072, 2, 20) / 2**20
    for part in (f"needs {need:.0f} MB", "ring", "norms", "accumulators", "working", "memory_limit_mb=1"):
        assert part in message
    assert "sketch_dim=64" in message and f"at least {need + 1:.0f}" in message
    sketched = ProfileConfig(memory_limit_mb=1.0)
    with pytest.raises(ValueError, match="sketched to 64 numbers per token.*lower sketch_dim"):
        check_memory(TWO, sketched, 2, 4608, 3072, 2, 20)
    assert check_memory(TWO, ProfileConfig(), 2, 4608, 3072, 2, 20).total < 4096 * 2**20


def test_recorder_refuses_when_its_streams_exceed_the_bound() -> None:
    """The recorder re-checks with the shapes it sees: a second stream adds its rows."""
    recorder = SensitivityRecorder(ONE, 20, ProfileConfig(sketch_dim=0, memory_limit_mb=1.0))
    tokens = TokenLayout(text=0, image=512)
    recorder.observe(0, 0, "attn", "cond", torch.randn(1, 512, 32), torch.randn(1, 512), tokens)  # ~0.9 MB
    with pytest.raises(ValueError, match="2 rows"):
        recorder.observe(0, 0, "attn", "uncond", torch.randn(1, 512, 32), torch.randn(1, 512), tokens)


@pytest.mark.parametrize("sketch_dim", [0, 16])
def test_observe_keeps_everything_on_the_outputs_device(sketch_dim: int) -> None:
    """On the meta device every host copy or sync (``.item()``, ``float()``, ``.cpu()``) raises: observe makes none,
    and the ring, norms and sums stay on the device."""
    config = ProfileConfig(max_distance=2, sketch_dim=sketch_dim, half_precision_ring=False)
    recorder = SensitivityRecorder(TWO, 4, config)
    tokens = TokenLayout(text=3, image=8)
    for step in range(4):
        for module in ("attn", "mlp"):
            out, scores = torch.randn(2, 11, 32, device="meta"), torch.randn(2, 11, device="meta")
            recorder.observe(step, 1, module, "cond", out, scores, tokens)
    assert recorder._cache_sum is not None and recorder._cache_sum.device.type == "meta"
    assert recorder._prune_sum is not None and recorder._prune_sum.device.type == "meta"
    entries = [e for ring in recorder._ring.values() for e in ring]
    assert len(entries) == 4 and all(e.stored.device.type == e.norms.device.type == "meta" for e in entries)


@pytest.mark.parametrize("value", [-1, 4, 5000, 1.5, True, "64"])
def test_sketch_dim_is_validated(value: object) -> None:
    with pytest.raises(ValueError, match=r"sketch_dim=.*expected 0 .* or an integer from 8 to 4096.*Fix"):
        ProfileConfig(sketch_dim=value)  # type: ignore[arg-type]


def test_projection_is_seeded_per_width_and_device_independent() -> None:
    assert torch.equal(projection(48, 16), projection(48, 16))
    assert not torch.equal(projection(48, 16)[:40], projection(40, 16))
    assert not torch.equal(projection(48, 16, seed=1), projection(48, 16))
    assert projection(3072, 64).std().item() == pytest.approx(1 / 8, rel=0.01)
