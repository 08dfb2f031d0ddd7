"""The benchmark's settings as its harness reads them: an extra run's targets cut each mode's list on its own."""

from __future__ import annotations

from benchmarks.settings import SETTINGS, Run


def test_a_run_cuts_each_target_list_to_its_own_and_can_keep_a_compensated_target_plain_soda_lacks() -> None:
    setting = SETTINGS["digits32"].for_run(Run(20, cfg=3.0, targets=(1.8, 2.0, 3.0, 4.0)))
    assert setting.targets == (2.0, 3.0, 4.0)  # 1.8 is no plain SODA target
    assert setting.compensated_targets == (1.8, 2.0, 3.0, 4.0)
    assert setting.cache_only_targets == (2.0, 3.0, 4.0)
    assert setting.compensated_cache_only_targets == (2.0, 3.0, 4.0)
    assert setting.peer_targets is None  # the peers follow plain SODA's targets


def test_a_run_without_targets_keeps_the_setting_and_a_run_with_none_in_common_keeps_the_first() -> None:
    reference = SETTINGS["reference"]
    assert reference.for_run(Run(20)) == reference
    lone = reference.for_run(Run(20, targets=(7.0,)))
    assert lone.targets == reference.targets[:1] and lone.cache_only_targets == reference.targets[:1]
    assert lone.compensated_targets == ()


def test_command_line_targets_replace_plain_sodas_and_cut_the_others() -> None:
    setting = SETTINGS["reference"].with_overrides(repeats=1, targets=(2.0, 3.5))
    assert setting.repeats == 1 and setting.targets == (2.0, 3.5)
    assert setting.compensated_targets == (2.0,) and setting.cache_only_targets == (2.0,)
    narrowed = setting.for_run(Run(20, targets=(2.0, 3.0)))
    assert narrowed.targets == (2.0,) and narrowed.compensated_targets == (2.0,)
