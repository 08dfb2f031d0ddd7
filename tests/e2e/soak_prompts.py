"""The soak test's prompts: what kinds it mixes, in which order, and their API-format graphs.

Every prompt runs on the bundled reference model::

    SODALoadReferenceModel -> [LoraLoaderModelOnly] -> [ModelSamplingFlux] -> [RescaleCFG] -> [SkipLayerGuidanceDiT]
        -> [SODAAccelerate | SODAProfileSensitivity -> SODAPlanSchedule -> SODAModelPatch] -> [SkipLayerGuidanceDiT]
        -> KSampler
    SODAReferenceClassEncode (conditioning and latents, one per label) -> KSampler -> SaveLatent

A prompt has one sampler chain per entry of ``Spec.speedups`` (``None``: full compute, no SODA); two entries make
two differently patched models of one loaded model, sampled by two KSamplers in one prompt.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


REFERENCE_MODEL = "soda_reference_digits.safetensors"
STEPS = 8
LATENT_SIZE = 16
GUIDED_CFG = 2.0
ONE, TEN = "3", "0-9"  # labels: batch size 1 and 10
SLG_LAYERS = {"double_layers": "1", "single_layers": "1, 2"}  # the reference model has 2 double, 4 single blocks
LORA_NAME = "soda_soak_lora.safetensors"  # written by write_lora into the base directory's models/loras
LORA_TARGET, LORA_RANK = "diffusion_model.single_blocks.0.linear2", 4  # weight (128, 640) of the reference model
PROFILE_SEED = 0  # Profile Sensitivity's own seed: fixed, so ComfyUI may reuse one profile across prompts
TOO_LITTLE_MB = 16.0  # memory_limit_mb below what a profiling run needs: it must refuse to start (a failed run)


@dataclass(frozen=True)
class Spec:
    """One kind of soak prompt (its seed is given when it is built)."""

    speedups: tuple[float | None, ...]  # one sampler chain each; None = full compute
    labels: str = ONE
    cfg: float = 1.0
    slg: str = ""  # "before" or "after" SODA Accelerate (with no SODA the two are the same)
    sampler: str = "euler"
    interrupt: bool = False  # POST /interrupt once its sampler reports progress
    path: str = "accelerate"  # or "patch": Profile Sensitivity -> Plan SODA Schedule -> SODA Model Patch
    lora: bool = False  # LoraLoaderModelOnly (LORA_NAME) on the loaded model
    shift: bool = False  # ModelSamplingFlux (another sigma grid: re-planned from the stored profile)
    rescale: bool = False  # RescaleCFG
    memory_limit_mb: float | None = None  # SODA Accelerate's memory bound (TOO_LITTLE_MB: the run must fail)
    bad: str = ""  # a key of BAD_INPUTS: the prompt must be refused when queued

    @property
    def soda(self) -> bool:
        return any(speedup is not None for speedup in self.speedups)

    @property
    def fails(self) -> bool:
        return self.memory_limit_mb == TOO_LITTLE_MB


KINDS: dict[str, Spec] = {
    "full": Spec((None,)),
    "full-b10-cfg": Spec((None,), TEN, cfg=GUIDED_CFG),
    "slg-full": Spec((None,), cfg=GUIDED_CFG, slg="before"),
    "soda1.5": Spec((1.5,)),
    "soda2-b10": Spec((2.0,), TEN),
    "soda3-b10-cfg": Spec((3.0,), TEN, cfg=GUIDED_CFG),
    "slg-before-soda2-b10-cfg": Spec((2.0,), TEN, cfg=GUIDED_CFG, slg="before"),
    "slg-after-soda2": Spec((2.0,), slg="after"),
    "two-models-1.5-3-b10": Spec((1.5, 3.0), TEN),
    "interrupt-soda2": Spec((2.0,), TEN, interrupt=True),
    "interrupt-full": Spec((None,), TEN, cfg=GUIDED_CFG, interrupt=True),
    # the only prompts with this sampler, so each is a profiling run, interrupted: it must store nothing
    "interrupt-profiling": Spec((2.0,), TEN, sampler="dpmpp_2m", interrupt=True),
    "patch2-b10": Spec((2.0,), TEN, path="patch"),
    "patch3-cfg-rescale": Spec((3.0,), cfg=GUIDED_CFG, path="patch", rescale=True),
    "lora-soda2-b10": Spec((2.0,), TEN, lora=True),
    "lora-full": Spec((None,), lora=True),
    "shift-soda2-b10": Spec((2.0,), TEN, shift=True),
    "rescale-soda2-cfg": Spec((2.0,), cfg=GUIDED_CFG, rescale=True),
    # a profiling run (its sampler is never profiled) whose memory bound is too low: it must fail before sampling
    "fail-profiling-memory": Spec((2.0,), TEN, sampler="heun", memory_limit_mb=TOO_LITTLE_MB),
    "bad-speedup": Spec((2.0,), bad="speedup"),
    "bad-mode": Spec((2.0,), bad="mode"),
    "bad-memory-nan": Spec((2.0,), bad="memory-nan"),
    "bad-plan-speedup": Spec((2.0,), path="patch", bad="plan-speedup"),
    "bad-profile-sampler": Spec((2.0,), path="patch", bad="profile-sampler"),
    "bad-labels": Spec((2.0,), bad="labels"),
}

# A bad input: (node class, input name, value). Each must be refused when queued, by an error naming both.
BAD_INPUTS: dict[str, tuple[str, str, Any]] = {
    "speedup": ("SODAAccelerate", "speedup", 0.5),
    "mode": ("SODAAccelerate", "mode", "bogus"),
    "memory-nan": ("SODAAccelerate", "memory_limit_mb", math.nan),
    "plan-speedup": ("SODAPlanSchedule", "target_speedup", math.inf),
    "profile-sampler": ("SODAProfileSensitivity", "sampler_name", "bogus"),
    "labels": ("SODAReferenceClassEncode", "labels", "ten"),
}

# Every kind once; each interrupt is followed by a completed prompt; the 5th and the last are of one kind, so the
# two resident-memory readings follow the same work.
SHORT_SEQUENCE = (
    "full", "soda2-b10", "slg-after-soda2", "two-models-1.5-3-b10", "soda1.5", "interrupt-soda2", "soda3-b10-cfg",
    "slg-before-soda2-b10-cfg", "interrupt-profiling", "full-b10-cfg", "bad-speedup", "patch2-b10", "slg-full",
    "interrupt-full", "lora-soda2-b10", "bad-mode", "shift-soda2-b10", "fail-profiling-memory", "rescale-soda2-cfg",
    "bad-memory-nan", "patch3-cfg-rescale", "bad-plan-speedup", "lora-full", "bad-profile-sampler", "bad-labels",
    "soda2-b10", "soda1.5",
)  # fmt: skip
# The short form re-runs alone the prompts right after an interrupt or a failed run and the first of these kinds.
SHORT_ALONE_KINDS = ("two-models-1.5-3-b10", "slg-before-soda2-b10-cfg", "slg-after-soda2", "patch3-cfg-rescale")
LONG_LENGTH = 100
INTERRUPT_WEIGHT, COMPLETED_WEIGHT = 1, 3  # about one prompt in five is interrupted, failed or refused


def long_sequence(length: int = LONG_LENGTH, seed: int = 11) -> tuple[str, ...]:
    """The short sequence, then random kinds (never two interrupts in a row), ending with the 5th prompt's kind."""
    rng = random.Random(seed)
    names = list(KINDS)
    weights = [INTERRUPT_WEIGHT if not completes(KINDS[name]) else COMPLETED_WEIGHT for name in names]
    sequence = list(SHORT_SEQUENCE)
    while len(sequence) < length - 1:
        name = rng.choices(names, weights)[0]
        if completes(KINDS[name]) or completes(KINDS[sequence[-1]]):
            sequence.append(name)
    return (*sequence, SHORT_SEQUENCE[4])


