"""Every DiT family SODA serves, on the running ComfyUI: tiny models from ComfyUI's own classes, sampled through
``comfy.sample.sample``.

Per family: profiling is a full-compute run (bit-exact with the unpatched model) and its profile has the family's
layout; the behavioural check keeps every block on its module program (no fallback, partial recompute intact); an
all-full plan is bit-exact; a 2x plan is finite, spends the FLOPs it promised (counted by the runtime and, in full,
by FlopCounterMode) and stays close to full compute; batch 2 with CFG works; a LoRA-style weight patch still acts.
A family served at block granularity (``TinyFamily.reduced``: no record, or no module program) keeps its blocks at
that granularity and runs without the pruning variant and the LoRA test.
"""

from __future__ import annotations

import logging

import pytest
import tiny_families as tiny
import torch
from torch.utils.flop_counter import FlopCounterMode


pytestmark = pytest.mark.integration

STEPS = 6


def _ids(family: tiny.TinyFamily) -> str:
    return family.name


@pytest.fixture(scope="module", params=tiny.FAMILIES, ids=_ids)
def family(request, comfy):
    if not request.param.available():
        pytest.skip(f"this ComfyUI has no {request.param.requires or request.param.model_class}")
    return request.param


@pytest.fixture(scope="module")
def model(family, tmp_path_factory):
    return tiny.build(family, folder=tmp_path_factory.mktemp(family.name))


@pytest.fixture(scope="module")
def profiled(family, model):
    from comfyui_soda.nodes.profiling import SamplingSettings, profile_model
    from comfyui_soda.soda_core.adapters.check import forget_verdicts
    from comfyui_soda.soda_core.profiler import ProfileConfig

    forget_verdicts()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("comfyui_soda").addHandler(handler)
    try:
        settings = SamplingSettings(seed=0, steps=STEPS, cfg=family.cfg, sampler_name="euler", scheduler="simple")
        latent = {"samples": torch.zeros(1, *family.latent)}
        profile, out = profile_model(
            model,
            tiny.conditioning(family, 1),
            tiny.conditioning(family, 2),
            latent,
            settings,
            ProfileConfig(max_distance=3),
        )
    finally:
        logging.getLogger("comfyui_soda").removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    return profile, out["samples"], warnings


def _plan(profile, target, **kw):
    from comfyui_soda.soda_core.api import plan_schedule
    from comfyui_soda.soda_core.planner import PlanConfig

    return plan_schedule(profile, PlanConfig(target=target, **kw), prune_attention=kw.pop("prune_attention", False))


def _patched(model, soda_plan):
    from comfyui_soda.nodes.soda import SODAModelPatch

    return SODAModelPatch.execute(model, soda_plan).result[0]


def _report(model):
    return model.model_options["transformer_options"]["soda"].reports[-1]


def test_profiling_is_full_compute_and_has_the_family_layout(family, model, profiled):
    from comfyui_soda.soda_core.adapters import serve

    profile, latent, warnings = profiled
    assert torch.equal(latent, tiny.sample(model, family, steps=STEPS))
    assert profile.layout.modules == family.modules
    kinds = tuple(dict.fromkeys(b.kind for b in profile.layout.blocks))
    assert kinds == family.kinds
    assert profile.cache_error[1:, :, :, 0][:, profile.flops.full > 0].isfinite().all()
    notes = serve(model.get_model_object("diffusion_model")).family.notes  # what the family says it loses
    if family.falls_back():
        assert warnings and all("Serving it at block granularity" in w for w in warnings if w not in notes), warnings
    else:
        assert not [w for w in warnings if w not in notes], warnings  # every block class kept its module program


def test_behavioural_check_keeps_the_module_programs(family, model, profiled):
    from comfyui_soda.soda_core.adapters import serve
    from comfyui_soda.soda_core.adapters.check import known_verdict

    served = serve(model.get_model_object("diffusion_model"))
    for layer in served.layers:
        verdict = known_verdict(layer, served.granularity)
        assert verdict is not None and verdict.program is not None, (layer.ref, verdict)
        if family.falls_back():
            assert verdict.program.modules == ("block",) and verdict.reason, (layer.ref, verdict)
            continue
        assert not verdict.reason and not verdict.no_partial, (layer.ref, verdict)
        assert (verdict.program.modules == ("block",)) == (family.modules == ("block",)), (layer.ref, verdict)


def test_full_compute_plan_is_bit_exact(family, model, profiled):
    profile, latent, _ = profiled
    assert torch.equal(tiny.sample(_patched(model, _plan(profile, 1.0)), family, steps=STEPS), latent)


