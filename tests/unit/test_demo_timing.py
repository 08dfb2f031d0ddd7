"""scripts/demo.py's timing arithmetic: median of the pair ratios, their spread, and the busy-machine warning."""

import pytest
from demo import BUSY_SPREAD, MIN_PAIRS, DemoError, Pair, busy_warning, pair_count, seed_input, summarize, with_seed


def _pairs(*times: tuple[float, float]) -> list[Pair]:
    return [Pair(i, "full then SODA", full, soda, 30.0, 0.99) for i, (full, soda) in enumerate(times)]


def test_median_of_ratios_not_ratio_of_medians() -> None:
    summary = summarize(_pairs((4.0, 2.0), (6.0, 2.0), (4.0, 4.0)))  # ratios 2, 3, 1
    assert summary["speedup"] == 2.0
    assert (summary["speedup_min"], summary["speedup_max"]) == (1.0, 3.0)
    assert summary["speedup_spread"] == pytest.approx(1.0)  # (3 - 1) / 2
    assert summary["busy_machine"] is True
    assert (summary["full_compute_seconds"], summary["soda_seconds"]) == (4.0, 2.0)


def test_steady_pairs_are_not_busy_and_give_no_warning() -> None:
    summary = summarize(_pairs((4.62, 2.44), (4.60, 2.45), (4.65, 2.43)))
    assert summary["speedup_spread"] < BUSY_SPREAD and summary["busy_machine"] is False
    assert busy_warning(summary, (0.5, 0.5, 0.5), 2) is None


def test_busy_warning_names_the_range_the_spread_and_the_load() -> None:
    summary = summarize(_pairs((4.0, 2.0), (4.0, 3.2), (4.0, 2.1)))
    warning = busy_warning(summary, (3.1, 2.0, 1.0), 2)
    assert warning is not None
    assert "1.25x to 2.00x" in warning and "busy" in warning and "load average 3.1 on 2 cores" in warning


def test_fewer_than_three_pairs_are_refused() -> None:
    assert pair_count(str(MIN_PAIRS)) == MIN_PAIRS
    with pytest.raises(Exception, match="at least 3 pairs"):
        pair_count("2")


def test_seed_input_is_required_and_varied_on_a_copy() -> None:
    workflow = {"5": {"class_type": "KSampler", "inputs": {"seed": 0, "model": ["1", 0]}}}
    assert seed_input(workflow, "5", "Full compute KSampler") == "seed"
    varied = with_seed(workflow, "5", "seed", 7)
    assert varied["5"]["inputs"]["seed"] == 7 and workflow["5"]["inputs"]["seed"] == 0
    linked = {"5": {"class_type": "KSampler", "inputs": {"seed": ["9", 0]}}}
    with pytest.raises(DemoError, match="no literal seed input"):
        seed_input(linked, "5", "Full compute KSampler")