def completes(spec: Spec) -> bool:
    """Whether a prompt of ``spec`` runs to its end (not interrupted, failed or refused)."""
    return not (spec.interrupt or spec.fails or spec.bad)


def warm_up_specs(kinds: list[Spec]) -> list[Spec]:
    """One SODA Accelerate prompt per stored-profile setting the kinds use (``soda_core.store.ProfileKey``: model
    weights and their patches (LoRA), sampler, latent shape, CFG on or off, what is measured; not the speed-up, the
    batch size, the seed, SLG, RescaleCFG, or the sigma grid, which is re-planned): the runs that profile. Kinds that
    do not complete are left out: their profiling runs never store a profile."""
    settings = {(s.sampler, s.cfg, s.lora) for s in kinds if s.soda and s.path == "accelerate" and completes(s)}
    return [Spec((2.0,), ONE, cfg=cfg, sampler=sampler, lora=lora) for sampler, cfg, lora in sorted(settings)]


def write_lora(base_dir: Path) -> None:
    """A small seeded LoRA (rank LORA_RANK on LORA_TARGET) as ``models/loras/LORA_NAME`` of a base directory."""
    generator = torch.Generator().manual_seed(5)
    tensors = {
        f"{LORA_TARGET}.lora_up.weight": torch.randn(128, LORA_RANK, generator=generator) * 0.05,  # (out, r)
        f"{LORA_TARGET}.lora_down.weight": torch.randn(LORA_RANK, 640, generator=generator) * 0.05,  # (r, in)
        f"{LORA_TARGET}.alpha": torch.tensor(float(LORA_RANK)),
    }
    folder = base_dir / "models" / "loras"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / LORA_NAME)