@pytest.mark.parametrize("pruning", [False, True])
def test_2x_plan_spends_the_promised_flops_and_stays_close(family, model, profiled, pruning):
    if pruning and family.reduced:
        pytest.skip(f"{family.name} is served at block granularity: no token pruning")
    profile, latent, _ = profiled
    soda_plan = _plan(profile, 2.0, pruning=pruning)
    patched = _patched(model, soda_plan)
    with FlopCounterMode(display=False) as counter:
        out = tiny.sample(patched, family, steps=STEPS)
    report = _report(patched)
    assert report.cache_misses == 0
    assert report.flops_ratio == pytest.approx(soda_plan.schedule.predicted_flops_ratio, rel=0.03)
    assert report.flops == pytest.approx(counter.get_total_flops(), rel=0.03)
    assert torch.isfinite(out).all() and not torch.equal(out, latent)
    assert float((out - latent).norm() / latent.norm()) < 0.5


def test_batch_of_two_with_cfg(family, model, profiled):
    if not family.batches:
        pytest.skip(f"ComfyUI cannot sample {family.name} with more than one row")
    profile, _, _ = profiled
    patched = _patched(model, _plan(profile, 2.0))
    pair = tiny.sample(patched, family, steps=STEPS, cfg=3.0, batch=2)
    report = _report(patched)
    assert report.cache_misses == 0 and report.flops_ratio > 1.5
    assert torch.isfinite(pair).all() and not torch.equal(pair[0], pair[1])


def test_a_lora_style_weight_patch_still_acts(family, model, profiled):
    """A weight patch (as LoRA loaders add) on a block linear changes the image under SODA exactly as without."""
    if family.reduced:
        pytest.skip(f"{family.name} is served at block granularity: its blocks run their own forward")
    from comfyui_soda.soda_core.adapters import serve

    profile, _, _ = profiled
    diffusion_model = model.get_model_object("diffusion_model")
    served = tuple(f"{layer.path}." for layer in serve(diffusion_model).layers)
    name, weight = next(
        (n, p)
        for n, p in diffusion_model.named_parameters()
        if n.endswith(".weight") and p.dim() == 2 and n.startswith(served)
    )
    lora = model.clone()
    lora.add_patches({f"diffusion_model.{name}": (0.5 * torch.ones_like(weight),)}, strength_patch=1.0)
    expected = tiny.sample(lora, family, steps=STEPS)
    assert not torch.equal(expected, tiny.sample(model, family, steps=STEPS))
    assert torch.equal(tiny.sample(_patched(lora, _plan(profile, 1.0)), family, steps=STEPS), expected)


def test_the_readme_row_is_what_this_run_served(family, model, profiled):
    """The README's family table (scripts/family_table.py) says what the run served: the layout's modules, the
    modules whose partial recompute survived the behavioural check, and this ComfyUI's column."""
    from family_table import BLOCK, NO, README, YES, parse

    from comfyui_soda.nodes.patching import comfy_version
    from comfyui_soda.soda_core.adapters import serve
    from comfyui_soda.soda_core.adapters.check import known_verdict

    row = parse(README.read_text())[family.name].cells
    profile, _, _ = profiled
    served = serve(model.get_model_object("diffusion_model"))
    verdicts = [known_verdict(layer, served.granularity) for layer in served.layers]
    programs = [v.program for v in verdicts if v is not None and v.program is not None]
    modular = profile.layout.modules != ("block",)
    partial = [m for m in profile.layout.modules if any(m in p.partial for p in programs)] if modular else []
    expected = {
        "Module cache": ", ".join(profile.layout.modules) if modular else NO,
        "Token recompute": ", ".join(partial) or NO,
        "Block cache": YES,
        f"ComfyUI {comfy_version()}": BLOCK if family.falls_back() else YES,
    }
    if family.falls_back():  # the table shows the record; this version's column says the check served blocks
        expected = {k: v for k, v in expected.items() if k.startswith("ComfyUI") or k == "Block cache"}
    assert {k: row[k] for k in expected} == expected


def test_the_readme_says_where_a_model_class_is_missing(comfy):
    """A family whose class this ComfyUI lacks is '–' in its column (its tests were skipped here)."""
    from family_table import NO, README, parse

    from comfyui_soda.nodes.patching import comfy_version

    rows = parse(README.read_text())
    assert set(rows) == {f.name for f in tiny.FAMILIES}
    missing = {f.name for f in tiny.FAMILIES if not f.available()}
    assert {name for name, row in rows.items() if row.cells[f"ComfyUI {comfy_version()}"] == NO} == missing
