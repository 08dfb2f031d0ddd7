"""Block programs re-express ComfyUI's Flux blocks exactly, and reuse/partial recompute do what they claim."""

from __future__ import annotations

import pytest
import torch

from flux_helpers import sample, tiny_flux


pytestmark = pytest.mark.integration


def _hooked(patcher, schedule_for, observer_for=lambda sigmas: None):
    from comfyui_soda.nodes.patching import SodaHook, install, prepare

    adapter, layout = prepare(patcher)
    clone = patcher.clone()
    hook = SodaHook(adapter, lambda sigmas: schedule_for(layout, sigmas), observer_for=observer_for)
    install(clone, hook, layout)
    return clone, hook


def test_programs_are_bit_exact_with_comfyui_blocks(comfy):
    """Every block runs through SODA's re-expression (an observer forces it) and the image is bit-identical."""
    from comfyui_soda.soda_core.schedule import Schedule

    patcher = tiny_flux()
    reference = sample(patcher, steps=4)
    seen = []
    patched, hook = _hooked(
        patcher, Schedule.full_compute, observer_for=lambda sigmas: lambda *a: seen.append((a[0], a[1], a[2]))
    )
    out = sample(patched, steps=4)
    assert torch.equal(out, reference)
    assert len(seen) == 4 * 4 * 2  # steps x blocks x modules, all through the programs
    assert hook.reports[-1].full_modules == 4 * 4 * 2


def test_full_compute_schedule_is_bit_exact_and_leaves_the_model_untouched(comfy):
    from comfyui_soda.soda_core.schedule import Schedule

    patcher = tiny_flux()
    options_before = repr(patcher.model_options)
    reference = sample(patcher, steps=5, cfg=2.0)
    patched, hook = _hooked(patcher, Schedule.full_compute)
    assert torch.equal(sample(patched, steps=5, cfg=2.0), reference)
    assert repr(patcher.model_options) == options_before
    assert "soda_run" not in patched.model_options["transformer_options"]
    assert torch.equal(sample(patcher, steps=5, cfg=2.0), reference)
    report = hook.reports[-1]
    assert report.flops == report.full_flops and report.cache_misses == 0


def _block_inputs(patcher):
    """Inputs of the first double block and the first single block, captured during a real sampling step."""
    captured = {}

    def capture(kind):
        def patch(args, extra):
            captured.setdefault(kind, {k: (v.clone() if torch.is_tensor(v) else v) for k, v in args.items()})
            return extra["original_block"](args)

        return patch

    clone = patcher.clone()
    clone.set_model_patch_replace(capture("double_block"), "dit", "double_block", 0)
    clone.set_model_patch_replace(capture("single_block"), "dit", "single_block", 0)
    sample(clone, steps=2, batch=2)  # two samples: each row chooses its own tokens
    return captured


def _block_runner(kind):
    """Run the first ``kind`` block's program on inputs captured from real sampling (2 samples, 6 text + 64 image
    tokens): ``run(ratios, cache, record, observe)`` -> the block's outputs; also returns the token layout."""
    from comfyui_soda.nodes.patching import prepare, resolve_ops
    from comfyui_soda.soda_core.adapters.base import BlockStep
    from comfyui_soda.soda_core.tokens import TokenLayout

    patcher = tiny_flux()
    adapter, _ = prepare(patcher)
    model = patcher.model.diffusion_model
    block = (model.double_blocks if kind == "double_block" else model.single_blocks)[0]
    program, ops = adapter.programs[kind], resolve_ops(adapter)
    args = _block_inputs(patcher)[kind]
    tokens = TokenLayout(text=6, image=64)

    def run(ratios, cache, record=False, observe=None):
        fresh = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in args.items()}
        step = BlockStep(ratios, cache, tokens, ops, record=record, observe=observe)
        with torch.no_grad():
            return program.run(block, fresh, step)

    return run, tokens


@pytest.mark.parametrize("kind", ["double_block", "single_block"])
def test_reuse_returns_cache_and_partial_recomputes_selected_tokens_exactly(comfy, kind):
    from comfyui_soda.soda_core.tokens import gather_tokens, recompute_positions

    run, tokens = _block_runner(kind)
    full_cache, scores = {}, {}
    run({"attn": 1.0, "mlp": 1.0}, full_cache, record=True, observe=lambda m, out, s: scores.setdefault(m, s))
    stale = {m: torch.randn_like(v) for m, v in full_cache.items()}
    stale["attn"] = full_cache["attn"].clone()  # so the MLP sees the same input (and token scores) as in the full run

    reused = dict(stale)
    run({"attn": 0.0, "mlp": 0.0}, reused)
    assert all(reused[m] is stale[m] for m in stale)  # served from the cache, untouched

    partial = {m: v.clone() for m, v in stale.items()}
    run({"attn": 0.0, "mlp": 0.5}, partial)
    positions = recompute_positions(scores["mlp"], tokens, 0.5)  # (2, n): per sample
    assert positions.shape == (2, 6 + 32)
    assert not torch.equal(positions[0], positions[1])  # the two samples recompute different tokens
    others = torch.ones(2, tokens.total, dtype=torch.bool).scatter_(1, positions, False)
    assert torch.equal(partial["attn"], stale["attn"])
    assert torch.equal(partial["mlp"][others], stale["mlp"][others])  # scatter kept every other token
    fresh, exact = gather_tokens(partial["mlp"], positions), gather_tokens(full_cache["mlp"], positions)
    if kind == "single_block":  # D_mlp recomputed separately from the fused product: equal up to rounding
        torch.testing.assert_close(fresh, exact, rtol=1e-4, atol=1e-5)
    else:  # token-wise MLP on the selected rows: exactly the full computation's rows
        assert torch.equal(fresh, exact)
    assert scores["mlp"].shape == (2, tokens.total)


@pytest.mark.parametrize("kind", ["double_block", "single_block"])
def test_partial_attention_gives_the_full_rows_of_each_samples_own_tokens(comfy, kind):
    """Selected queries (per sample, with their own rope) against all keys: the rows full attention gives."""
    from comfyui_soda.soda_core.tokens import gather_tokens, recompute_positions

    run, tokens = _block_runner(kind)
    full, scores = {}, {}
    run({"attn": 1.0, "mlp": 1.0}, full, record=True, observe=lambda m, out, s: scores.setdefault(m, s))
    partial = {m: torch.zeros_like(v) for m, v in full.items()}
    run({"attn": 0.25, "mlp": 0.0}, partial)
    positions = recompute_positions(scores["attn"], tokens, 0.25)  # (2, 6 + 16)
    assert not torch.equal(positions[0], positions[1])
    fresh, exact = gather_tokens(partial["attn"], positions), gather_tokens(full["attn"], positions)
    torch.testing.assert_close(fresh, exact, rtol=1e-4, atol=1e-5)
    assert not torch.equal(partial["attn"], full["attn"])  # the other tokens stayed as cached (zeros)


def test_token_scores_are_per_sample_and_shared_by_the_cfg_halves(comfy):
    from comfyui_soda.soda_core.tokens import TokenScore, token_scores

    assert torch.equal(token_scores(torch.ones(2, 3, 4), TokenScore.MEAN), torch.ones(2, 3))
    x = torch.randn(4, 5, 8)  # [cond of samples a, b; uncond of samples a, b]
    shared = token_scores(x, TokenScore.MEAN, groups=2)
    assert torch.equal(shared[0], shared[2]) and torch.equal(shared[1], shared[3])
    torch.testing.assert_close(shared[0], (x[0].mean(-1) + x[2].mean(-1)) / 2)
    assert not torch.equal(shared[0], shared[1])
