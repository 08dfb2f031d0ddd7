"""SODA Accelerate: one node between the model loader and any sampler (MODEL in, MODEL out).

The first run of a setting is its profiling run (full compute, so its image is the full-compute image); the profile
is stored under ``models/soda_profiles/<profile_folder>/`` by what it depends on (``soda_core.store``) and every
later run of that setting is accelerated (``soda_core.auto``). The three explicit nodes share the same core.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import folder_paths
import torch
from comfy_api.latest import io

from ..soda_core.auto import AutoConfig, AutoPolicy
from ..soda_core.layout import Granularity
from ..soda_core.profiler import ProfileConfig
from ..soda_core.store import ProfileStore
from ..soda_core.validation import check_filename_prefix
from .inputs import ADVANCED, SodaNode, checked, known, memory_limit_input
from .patching import SodaHook, comfy_version, install, prepare
from .profile_files import SODA_PROFILES
from .sockets import CATEGORY, OPERATIONS, compensation_input, speedup_in_input
from .text_lines import report_text


logger = logging.getLogger(__name__)

WHERE = "SODA Accelerate"
SAMPLED_TENSORS = 256  # weights whose values enter a model's identity (all of them enter by name, shape, dtype)
SAMPLED_VALUES = 64


def _sample(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().reshape(-1)
    index = torch.linspace(0, flat.numel() - 1, min(SAMPLED_VALUES, flat.numel())).long().to(flat.device)
    return flat[index].float().cpu().numpy().tobytes()


def model_identity(model: Any) -> str:
    """A digest of the diffusion model's weights and of the weight patches applied to them (LoRAs...): every
    tensor's name, shape and dtype, and sampled values of up to ``SAMPLED_TENSORS`` of them and of every patch.
    Two models that share it share their profiles.

    The weights are read unpatched: ComfyUI writes a loaded model's weight patches into the weights of every clone
    of it (a LoRA of the previous prompt stays in them until another clone loads) and keeps the originals in the
    ``backup`` the clones share, so the weights as they are would give one model another identity after each LoRA.
    """
    digest = hashlib.sha256()
    diffusion_model = model.get_model_object("diffusion_model")
    digest.update(f"{type(diffusion_model).__module__}.{type(diffusion_model).__qualname__}".encode())
    backup = getattr(model, "backup", None) or {}
    items = sorted(diffusion_model.state_dict().items())
    stride = max(1, len(items) // SAMPLED_TENSORS)
    for i, (name, tensor) in enumerate(items):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if i % stride == 0:
            original = backup.get(f"diffusion_model.{name}")
            digest.update(_sample(tensor if original is None else original.weight))
    for key in sorted(model.patches):
        for patch in model.patches[key]:
            digest.update(f"{key}:{patch[0]}:{patch[2] if len(patch) > 2 else ''}".encode())
            for value in _tensors(patch[1]):
                digest.update(_sample(value))
    return digest.hexdigest()


def _tensors(value: Any) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def profile_root(folder: str) -> Path:
    return Path(folder_paths.models_dir) / SODA_PROFILES / folder


class SODAAccelerate(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODAAccelerate",
            display_name="SODA Accelerate",
            category=CATEGORY,
            description=(
                "Put it between the model loader and any sampler. The first run with a new setting (model, LoRAs, "
                "sampler, steps, size, CFG) computes every step fully, so its image is the full-compute image, and "
                "measures the profile SODA plans from; every later run with that setting samples faster. Profiles "
                "are kept in models/soda_profiles, not per prompt or seed."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to accelerate (any DiT ComfyUI runs)."),
                io.Float.Input(
                    "speedup",
                    default=2.0,
                    min=1.0,
                    max=10.0,
                    step=0.05,
                    tooltip="How much less transformer work the accelerated runs do (2.0 = half). Higher is faster "
                    "and drifts further from full compute; 1.5-3 is the useful range.",
                ),
                io.Combo.Input(
                    "mode",
                    options=list(OPERATIONS),
                    default="cache and prune",
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) cache and prune: reuse modules and recompute their most sensitive tokens "
                    "(SODA). cache only: reuse whole modules between the full steps.",
                ),
                compensation_input(),
                speedup_in_input(),
                memory_limit_input("the profiling run"),
                io.String.Input(
                    "profile_folder",
                    default="auto",
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Folder under models/soda_profiles where this node keeps its profiles.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The model with SODA acceleration (the input model is not changed).")],
        )

    @classmethod
    def check(cls, values: dict[str, Any]) -> None:
        if known(values, "profile_folder"):
            check_filename_prefix(WHERE, values["profile_folder"], "models/soda_profiles", "profile_folder")

    @classmethod
    @checked
    def execute(
        cls,
        model: Any,
        speedup: float,
        mode: str = "cache and prune",
        memory_limit_mb: float = 4096.0,
        profile_folder: str = "auto",
        compensation: str = "none",
        speedup_in: str = "flops",
    ) -> io.NodeOutput:
        served = prepare(model, Granularity.MODULE)
        pruning = OPERATIONS[mode] and served.granularity is Granularity.MODULE
        profile = ProfileConfig(measure_pruning=pruning, memory_limit_mb=memory_limit_mb)
        meta = {
            "model_family": served.family.name,
            "model_class": type(model.get_model_object("diffusion_model")).__name__,
            "granularity": served.granularity.value,
            "comfyui_version": comfy_version(),
        }
        store = ProfileStore(profile_root(profile_folder))
        policy = AutoPolicy(
            served.layout,
            model_identity(model),
            store,
            AutoConfig(speedup, pruning, profile, compensation, speedup_in),
            meta,
        )
        patched = model.clone()
        install(patched, SodaHook(served, policy))
        stored = len(list(store.root.glob(f"{policy.model_id[:16]}/*.safetensors")))
        lines = [
            f"SODA Accelerate: {speedup:g}x {'wall time' if speedup_in == 'wall' else 'transformer FLOPs'} after one "
            "profiling run per setting"
            + (f"; reuse steps compensated ({compensation})" if compensation != "none" else ""),
            f"{stored} profile(s) of this model stored in {os.path.join('models', SODA_PROFILES, profile_folder)}",
            *served.family.notes,
        ]
        return io.NodeOutput(patched, ui={"text": [report_text(lines)]})


NODES: list[type[io.ComfyNode]] = [SODAAccelerate]
