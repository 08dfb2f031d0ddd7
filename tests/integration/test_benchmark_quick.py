"""The benchmark harness in its quick mode (tiny Flux, < 60 s): every method runs and reports finite numbers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = ("wall_seconds", "speedup_wall", "flops", "flops_speedup", "wall_over_flops", "peak_rss_mb")
FIDELITY = ("psnr", "ssim", "rel_l2_latent")
FAMILIES = {"SODA", "SODA cache only", "uniform interval", "SODA ablation", "EasyCache", "LazyCache"}
ABLATIONS = {"prune_attention", "score", "joint_cost"}


@pytest.fixture(scope="module")
def quick_result(comfy, tmp_path_factory):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.run import main

    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "quick.json").read_text())


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_every_method_reports_finite_numbers(quick_result):
    _, result = quick_result
    (run,) = result["runs"]
    methods = run["methods"]
    assert not run["skipped"]
    assert {m["family"] for m in methods} == FAMILIES
    assert {m["params"]["ablation"] for m in methods if m["family"] == "SODA ablation"} == ABLATIONS
    assert {m["params"]["target"] for m in methods if m["family"] == "SODA"} == {1.5, 2.0}
    assert _finite(run["baseline"]["wall_seconds"]) and _finite(run["baseline"]["flops"])
    for method in methods:
        for key in NUMBERS:
            assert _finite(method[key]), (method["name"], key, method[key])
        for key in FIDELITY:
            assert _finite(method["fidelity"][key]), (method["name"], key, method["fidelity"])
        assert method["deterministic"], method["name"]


def test_soda_counted_flops_match_the_plan(quick_result):
    _, result = quick_result
    (run,) = result["runs"]
    soda = [m for m in run["methods"] if m["kind"] == "soda"]
    assert soda
    for method in soda:
        assert method["cache_misses"] == 0, method["name"]
        assert method["runtime_flops_speedup"] == pytest.approx(method["predicted_flops_speedup"], rel=0.03)
        assert method["flops_speedup"] == pytest.approx(method["predicted_flops_speedup"], rel=0.03)
    # SODA's own count of full compute agrees with FlopCounterMode's, so both sides of the ratios are comparable
    assert run["baseline"]["runtime_full_flops"] == pytest.approx(run["baseline"]["flops"], rel=0.02)


def test_external_caches_skip_steps(quick_result):
    _, result = quick_result
    for method in result["runs"][0]["methods"]:
        if method["kind"] == "external":
            assert method["full_steps"] < result["runs"][0]["steps"], method["name"]
            assert method["flops_speedup"] > 1.0


def test_markdown_table_and_plots_exist(quick_result):
    out, result = quick_result
    text = (out / "quick.md").read_text()
    assert "| Method | Full steps | Wall s (median) |" in text
    for method in result["runs"][0]["methods"]:
        assert f"| {method['name']} |" in text
    for plot in result["plots"]:
        assert (out / plot).stat().st_size > 1000
