"""Flux's block programs on real block calls: reuse serves the cache, partial recompute writes exactly the selected
tokens, partial attention gives full attention's rows, and a block whose code changed under SODA falls back to
block granularity (with a warning) instead of being refused."""

from __future__ import annotations

import logging

import pytest
import torch

from flux_helpers import sample, tiny_flux


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def flux_calls(comfy):
    """A SODA-patched tiny Flux and the inputs of its first double and single block during real sampling (2 samples,
    6 text + 64 image tokens each)."""
    from comfyui_soda.nodes.patching import install, planned, prepare
    from comfyui_soda.soda_core.schedule import Schedule

    patcher = tiny_flux()
    served = prepare(patcher)
    patched = patcher.clone()
    hook = planned(served, lambda sigmas: Schedule.full_compute(served.layout, sigmas))
    install(patched, hook)
    model = patcher.model.diffusion_model
    captured = {}

    def capture(kind):
        def pre_hook(module, args, kwargs):
            clone = lambda v: v.clone() if torch.is_tensor(v) else v  # noqa: E731
            captured.setdefault(kind, (tuple(clone(a) for a in args), {k: clone(v) for k, v in kwargs.items()}))

        return pre_hook

    handles = [
        model.double_blocks[0].register_forward_pre_hook(capture("double_block"), with_kwargs=True),
        model.single_blocks[0].register_forward_pre_hook(capture("single_block"), with_kwargs=True),
    ]
    try:
        sample(patched, steps=2, batch=2)
    finally:
        for handle in handles:
            handle.remove()
    return patched, hook, captured


def _runner(flux_calls, kind):
    """``run(ratios, cache, record)`` -> (outputs by stream, step) of the first ``kind`` block's program."""
    import comfy.model_management

    from comfyui_soda.soda_core.adapters.patterns import program_for
    from comfyui_soda.soda_core.adapters.step import BlockCall, BlockStep, stream_layouts
    from comfyui_soda.soda_core.runtime import SodaRun
    from comfyui_soda.soda_core.schedule import Schedule

    patched, hook, captured = flux_calls
    comfy.model_management.load_models_gpu([patched])  # its object patches (the taps) are applied
    served = hook.served
    layer = next(i for i, s in enumerate(served.layers) if s.ref.kind == kind)
    block, spec = served.layers[layer].block, served.layers[layer].spec
    program = program_for(spec, True)
    run = SodaRun(served, Schedule.full_compute(served.layout, torch.linspace(1, 0, 3)))
    args, kwargs = captured[kind]

    def go(ratios, cache, record=False, observe=None):
        clone = lambda v: v.clone() if torch.is_tensor(v) else v  # noqa: E731
        call = BlockCall(
            spec, type(block).forward.__get__(block), tuple(map(clone, args)), {k: clone(v) for k, v in kwargs.items()}
        )
        step = BlockStep(layer, ratios, cache, stream_layouts(call, 64, 6), record=record, observe=observe)
        hook.slot.run = run
        try:
            with torch.no_grad():
                return call.outputs(run.run_program(program, step, call)), step
        finally:
            hook.slot.run = None

    return go


def _own(flux_calls, kind):
    _, hook, captured = flux_calls
    block = next(s.block for s in hook.served.layers if s.ref.kind == kind)
    args, kwargs = captured[kind]
    with torch.no_grad():
        clone = lambda v: v.clone() if torch.is_tensor(v) else v  # noqa: E731
        out = type(block).forward(block, *map(clone, args), **{k: clone(v) for k, v in kwargs.items()})
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("kind", ["double_block", "single_block"])
def test_full_call_is_the_blocks_own_and_reuse_serves_the_cache(flux_calls, kind):
    from torch.utils.flop_counter import FlopCounterMode

    run = _runner(flux_calls, kind)
    with FlopCounterMode(display=False) as full_count:
        full, step = run({"attn": 1.0, "mlp": 1.0}, {}, record=True)
    assert all(torch.equal(a, b) for a, b in zip(full.values(), _own(flux_calls, kind), strict=True))
    with FlopCounterMode(display=False) as reuse_count:
        reused, _ = run({"attn": 0.0, "mlp": 0.0}, dict(step.cache))
    for name in full:
        torch.testing.assert_close(reused[name], full[name], rtol=1e-5, atol=1e-5)
    # served from the cache, only the modulation is computed: no projection, attention or MLP
    assert reuse_count.get_total_flops() < 0.05 * full_count.get_total_flops()


