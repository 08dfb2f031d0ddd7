"""Tiny models of every DiT family SODA serves, built from ComfyUI's own classes, and sampling them (one module
per group of families lists its ``FAMILIES``).

Each ``TinyFamily`` gives a ``comfy.supported_models`` class, a tiny ``unet_config`` for it, the latent it draws and
the conditioning entries its ``encode_adm`` / ``extra_conds`` read. Parameters are seeded (ComfyUI skips weight
init). Where ComfyUI's detection can rebuild the tiny model from its weights, it is saved as ``.safetensors`` and
loaded through ``comfy.sd.load_diffusion_model`` (what ComfyUI's UNETLoader node calls).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


Conditioning = list[list[Any]]


def randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class TinyFamily:
    name: str  # test id
    model_class: str  # in comfy.supported_models
    unet_config: dict[str, Any]
    latent: tuple[int, ...]  # one sample's latent shape
    context: int  # width of the text conditioning
    extras: Callable[[int, int], dict[str, Any]] = lambda seed, batch: {}  # conditioning entries besides the tensor
    detectable: bool = False  # ComfyUI's detection rebuilds it from its weights (UNETLoader path)
    modules: tuple[str, ...] = ("attn", "mlp")  # the layout's module axis
    kinds: tuple[str, ...] = ()  # block kinds of the layout, in order
    words: int = 6  # text tokens of the positive prompt
    weight_buffers: tuple[str, ...] = ()  # buffers that hold checkpoint weights (built empty, e.g. SD3's pos_embed)
    batches: bool = True  # ComfyUI itself samples it with more than one row (cond and uncond, or two samples)
    requires: str = ""  # "module:attribute" the running ComfyUI must have (a variant only newer versions build)
    tags: frozenset[str] = field(default_factory=frozenset)
    # ComfyUI versions whose block code the module program cannot serve (the behavioural check falls back to block
    # granularity with one warning per block class), e.g. Wan S2V on 0.3.75, whose blocks get no transformer_options
    block_granularity_on: frozenset[str] = field(default_factory=frozenset)
    cfg: float = 1.0  # CFG scale of the test runs (a model that batches cond and uncond itself needs > 1)
    reduced: bool = False  # served at block granularity: no pruning variant, no LoRA test (same code path)
    model_weights: Callable[[], dict[str, Any]] | None = None  # what get_model loads besides the diffusion model

    def available(self) -> bool:
        import comfy.supported_models

        if not hasattr(comfy.supported_models, self.model_class):
            return False
        if not self.requires:
            return True
        module, _, attribute = self.requires.partition(":")
        try:
            return hasattr(importlib.import_module(module), attribute)
        except ImportError:
            return False

    @property
    def title(self) -> str:
        """What users call the model (the README's family table)."""
        from .titles import TITLES

        return TITLES.get(self.name, self.name)

    def falls_back(self) -> bool:
        from comfyui_soda.nodes.patching import comfy_version

        return comfy_version() in self.block_granularity_on


def _families() -> tuple[TinyFamily, ...]:
    from . import dualstream, flux, mmdit, others, video

    return (*flux.FAMILIES, *mmdit.FAMILIES, *video.FAMILIES, *dualstream.FAMILIES, *others.FAMILIES)


def available() -> list[TinyFamily]:
    return [f for f in FAMILIES if f.available()]


FAMILIES = _families()


def build(family: TinyFamily, seed: int = 0, folder: Path | None = None) -> Any:
    """The tiny model as a ModelPatcher: built from ``unet_config`` with seeded weights; a detectable family is
    saved to ``folder`` and loaded back through ComfyUI's own loader."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd
    from safetensors.torch import save_file

    from comfyui_soda.nodes.reference_model import build_diffusion_model
    from comfyui_soda.soda_core.weights import seed_parameters

    model = (
        _with_weights(family)
        if family.model_weights
        else build_diffusion_model(family.model_class, family.unet_config)
    )
    seed_parameters(model.diffusion_model, seed)
    for name in family.weight_buffers:
        buffer = model.diffusion_model.get_buffer(name)
        buffer.copy_(0.1 * randn(seed + 1, *buffer.shape))
    if family.detectable and folder is not None:
        path = folder / f"{family.name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.diffusion_model.state_dict().items()}, str(path))
        patcher = comfy.sd.load_diffusion_model(str(path), model_options={"dtype": torch.float32})
        if type(patcher.model.diffusion_model) is not type(model.diffusion_model):
            raise AssertionError(f"{family.name}: ComfyUI detected {type(patcher.model.diffusion_model).__name__}")
        return patcher
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def _with_weights(family: TinyFamily) -> Any:
    """A model whose ``get_model`` loads weights of its own (Stable Audio's seconds embedders), in float32."""
    import comfy.supported_models

    assert family.model_weights is not None
    model_config = getattr(comfy.supported_models, family.model_class)(family.unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    return model_config.get_model(family.model_weights())


def conditioning(family: TinyFamily, seed: int, words: int | None = None, batch: int = 1) -> Conditioning:
    cond = randn(seed, 1, family.words if words is None else words, family.context)
    return [[cond, family.extras(seed + 1000, 1)]]


def sample(
    patcher: Any,
    family: TinyFamily,
    steps: int = 6,
    cfg: float | None = None,
    seed: int = 0,
    batch: int = 1,
    negative_words: int | None = None,
    sampler: str = "euler",
    scheduler: str = "simple",
) -> torch.Tensor:
    import comfy.sample

    latent = torch.zeros(batch, *family.latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    negative = conditioning(family, 2, words=negative_words)
    return comfy.sample.sample(
        patcher,
        noise,
        steps,
        family.cfg if cfg is None else cfg,
        sampler,
        scheduler,
        conditioning(family, 1),
        negative,
        latent,
        seed=seed,
        disable_pbar=True,
    )
