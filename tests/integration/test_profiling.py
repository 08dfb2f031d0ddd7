"""OFS through ComfyUI: a profiling run is a real full-compute run, and its errors and FLOPs are right."""

from __future__ import annotations

import pytest
import torch

from flux_helpers import conditioning, profile_tiny, sample, tiny_flux


pytestmark = pytest.mark.integration


def test_profiling_run_is_full_compute_and_fills_the_tables(comfy):
    patcher = tiny_flux()
    profile, latent = profile_tiny(patcher, steps=6, cfg=2.0)
    assert torch.equal(latent["samples"], sample(patcher, steps=6, cfg=2.0))
    assert profile.cache_error.shape == (6, 4, 2, 4)
    assert profile.prune_error.shape == (6, 4, 2, 4, 9)
    for t in range(6):
        for k in range(1, 5):
            values = profile.cache_error[t, :, :, k - 1]
            assert values.isnan().all() if t - k < 0 else (values.isfinite().all() and (values >= 0).all())
    defined = profile.prune_error[profile.prune_error.isfinite()]
    assert defined.numel() and (defined >= -1e-6).all()
    # the fused single blocks' attention cannot recompute selected tokens: E_p = inf marks "never prune"
    single_attn = profile.prune_error[1:, 2:, 0]
    assert single_attn.isinf().all() and profile.prune_error[1:, :, 1, 0].isfinite().all()
    # recomputing more tokens never leaves the output further from full compute than pure reuse, on average
    prunable = profile.prune_error[1:, :, :, 0, -1].isfinite()
    closer = profile.prune_error[1:, :, :, 0, -1] <= profile.cache_error[1:, :, :, 0] + 1e-6
    assert closer[prunable].float().mean() > 0.9
    assert profile.meta["steps"] == 6 and profile.meta["granularity"] == "module"


def test_prune_error_equals_an_explicit_mix(comfy):
    """E_p from prefix sums equals 1 - cos of the explicitly mixed tensor."""
    from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
    from comfyui_soda.soda_core.profiler import ProfileConfig, SensitivityRecorder
    from comfyui_soda.soda_core.tokens import TokenLayout, recompute_positions

    layout = ModelLayout((BlockRef("double_block", 0),), ("mlp",))
    config = ProfileConfig(max_distance=2, prune_ratios=(0.25, 0.5), sketch_dim=0)  # exact: the outputs themselves
    recorder = SensitivityRecorder(layout, 3, config)
    tokens = TokenLayout(text=3, image=8, reference=1)
    outputs = [torch.randn(2, tokens.total, 5) for _ in range(3)]
    scores = torch.randn(2, tokens.total)  # each row ranks its own tokens
    for step, out in enumerate(outputs):
        recorder.observe(step, 0, "mlp", (0,), out, scores, tokens)
    assert recorder._prune_sum is not None
    sums = recorder._prune_sum[2, 0, 0, 1] / 2  # step 2, distance 2, mean over the 2 rows
    for j, ratio in enumerate((0.25, 0.5)):
        positions = recompute_positions(scores, tokens, ratio)  # (2, n)
        mixed = outputs[0].clone()
        index = positions[..., None].expand(-1, -1, 5)
        mixed.scatter_(1, index, outputs[2].gather(1, index))
        cos = torch.nn.functional.cosine_similarity(mixed.flatten(1), outputs[2].flatten(1), dim=1)
        torch.testing.assert_close(float(sums[j]), float((1 - cos).mean()), rtol=1e-5, atol=1e-7)


def test_block_granularityprofile_tiny(comfy):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.layout import Granularity
    from comfyui_soda.soda_core.profiler import ProfileConfig

    patcher = tiny_flux()
    settings = SamplingSettings(seed=0, steps=4, cfg=1.0, sampler_name="euler", scheduler="simple")
    profile, latent = profile_model(
        patcher,
        conditioning(patcher, 1),
        conditioning(patcher, 2),
        {"samples": torch.zeros(1, 16, 16, 16)},
        settings,
        ProfileConfig(max_distance=2),
        Granularity.BLOCK,
    )
    assert profile.layout.modules == ("block",) and not profile.has_prune_error
    assert torch.equal(latent["samples"], sample(patcher, steps=4))
    assert profile.cache_error[1:, :, 0, 0].isfinite().all()


@pytest.mark.parametrize("sketch_dim", [0, 64])
def test_memory_bound_is_enforced_before_sampling(comfy, monkeypatch, sketch_dim):
    """The node-level check refuses before the first model call, naming the need, its parts and the fix."""
    import comfy.sample

    patcher = tiny_flux()
    calls = []
    monkeypatch.setattr(comfy.sample, "sample", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"needs \d+ MB \(ring .* working .*memory_limit_mb=0.*Fix: raise"):
        profile_tiny(patcher, memory_limit_mb=0.01, sketch_dim=sketch_dim)
    assert not calls


def test_memory_check_bounds_the_widest_module_output(comfy):
    """The pre-check takes the width of module outputs from the served blocks' widest linear layer (no family
    field such as Flux's hidden_size): widening one block's MLP raises the bound by the ring's share."""
    from comfyui_soda.nodes.profiling import SamplingSettings, _check_memory_before
    from comfyui_soda.soda_core.adapters import serve
    from comfyui_soda.soda_core.profiler import ProfileConfig

    patcher = tiny_flux()
    served = serve(patcher.model.diffusion_model)
    settings = SamplingSettings(seed=0, steps=4, cfg=1.0, sampler_name="euler", scheduler="simple")
    args = (ProfileConfig(sketch_dim=0, memory_limit_mb=0.01), torch.zeros(1, 16, 16, 16), conditioning(patcher, 1))

    def needed_mb() -> int:
        with pytest.raises(ValueError, match=r"needs \d+ MB") as refused:
            _check_memory_before(patcher, served, args[0], args[1], (args[2], args[2]), settings)
        return int(str(refused.value).split("needs ")[1].split(" MB")[0])

    width = served.output_width()
    assert width == max(m.out_features for m in patcher.model.diffusion_model.modules() if hasattr(m, "out_features"))
    before = needed_mb()
    block = patcher.model.diffusion_model.double_blocks[0]
    block.img_mlp[0] = torch.nn.Linear(block.img_mlp[0].in_features, 64 * width)
    assert served.output_width() == 64 * width
    assert needed_mb() > before


def test_cancel_stops_profiling_and_leaves_nothing_behind(comfy):
    """ComfyUI's Cancel (interrupt flag) stops profiling at the next step; the model is left as it was."""
    import comfy.model_management

    patcher = tiny_flux()
    before = (repr(patcher.model_options), dict(patcher.patches))
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            profile_tiny(patcher)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert (repr(patcher.model_options), dict(patcher.patches)) == before
    assert "soda_run" not in repr(patcher.model_options)