class Graph:
    """An API-format prompt under construction: ``add`` returns the new node's id."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, class_type: str, **inputs: Any) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": class_type}}
        return node_id


def output(node_id: str, index: int = 0) -> list[Any]:
    """A link to output ``index`` of node ``node_id``."""
    return [node_id, index]


def _slg(graph: Graph, model: list[Any]) -> list[Any]:
    return output(
        graph.add(
            "SkipLayerGuidanceDiT",
            model=model,
            scale=3.0,
            start_percent=0.0,
            end_percent=1.0,
            rescaling_scale=0.0,
            **SLG_LAYERS,
        )
    )


def _base_model(graph: Graph, spec: Spec, loader: str) -> list[Any]:
    """The loaded model with the ComfyUI patches of ``spec`` that come before SODA."""
    model = output(loader)
    if spec.lora:
        model = output(graph.add("LoraLoaderModelOnly", model=model, lora_name=LORA_NAME, strength_model=1.0))
    if spec.shift:
        flux_shift = {"max_shift": 1.15, "base_shift": 0.5, "width": 256, "height": 256}
        model = output(graph.add("ModelSamplingFlux", model=model, **flux_shift))
    if spec.rescale:
        model = output(graph.add("RescaleCFG", model=model, multiplier=0.7))
    return _slg(graph, model) if spec.slg == "before" else model


def _soda(graph: Graph, spec: Spec, model: list[Any], speedup: float, sampling: dict[str, Any]) -> list[Any]:
    """``model`` accelerated by SODA Accelerate, or by Profile Sensitivity -> Plan SODA Schedule -> SODA Model Patch."""
    if spec.path == "accelerate":
        bound = {} if spec.memory_limit_mb is None else {"memory_limit_mb": spec.memory_limit_mb}
        return output(graph.add("SODAAccelerate", model=model, speedup=speedup, **bound))
    profile = graph.add(
        "SODAProfileSensitivity",
        model=model,
        **{**sampling, "seed": PROFILE_SEED},
        operations="cache and prune",
        granularity="module",
    )
    plan = graph.add(
        "SODAPlanSchedule", profile=output(profile), target_speedup=speedup, min_full_steps=1, pruning=True
    )
    return output(graph.add("SODAModelPatch", model=model, schedule=output(plan)))


def build_prompt(spec: Spec, seed: int, prefix: str) -> dict[str, Any]:
    """The API prompt of ``spec``: chain ``i`` saves its latent as ``<prefix>_<i>_00001_.latent`` under output/."""
    graph = Graph()
    loader = graph.add("SODALoadReferenceModel", model_name=REFERENCE_MODEL)
    encode = graph.add("SODAReferenceClassEncode", model=output(loader), labels=spec.labels, latent_size=LATENT_SIZE)
    negative = graph.add("SODAReferenceTextEncode", model=output(loader), text="")
    base = _base_model(graph, spec, loader)
    sampling = {
        "positive": output(encode, 0),
        "negative": output(negative),
        "latent_image": output(encode, 1),
        "seed": seed,
        "steps": STEPS,
        "cfg": spec.cfg,
        "sampler_name": spec.sampler,
        "scheduler": "simple",
        "denoise": 1.0,
    }
    for index, speedup in enumerate(spec.speedups):
        model = base if speedup is None else _soda(graph, spec, base, speedup, sampling)
        if spec.slg == "after" and speedup is not None:
            model = _slg(graph, model)
        sampler = graph.add("KSampler", model=model, **sampling)
        graph.add("SaveLatent", samples=output(sampler), filename_prefix=f"{prefix}_{index}")
    if spec.bad:
        class_type, name, value = BAD_INPUTS[spec.bad]
        (node,) = [node for node in graph.nodes.values() if node["class_type"] == class_type]
        node["inputs"][name] = value
    return graph.nodes


def sampler_chains(prompt: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(KSampler id, its SaveLatent id, whether SODA Accelerate patches its model) for each chain of a prompt."""
    chains = []
    for save_id, node in prompt.items():
        if node["class_type"] != "SaveLatent":
            continue
        sampler_id = node["inputs"]["samples"][0]
        upstream, soda = prompt[sampler_id]["inputs"]["model"][0], False
        while "model" in prompt[upstream]["inputs"]:
            soda = soda or prompt[upstream]["class_type"] == "SODAAccelerate"
            upstream = prompt[upstream]["inputs"]["model"][0]
        chains.append((sampler_id, save_id, soda))
    return chains
