"""The paper's baselines as SODA schedules: ToCa's anchors, fresh ratios per block kind, and bad input."""

import pytest
import torch

from comfyui_soda.soda_core import baselines
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout


LAYOUT = ModelLayout((BlockRef("double_block", 0), BlockRef("single_block", 0), BlockRef("other", 0)), ("attn", "mlp"))


def test_toca_schedule_follows_tocas_flux_defaults():
    schedule = baselines.toca(LAYOUT, torch.linspace(1, 0, 21))
    assert schedule.anchors == (0, 1, 2, 3, 7, 11, 15, 19)
    reuse = schedule.recompute[4]  # (L, M)
    assert reuse[:, 0].tolist() == [0.0, 0.0, 0.0]  # attention reused whole
    torch.testing.assert_close(reuse[:, 1], torch.tensor([0.04, 0.16, 0.10]))  # 0.1 x (0.4, 1.6, 1)
    assert torch.equal(schedule.recompute[list(schedule.anchors)], torch.ones(8, 3, 2))
    assert "ToCa-style" in schedule.notes[0]


def test_toca_interval_one_is_full_compute():
    schedule = baselines.toca(LAYOUT, torch.linspace(1, 0, 7), interval=1)
    assert schedule.anchors == tuple(range(6))


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"fresh_ratio": 1.5}, {"first_full": 0}])
def test_toca_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError, match="expected interval >= 1"):
        baselines.toca(LAYOUT, torch.linspace(1, 0, 7), **kwargs)
