"""A block called more than once in one model call (Wan VACE runs its VACE blocks once per control) keeps one cache
per call: a reuse step serves each call its own output, not the last call's."""

from __future__ import annotations

import torch

from comfyui_soda.soda_core.adapters import Layer, ServedModel
from comfyui_soda.soda_core.adapters.spec import BlockSpec, Family, Role
from comfyui_soda.soda_core.layout import BLOCK_MODULES, BlockRef, Granularity, ModelLayout
from comfyui_soda.soda_core.runtime import SodaRun
from comfyui_soda.soda_core.schedule import Schedule


class Residual(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


def _run() -> tuple[SodaRun, Residual]:
    block = Residual()
    spec = BlockSpec(kind="block", blocks="blocks", streams={"x": Role.IMAGE}, returns=("x",))
    ref = BlockRef("block", 0)
    layout = ModelLayout((ref,), BLOCK_MODULES, Granularity.BLOCK)
    served = ServedModel(Family("toy", ("toy.Toy",), (spec,)), (Layer(ref, spec, "blocks.0", block),), layout, 1)
    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.0])
    return SodaRun(served, Schedule.uniform(layout, sigmas, interval=3)), block  # step 0 full, 1 and 2 reuse


def test_each_call_of_a_block_in_a_model_call_is_served_its_own_cache():
    run, block = _run()
    latent = torch.zeros(1, 4, 2, 2)  # 4 image tokens at patch 1
    inputs = [torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    residuals = [block(x) - x for x in inputs]  # what step 0 caches for each call
    for step, sigma in enumerate((1.0, 0.6, 0.3)):
        run.begin_call(latent, sigma, 0, (0,), ())
        with run.measuring():
            outputs = [run.run_block(0, block.forward, (x + step,), {}) for x in inputs]
        if step == 0:
            assert all(torch.equal(out, x + r) for out, x, r in zip(outputs, inputs, residuals, strict=True))
        else:  # reuse: input + the residual this call cached at step 0
            for out, x, r in zip(outputs, inputs, residuals, strict=True):
                torch.testing.assert_close(out, x + step + r)
    report = run.finish()
    assert report.cache_misses == 0 and report.reused_modules == 4
