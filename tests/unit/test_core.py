"""soda_core on its own: no ComfyUI import, data round trips, token bookkeeping, step lookup, resampling."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from comfyui_soda.soda_core.flops import FlopModel
from comfyui_soda.soda_core.layout import BlockRef, ModelLayout, check_layout
from comfyui_soda.soda_core.profile import SensitivityProfile
from comfyui_soda.soda_core.run_report import step_of_sigma
from comfyui_soda.soda_core.schedule import Schedule
from comfyui_soda.soda_core.tokens import TokenLayout, gather_tokens, recompute_positions, scatter_tokens


ROOT = Path(__file__).resolve().parents[2]
LAYOUT = ModelLayout((BlockRef("double_block", 0), BlockRef("single_block", 0)), ("attn", "mlp"))


def test_soda_core_never_imports_comfy():
    for path in (ROOT / "soda_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            assert not any(n == "comfy" or n.startswith(("comfy.", "comfy_", "folder_paths")) for n in names), path
    code = "import sys, comfyui_soda.soda_core.api, comfyui_soda.soda_core.adapters; print(sorted(m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths')))"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import comfy_env; comfy_env.register_pack(); {code}",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    assert out.strip() == "[]"


def _profile(steps: int = 6, k: int = 3, seed: int = 0) -> SensitivityProfile:
    g = torch.Generator().manual_seed(seed)
    cache = torch.rand(steps, 2, 2, k, generator=g)
    for t in range(steps):
        cache[t, :, :, t:] = float("nan")
    prune = cache.unsqueeze(-1) * torch.tensor([0.8, 0.5, 0.2])
    flops = FlopModel(
        torch.full((2, 2), 10.0, dtype=torch.float64),
        torch.full((2, 2), 1.0, dtype=torch.float64),
        torch.full((2, 2), 9.0, dtype=torch.float64),
        2.0,
        1.0,
    )
    return SensitivityProfile(
        LAYOUT,
        torch.linspace(1, 0, steps + 1, dtype=torch.float64),
        cache,
        prune,
        torch.tensor([0.25, 0.5, 0.75]),
        flops,
        {"steps": steps},
    )


def test_profile_file_round_trip(tmp_path):
    profile = _profile()
    profile.save(tmp_path / "p.safetensors")
    loaded = SensitivityProfile.load(tmp_path / "p.safetensors")
    assert loaded.layout == LAYOUT and loaded.meta == profile.meta
    assert torch.equal(loaded.cache_error.nan_to_num(-1), profile.cache_error.nan_to_num(-1))
    assert torch.equal(loaded.sigmas, profile.sigmas) and loaded.flops.base == 2.0


def test_profile_rejects_inconsistent_shapes():
    profile = _profile()
    with pytest.raises(ValueError, match="sigmas has shape"):
        SensitivityProfile(
            LAYOUT,
            torch.linspace(1, 0, 3),
            profile.cache_error,
            profile.prune_error,
            profile.prune_ratios,
            profile.flops,
        )


def test_resample_is_identity_on_the_same_grid_and_interpolates_otherwise():
    profile = _profile(steps=6)
    assert profile.resample(profile.sigmas.clone()) is profile
    finer = profile.resample(torch.linspace(1, 0, 13, dtype=torch.float64))
    assert finer.steps == 12 and finer.meta["resampled"] == {"from_steps": 6, "to_steps": 12}
    # new step 2 sits on profile step 1; two new steps back = one profiled step back
    torch.testing.assert_close(finer.cache_error[2, :, :, 1], profile.cache_error[1, :, :, 0])
    assert finer.cache_error[3:, :, :, 0].isfinite().all()
    # half a profiled step of distance: half the distance-1 error (linear towards 0 at distance 0)
    torch.testing.assert_close(finer.cache_error[2, :, :, 0], 0.5 * profile.cache_error[1, :, :, 0])


def test_schedule_json_round_trip_and_validation():
    schedule = Schedule.uniform(LAYOUT, torch.linspace(1, 0, 7), 3)
    assert schedule.anchors == (0, 3) and schedule.distance(5) == 2 and schedule.needs_cache_after(0)
    again = Schedule.from_json(schedule.to_json())
    assert again.anchors == schedule.anchors and torch.equal(again.recompute, schedule.recompute)
    with pytest.raises(ValueError, match="first step must be an anchor"):
        Schedule(LAYOUT, torch.linspace(1, 0, 7), (1, 3), schedule.recompute)


def test_step_of_sigma_maps_calls_between_sigmas_to_their_step():
    sigmas = [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [step_of_sigma(sigmas, s) for s in (1.0, 0.75, 0.5, 0.25)] == [0, 1, 2, 3]
    assert step_of_sigma(sigmas, 0.6) == 1  # a Heun/DPM-2 midpoint belongs to the step it refines
    assert step_of_sigma(sigmas, 0.75 * (1 + 1e-7)) == 1


def test_recompute_positions_keep_text_and_reference_and_top_image_tokens():
    tokens = TokenLayout(text=2, image=6, reference=1)
    scores = torch.tensor(
        [[0.0, 0.0, 5.0, 1.0, 4.0, 2.0, 3.0, 0.5, -9.0], [0.0, 0.0, 1.0, 5.0, 2.0, 4.0, 0.0, 3.0, 9.0]]
    )  # two samples, each with its own ranking
    assert recompute_positions(scores, tokens, 0.5).tolist() == [[0, 1, 2, 4, 6, 8], [0, 1, 3, 5, 7, 8]]
    assert recompute_positions(scores, tokens, 0.0).tolist() == [[0, 1, 8]] * 2
    assert recompute_positions(scores, tokens, 1.0).tolist() == [list(range(9))] * 2
    cache = torch.zeros(2, 9, 2)
    scatter_tokens(cache, torch.tensor([[2, 4], [3, 5]]), torch.ones(2, 2, 2))
    assert cache[:, :, 0].tolist() == [[0, 0, 1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1, 0, 0, 0]]
    assert torch.equal(gather_tokens(cache, torch.tensor([[2], [5]])), torch.ones(2, 1, 2))


def test_check_layout_names_both_layouts():
    other = ModelLayout((BlockRef("double_block", 0),), ("attn", "mlp"))
    with pytest.raises(ValueError, match=r"1 double_block, 1 single_block.*1 double_block; modules"):
        check_layout(LAYOUT, other, "profile")
