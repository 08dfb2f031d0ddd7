"""The benchmark harness in its quick mode (tiny Flux and the reference model, about a minute): every method runs and
reports finite numbers; the reference setting also judges its samples with the digits classifier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = ("wall_seconds", "speedup_wall", "flops", "flops_speedup", "wall_over_flops", "peak_rss_mb")
FIDELITY = ("psnr", "ssim", "rel_l2_latent")
FAMILIES = {
    "SODA",
    "SODA + compensation",
    "SODA cache only",
    "SODA + compensation, cache only",
    "SODA uniform schedule",
    "SODA ablation",
    "FORA (static cache)",
    "ToCa (token cache)",
    "EasyCache",
    "LazyCache",
    "MagCache-like",
    "TeaCache-like",
}
PEERS = ("MagCache-like", "TeaCache-like")
CORE_COMP = "SODA + compensation"
COMP_CACHE_ONLY = "SODA + compensation, cache only"
MODES = ("SODA", CORE_COMP, "SODA cache only", COMP_CACHE_ONLY)  # what a user picks: SODA's figure is their best
RIVALS = {"FORA (static cache)", "ToCa (token cache)", "EasyCache", "LazyCache", *PEERS}
ABLATIONS = {"prune_attention", "score", "joint_cost"}


@pytest.fixture(scope="module")
def quick(comfy, tmp_path_factory):
    from benchmarks.run import main

    out = tmp_path_factory.mktemp("bench")
    assert main(["--quick", "--out", str(out)]) == 0
    return out, {name: json.loads((out / f"{name}.json").read_text()) for name in ("quick", "quick-reference")}


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


CORE = FAMILIES - {"SODA uniform schedule", "SODA ablation", "ToCa (token cache)"}


@pytest.mark.parametrize("setting", ["quick", "quick-reference"])
def test_every_method_reports_finite_numbers(quick, setting):
    _, results = quick
    run = results[setting]["runs"][0]
    methods = run["methods"]
    assert not run["skipped"]
    assert {m["family"] for m in methods} == FAMILIES
    assert {m["params"]["ablation"] for m in methods if m["family"] == "SODA ablation"} == ABLATIONS
    assert _finite(run["baseline"]["wall_seconds"]) and _finite(run["baseline"]["flops"])
    for method in methods:
        for key in NUMBERS:
            assert _finite(method[key]), (method["name"], key, method[key])
        for key in FIDELITY:
            assert _finite(method["fidelity"][key]), (method["name"], key, method["fidelity"])
        assert method["deterministic"] is not False, method["name"]
    assert {row["axis"] for row in run["matched"]} == {"speedup_wall", "flops_speedup"}
    assert any(row["target"].startswith("FLOPs ratio within 3 %") for row in run["targets"])
    compensation_rows = [row["target"] for row in run["targets"] if row["target"].startswith("compensation auto")]
    assert any(row.endswith("x") for row in compensation_rows) and any(
        row.endswith(", cache only") for row in compensation_rows
    )


def test_an_extra_run_measures_the_core_methods_at_its_own_steps_and_cfg(quick):
    out, results = quick
    base, extra = results["quick"]["runs"]
    assert (extra["steps"], extra["cfg"], extra["core"]) == (4, 2.0, True) and base["cfg"] == 1.0
    assert {m["family"] for m in extra["methods"]} == CORE
    # the extra run plans SODA and the peers at its own targets (2x) only, the setting's run at 1.5x and 2x
    planned = {
        run["steps"]: {m["params"]["target"] for m in run["methods"] if "target" in m["params"]}
        for run in (base, extra)
    }
    assert planned == {6: {1.5, 2.0}, 4: {2.0}}
    assert all(m["params"].get("compensation") == "auto" for m in extra["methods"] if m["family"] == CORE_COMP)
    compensated_cache_only = [m for m in extra["methods"] if m["family"] == COMP_CACHE_ONLY]
    assert compensated_cache_only and all(
        m["params"]["compensation"] == "auto" and m["params"]["pruning"] is False and m["modules"]["partial"] == 0
        for m in compensated_cache_only
    )
    # every method that skipped work has a finite PSNR (EasyCache may skip none of 4 steps: identical, no PSNR)
    assert all(_finite(m["fidelity"]["psnr"]) for m in extra["methods"] if m.get("full_steps", 0) < extra["steps"])
    assert any(p.endswith("quick_4steps_cfg2_speedup_psnr.png") for p in results["quick"]["plots"])
    assert "## 4 steps (euler/simple, cfg 2, seed 0" in (out / "quick.md").read_text()


def test_soda_margin_is_its_best_mode_over_the_best_rival(quick):
    _, results = quick
    for row in results["quick"]["runs"][0]["matched"]:
        own = [v["psnr"] for f, v in row["families"].items() if v and f in MODES]
        rivals = [v["psnr"] for f, v in row["families"].items() if v and f in RIVALS]
        assert (row["best_other"] is None) == (not rivals) and (row["soda_best"] is None) == (not own)
        if own and rivals:
            assert row["soda_best"]["psnr"] == max(own) and row["best_other"]["psnr"] == max(rivals)
            assert row["soda_margin_db"] == pytest.approx(max(own) - max(rivals))


def test_same_noise_repeats_are_bit_identical(quick):
    _, results = quick
    run = results["quick"]["runs"][0]
    assert all(m["deterministic"] is True for m in run["methods"])


def test_reference_setting_judges_every_repeat_with_the_classifier(quick):
    _, results = quick
    run = results["quick-reference"]["runs"][0]
    assert run["seeds"] == [0, 1] and run["profile_seed"] not in run["seeds"]
    for method in [run["baseline"], *run["methods"]]:
        assert method["samples"] == 20, method["name"]  # 2 repeats x 10 digits, each repeat its own noise
        judged = method["judged"]
        assert 0.0 <= judged["accuracy"] <= 1.0 and _finite(judged["fid"]) and judged["fid"] >= 0.0
    externals = [m for m in run["methods"] if m["kind"] == "external"]
    assert externals and all(m["deterministic"] is True for m in externals)  # FlopCounterMode run == repeat 0
    text = (quick[0] / "quick-reference.md").read_text()
    assert "| Accuracy | FID-style |" in text and "| full compute |" in text


def test_soda_counted_flops_match_the_plan(quick):
    _, results = quick
    for result in results.values():
        run = result["runs"][0]
        soda = [m for m in run["methods"] if m["kind"] == "soda"]
        assert soda
        for method in soda:
            assert method["cache_misses"] == 0, method["name"]
            assert method["runtime_flops_speedup"] == pytest.approx(method["predicted_flops_speedup"], rel=0.03)
            assert method["flops_speedup"] == pytest.approx(method["predicted_flops_speedup"], rel=0.03)
        # SODA's own count of full compute agrees with FlopCounterMode's, so both sides of the ratios are comparable
        assert run["baseline"]["runtime_full_flops"] == pytest.approx(run["baseline"]["flops"], rel=0.02)


def test_baselines_follow_their_schedules(quick):
    _, results = quick
    run = results["quick"]["runs"][0]
    by_name = {m["name"]: m for m in run["methods"]}
    assert by_name["FORA every 2"]["anchors"] == [0, 2, 4]
    assert by_name["FORA every 2"]["modules"]["partial"] == 0
    toca = by_name["ToCa every 2"]
    assert toca["anchors"] == [0, 1, 2, 3, 5] and toca["modules"]["partial"] > 0


def test_external_caches_skip_steps(quick):
    _, results = quick
    for result in results.values():
        for method in result["runs"][0]["methods"]:
            if method["kind"] == "external":
                assert method["full_steps"] < result["runs"][0]["steps"], method["name"]
                assert method["flops_speedup"] > 1.0


def test_peer_caches_run_calibrated_thresholds_and_count_their_flops(quick):
    _, results = quick
    for name, result in results.items():
        run = result["runs"][0]
        assert len(run["peer_calibration"]["mag_ratios"]) == run["steps"]
        for family in PEERS:
            rows = [m for m in run["methods"] if m["family"] == family]
            assert rows, (name, family)
            assert all(row["family"] in PEERS for row in rows)
            assert all(family in row["families"] for row in run["matched"])
            for m in rows:
                assert m["full_steps"] < run["steps"] and m["params"]["threshold"] > 0
                if family == "MagCache-like":  # a fixed schedule that costs nothing to decide: exactly predicted
                    assert m["flops_speedup"] == pytest.approx(m["predicted_flops_speedup"], rel=1e-6)
                    assert m["full_steps"] == m["params"]["calibration_steps_computed"]
                elif name == "quick":  # calibrated on the run's own noise: same decisions, plus their cost
                    assert m["full_steps"] == m["params"]["calibration_steps_computed"]
                    assert 0.9 * m["predicted_flops_speedup"] < m["flops_speedup"] < m["predicted_flops_speedup"]


def test_markdown_table_and_plots_exist(quick):
    out, results = quick
    for name, result in results.items():
        text = (out / f"{name}.md").read_text()
        assert "| Method | Full steps | Wall s (median) |" in text and "### At matched speed-up" in text
        for method in result["runs"][0]["methods"]:
            assert f"| {method['name']} |" in text
        for plot in result["plots"]:
            assert (out / plot).stat().st_size > 1000


def test_profiling_memory_benchmark_quick(comfy, tmp_path):
    """benchmarks/profiling_memory.py on a tiny Flux: the formula (with the served model's widest output) bounds the
    bytes the recorder held in both modes, and is exact for the sketched ring (d numbers per token, any width)."""
    from benchmarks.profiling_memory import main

    out = tmp_path / "profiling_memory.json"
    result = main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["runs"].keys() == {"sketched", "exact"}
    for run in result["runs"].values():
        assert run["formula_bounds_held"] and run["sketched_ring_exact"] and run["cache_error_defined"]
        assert 0 < run["held_bytes_peak"]["held"] <= run["formula_bytes"]["held"]
        assert run["held_bytes_peak"]["norms"] == run["formula_bytes"]["norms"]
    flux = {(r["mode"], r["steps"], r["rows"]): r for r in result["flux_1024"]}
    assert flux[("sketched", 50, 2)]["fits_4_gb"] and not flux[("exact", 20, 1)]["fits_4_gb"]
    formula_held = flux[("sketched", 20, 1)]["formula"]
    formula_held = sum(formula_held[k] for k in ("ring", "norms", "accumulators", "projections"))
    assert flux[("sketched", 20, 1)]["from_measured_held"] == pytest.approx(formula_held, rel=0.1)
