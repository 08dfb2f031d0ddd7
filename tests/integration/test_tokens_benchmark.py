"""benchmarks/tokens.py in its quick mode (10 digits of the 32x32 reference model, 4 steps, one repeat): cache only
and cache + prune at one target, judged, with the matched-FLOPs and matched-wall comparisons."""

from __future__ import annotations

import json
import math

import pytest


pytestmark = pytest.mark.integration


def test_quick_tokens_benchmark_compares_pruning_with_cache_only(comfy, tmp_path):
    from benchmarks.tokens import main

    out = tmp_path / "tokens.json"
    assert main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "digits32" and result["image_tokens"] == 256 and result["samples"] == 10
    assert [(r["target"], r["pruning"]) for r in result["rows"]] == [(2.0, False), (2.0, True)]
    for row in result["rows"]:
        assert row["flops_ratio"] > 1.0 and math.isfinite(row["wall_speedup"]) and 0.0 <= row["accuracy"] <= 1.0
        assert row["ssim"] <= 1.0 and math.isfinite(row["fid"])
    (flops,) = result["matched_flops"]
    assert flops["target"] == 2.0 and len(flops["psnr"]) == 2
    (wall,) = result["matched_wall"]
    assert set(wall) == {"target", "wall_speedup", "psnr", "cache_only_psnr_at_same_wall", "psnr_gain_db"}
    assert 0.0 <= result["full_compute"]["accuracy"] <= 1.0
