"""The per-row FLOP model a profile stores (``soda_core/accounting.py``)."""

from __future__ import annotations

import pytest

from comfyui_soda.soda_core.accounting import FlopLedger, ModuleCosts
from comfyui_soda.soda_core.layout import BlockRef, Granularity, ModelLayout


def test_flops_are_per_sample_even_for_blocks_batching_more_rows():
    """PixelDiT's pixel blocks run on every patch of each sample as one batch: B*L rows, spent once per sample."""
    layout = ModelLayout((BlockRef("patch_blocks", 0), BlockRef("pixel_blocks", 0)), ("block",), Granularity.BLOCK)
    ledger = FlopLedger()
    ledger.blocks[(0, (2, 64))] = ModuleCosts({"block": 100.0}, {"block": 100.0}, {}, 10.0)  # (B=2, N=64)
    ledger.blocks[(1, (128, 16))] = ModuleCosts({"block": 300.0}, {"block": 300.0}, {}, 0.0)  # (B*L=128, P*P=16)
    ledger.calls[(2, 16, 64, 64, 6)] = 40.0  # the model call: batch 2
    model = ledger.flop_model(layout)
    assert model.full[:, 0].tolist() == [50.0, 150.0]
    assert model.base == pytest.approx((10.0 + 40.0) / 2)