def test_partial_mlp_recomputes_exactly_the_selected_tokens_of_each_sample(flux_calls):
    from comfyui_soda.soda_core.tokens import recompute_positions

    run = _runner(flux_calls, "double_block")
    _, exact = run({"attn": 1.0, "mlp": 1.0}, {}, record=True)
    stale = {m: {s: torch.randn_like(t) for s, t in streams.items()} for m, streams in exact.cache.items()}
    stale["attn"] = exact.cache["attn"]  # the MLP then sees the same input (and token scores) as the full call
    cache = {m: {s: t.clone() for s, t in streams.items()} for m, streams in stale.items()}
    _, step = run({"attn": 0.0, "mlp": 0.5}, cache)
    img_scores = step.scores["mlp"]["img"]  # (2, 64): each sample ranks its own tokens
    chosen = recompute_positions(img_scores, step.tokens["img"], 0.5)  # (2, 32)
    assert not torch.equal(chosen[0], chosen[1])
    kept = torch.ones(2, 64, dtype=torch.bool).scatter_(1, chosen, False)
    partial, truth = cache["mlp"]["img"], exact.cache["mlp"]["img"]
    assert torch.equal(partial[kept], stale["mlp"]["img"][kept])  # every other token stays as cached
    assert torch.equal(partial[~kept], truth[~kept])  # token-wise MLP on the selected rows: the full rows
    assert torch.equal(cache["mlp"]["txt"], exact.cache["mlp"]["txt"])  # text tokens are always recomputed


def test_partial_attention_gives_the_full_rows_of_each_samples_own_tokens(flux_calls):
    run = _runner(flux_calls, "double_block")
    _, exact = run({"attn": 1.0, "mlp": 1.0}, {}, record=True)
    cache = {m: {s: torch.zeros_like(t) for s, t in streams.items()} for m, streams in exact.cache.items()}
    _, step = run({"attn": 0.25, "mlp": 0.0}, cache)
    positions = step.stream_positions("attn", ("txt", "img"), "img", 0.25)  # (2, 16)
    assert not torch.equal(positions[0], positions[1])
    fresh = cache["attn"]["img"].gather(1, positions[..., None].expand(-1, -1, 128))
    full = exact.cache["attn"]["img"].gather(1, positions[..., None].expand(-1, -1, 128))
    torch.testing.assert_close(fresh, full, rtol=1e-4, atol=1e-5)
    assert float(cache["attn"]["img"].abs().sum()) > 0 and not torch.equal(
        cache["attn"]["img"], exact.cache["attn"]["img"]
    )


def test_token_scores_are_per_sample_and_shared_by_the_cfg_halves(comfy):
    from comfyui_soda.soda_core.tokens import TokenScore, token_scores

    assert torch.equal(token_scores(torch.ones(2, 3, 4), TokenScore.MEAN), torch.ones(2, 3))
    x = torch.randn(4, 5, 8)  # [cond of samples a, b; uncond of samples a, b]
    shared = token_scores(x, TokenScore.MEAN, groups=2)
    assert torch.equal(shared[0], shared[2]) and torch.equal(shared[1], shared[3])
    torch.testing.assert_close(shared[0], (x[0].mean(-1) + x[2].mean(-1)) / 2)
    assert not torch.equal(shared[0], shared[1])


def test_a_block_whose_code_changed_falls_back_to_block_granularity(comfy, monkeypatch, caplog):
    """A ComfyUI update that changes how a block uses its submodules (here: the MLP runs twice) is caught by the
    behavioural check on the first call: one warning naming the class and the version, the block class is served at
    block granularity, nothing is refused, full compute stays bit-exact and a 2x plan still saves FLOPs."""
    import comfy.ldm.flux.layers as layers
    from test_soda_sampling import _patched

    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.adapters.check import forget_verdicts
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig
    from comfyui_soda.soda_core.profiler import ProfileConfig
    from flux_helpers import conditioning

    own = layers.DoubleStreamBlock.forward

    def changed(self, img, txt, *args, **kwargs):
        img, txt = own(self, img, txt, *args, **kwargs)
        return img + 0.0 * self.img_mlp(img), txt

    monkeypatch.setattr(layers.DoubleStreamBlock, "forward", changed)
    forget_verdicts()
    try:
        patcher = tiny_flux()
        reference = sample(patcher, steps=8)
        with caplog.at_level(logging.WARNING, logger="comfyui_soda"):
            profile, latent = profile_model(
                patcher,
                conditioning(patcher, 1),
                conditioning(patcher, 2, words=3),
                {"samples": torch.zeros(1, 16, 16, 16)},
                SamplingSettings(seed=0, steps=8, cfg=1.0, sampler_name="euler", scheduler="simple"),
                ProfileConfig(max_distance=4),
            )
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len([w for w in warnings if "DoubleStreamBlock" in w]) == 1, warnings
        assert "block granularity" in warnings[0] and "ComfyUI 0." in warnings[0] and "img_mlp" in warnings[0]
        assert torch.equal(latent["samples"], reference)
        assert profile.layout.modules == ("attn", "mlp")  # the single blocks keep their module program
        soda_plan = plan_schedule(profile, PlanConfig(target=2.0), prune_attention=False)
        model = _patched(patcher, soda_plan)
        out = sample(model, steps=8)
        report = model.model_options["transformer_options"]["soda"].reports[-1]
        assert torch.isfinite(out).all() and report.flops_ratio > 1.8 and report.cache_misses == 0
        assert report.flops_ratio == pytest.approx(soda_plan.schedule.predicted_flops_ratio, rel=0.03)
    finally:
        forget_verdicts()
