"""The token layouts SODA serves a family with put the prunable image tokens exactly where the model keeps them.

The tiny model's blocks are made identities (every submodule whose output is a module output, per the family's own
record, is zeroed), so each block's token rows are what the model's embedders made of the latent, the text and the
reference latents. Sampling one step again with other noise shows which rows hold image tokens; again with another
text and other reference latents, which rows hold conditioning. The layout of every block call SODA serves must mark
exactly the former as prunable image tokens and none of the latter (text and reference tokens are never pruned; a
stream whose reference tokens are mixed in among its image tokens has none prunable).
This holds for any token order (text first, image first, references before or after the image) and does not rely on
the behavioural check, which cannot see a wrong role in a fused single-stream block.
"""

from __future__ import annotations

import pytest
import tiny_families as tiny
import torch
from tiny_families import dualstream


pytestmark = pytest.mark.integration


@pytest.fixture(params=dualstream.FAMILIES, ids=lambda f: f.name)
def family(request, comfy):
    if not request.param.available():
        pytest.skip(f"this ComfyUI has no {request.param.requires or request.param.model_class}")
    return request.param


def _zero_outputs(served) -> None:
    """Zero every module output submodule of every served block (per its record): each block returns its input."""
    from comfyui_soda.soda_core.adapters.spec import Fused, Submodules

    for layer in served.layers:
        program = layer.spec.program
        if isinstance(program, Submodules):
            paths = [out.path for module in program.modules for out in module.outputs]
        elif isinstance(program, Fused):
            paths = [program.linear2]
        else:
            continue
        for path in paths:
            try:
                submodule = layer.block.get_submodule(path)
            except AttributeError:
                continue  # an optional output absent from this block
            for parameter in submodule.parameters():
                parameter.data.zero_()


def _layouts_of_one_step(model, family, cond_seed: int, noise_seed: int, monkeypatch):
    """[(stream tensors, their layouts)] of every served block call of one SODA step (full compute)."""
    import comfy.sample

    from comfyui_soda.nodes.patching import SodaHook, install, prepare
    from comfyui_soda.soda_core import runtime
    from comfyui_soda.soda_core.schedule import Schedule

    served = prepare(model)
    patched = model.clone()
    install(patched, SodaHook(served, lambda sigmas: Schedule.full_compute(served.layout, sigmas)))
    seen = []
    original = runtime.stream_layouts

    def recording(call, image, text):
        layouts = original(call, image, text)
        seen.append(({s: t.detach().clone() for s, t in call.inputs().items()}, layouts))
        return layouts

    monkeypatch.setattr(runtime, "stream_layouts", recording)
    latent = torch.zeros(1, *family.latent)
    cond = [[tiny.randn(cond_seed, 1, family.words, family.context), family.extras(cond_seed + 1000, 1)]]
    comfy.sample.sample(
        patched,
        comfy.sample.prepare_noise(latent, noise_seed),
        1,
        1.0,
        "euler",
        "simple",
        cond,
        cond,
        latent,
        seed=noise_seed,
        disable_pbar=True,
    )
    monkeypatch.setattr(runtime, "stream_layouts", original)
    return seen


def _changed(a: torch.Tensor, b: torch.Tensor) -> set[int]:
    """Token rows (of the first sample) that differ between two calls."""
    return set(torch.nonzero((a[0] - b[0]).abs().amax(-1) > 0).flatten().tolist())


def test_image_tokens_are_exactly_the_prunable_ones(family, tmp_path, monkeypatch):
    from comfyui_soda.nodes.patching import prepare

    model = tiny.build(family, folder=tmp_path)
    _zero_outputs(prepare(model))
    base = _layouts_of_one_step(model, family, 1, 0, monkeypatch)
    noise = _layouts_of_one_step(model, family, 1, 7, monkeypatch)
    conditioning = _layouts_of_one_step(model, family, 5, 0, monkeypatch)
    assert base and len(base) == len(noise) == len(conditioning)
    checked = mixed = 0
    for (streams, layouts), (noisy, _), (other, _) in zip(base, noise, conditioning, strict=True):
        for name, layout in layouts.items():
            image = set(range(layout.image_slice.start, layout.image_slice.stop))
            if image or not layout.reference:  # (a stream with references mixed in is never pruned)
                assert _changed(streams[name], noisy[name]) == image, (name, layout)
            assert not _changed(streams[name], other[name]) & image, (name, layout)
            checked += bool(image)
            mixed += bool(layout.reference and not image)
    assert checked or mixed  # some stream holds prunable image tokens, or references are mixed in among them
