"""The one-node path (SODA Accelerate) that the family workflows share, and :func:`accelerate_workflow`, which joins it
to one model family's description (:class:`Family`).

A family only describes its group 1 (loaders, prompts, empty latent) and how it samples: the settings of ComfyUI's
own template for it. The builder adds the rest: group 2, one SODA Accelerate per diffusion model; group 3, the
sampler (KSampler; SamplerCustomAdvanced on a scheduler node's sigmas when the family has one; a KSamplerAdvanced per
expert, over the expert's step range, for Wan 2.2's two experts); group 4, decode and save (an image, or a video).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .graph import Group, Node, Workflow
from .schema import BuildError
from .soda_graph import NOTE_POS, NOTE_SIZE, model_files_text


Socket = tuple[str, str]  # (node key, output name)

COLUMNS = {"model": 0, "soda": 440, "sample": 820, "save": 1200}  # x of each group's column
COLUMN_1_WIDTH = 380  # group 1: wide enough for model file names
DEFAULT_MEMORY_MB = 4096.0  # SODA Accelerate's memory_limit_mb default
ACCELERATED: Socket = ("accelerate", "MODEL")  # the accelerated model of a one-model family
SAVE_IMAGE_TITLE = "Save Image"  # the SaveImage's title (thumbnails name it)
GROUP_TITLES = ("1. Model and prompt", "2. SODA Accelerate", "3. Sample", "4. Decode and save")


@dataclass(frozen=True)
class Sampling:
    """The sampler settings (those of ComfyUI's template for the family)."""

    seed: int = 0
    steps: int = 20
    cfg: float = 1.0
    sampler_name: str = "euler"
    scheduler: str = "simple"
    denoise: float = 1.0


@dataclass(frozen=True)
class Expert:
    """One diffusion model of a chain of experts, behind its own SODA Accelerate: it samples from where the previous
    expert stopped up to ``end_at_step`` (10000: to the end)."""

    label: str  # e.g. "high noise"
    model: Socket
    end_at_step: int

    @property
    def key(self) -> str:
        return self.label.replace(" ", "_")


@dataclass(frozen=True)
class Sigmas:
    """A scheduler node that gives the run's SIGMAS (e.g. Flux2Scheduler): the family samples with
    SamplerCustomAdvanced (RandomNoise, KSamplerSelect, a guider) as its ComfyUI template does."""

    type: str
    widgets: dict[str, Any] = field(default_factory=dict)
    takes_model: bool = False  # BasicScheduler reads the (accelerated) model's sigmas


@dataclass(frozen=True)
class Decode:
    type: str  # node type that turns the sampled LATENT into IMAGE
    links: dict[str, Socket]
    widgets: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfilingShape:
    """What profiling one run of the real model holds (``soda_core.profiler_memory``'s formula): its layers and
    modules per layer, batch rows (2 with CFG), tokens per row, widest block linear, steps of one run."""

    layers: int
    modules: int
    rows: int
    tokens: int
    channels: int
    steps: int

    def megabytes(self) -> float:
        from comfy_env import register_pack

        register_pack()  # the repository as the package comfyui_soda (soda_core imports no ComfyUI)
        from comfyui_soda.soda_core.layout import BlockRef, ModelLayout
        from comfyui_soda.soda_core.profiler import ProfileConfig
        from comfyui_soda.soda_core.profiler_memory import MB, profiling_memory

        layout = ModelLayout(
            tuple(BlockRef("block", i) for i in range(self.layers)), tuple(map(str, range(self.modules)))
        )
        need = profiling_memory(layout, ProfileConfig(), self.rows, self.tokens, self.channels, 4, self.steps)
        return need.total / MB


@dataclass
class Family:
    """One family's group 1 and the sockets it feeds into the one-node graph."""

    nodes: list[Node]
    model: Socket | None  # the diffusion model; None when ``experts`` are given
    positive: Socket
    negative: Socket | None  # None: no negative prompt (a BasicGuider; KSampler families need one)
    latent: Socket
    decode: Decode
    sampling: Sampling = field(default_factory=Sampling)
    sigmas: Sigmas | None = None
    video_fps: float | None = None  # a video: CreateVideo at this frame rate, then SaveVideo; None: SaveImage
    profiling: ProfilingShape | None = None  # the real model's, to set memory_limit_mb where 4096 MB is too little
    speedup: float = 2.0
    experts: tuple[Expert, ...] = ()  # a chain of experts (Wan 2.2 14B), each with its own SODA Accelerate

    def chain(self) -> tuple[Expert, ...]:
        """The experts, or the one model as an unnamed expert that samples every step."""
        if self.experts:
            return self.experts
        if self.model is None:
            raise BuildError("a family needs a model socket (Family.model) or experts (Family.experts)")
        return (Expert("", self.model, 10000),)


def memory_limit(family: Family) -> float | None:
    """memory_limit_mb for the family's SODA Accelerate: None (the default) when profiling fits in it, else the need
    by the formula rounded up to the next GB."""
    if family.profiling is None:
        return None
    need = family.profiling.megabytes()
    return None if need <= DEFAULT_MEMORY_MB else float(1024 * math.ceil(need / 1024))


def accelerate_nodes(family: Family) -> list[Node]:
    """Group 2: a SODA Accelerate per diffusion model."""
    widgets: dict[str, Any] = {"speedup": family.speedup}
    limit = memory_limit(family)
    if limit is not None:
        widgets["memory_limit_mb"] = limit
    return [
        Node(
            f"accelerate_{expert.key}" if expert.label else ACCELERATED[0],
            "SODAAccelerate",
            (COLUMNS["soda"], None),
            title=f"SODA Accelerate ({expert.label})" if expert.label else None,
            links={"model": expert.model},
            widgets=dict(widgets),
        )
        for expert in family.chain()
    ]


def accelerated(family: Family, expert: Expert) -> Socket:
    return (f"accelerate_{expert.key}", "MODEL") if expert.label else ACCELERATED


def sampler_nodes(family: Family) -> tuple[list[Node], Socket]:
    """Group 3 and the sampled LATENT it gives."""
    if family.sigmas is not None:
        return custom_sampler_nodes(family, family.sigmas)
    if family.negative is None:
        raise BuildError("a KSampler family needs a negative prompt (Family.negative)")
    conditioning = {"positive": family.positive, "negative": family.negative}
    settings = family.sampling
    if not family.experts:
        widgets = {
            "seed": settings.seed,
            "steps": settings.steps,
            "cfg": settings.cfg,
            "sampler_name": settings.sampler_name,
            "scheduler": settings.scheduler,
            "denoise": settings.denoise,
        }
        links = {"model": ACCELERATED, **conditioning, "latent_image": family.latent}
        return [Node("sampler", "KSampler", (COLUMNS["sample"], None), links=links, widgets=widgets)], (
            "sampler",
            "LATENT",
        )
    nodes: list[Node] = []
    latent, start = family.latent, 0
    for index, expert in enumerate(family.experts):
        first, last = index == 0, index == len(family.experts) - 1  # noise added once, leftover noise passed on
        widgets = {
            "add_noise": "enable" if first else "disable",
            "noise_seed": settings.seed,
            "steps": settings.steps,
            "cfg": settings.cfg,
            "sampler_name": settings.sampler_name,
            "scheduler": settings.scheduler,
            "start_at_step": start,
            "end_at_step": expert.end_at_step,
            "return_with_leftover_noise": "disable" if last else "enable",
        }
        links = {"model": accelerated(family, expert), **conditioning, "latent_image": latent}
        key = f"sampler_{expert.key}"
        title = f"KSampler ({expert.label}, steps {start}-{min(expert.end_at_step, settings.steps)})"
        nodes.append(Node(key, "KSamplerAdvanced", (COLUMNS["sample"], None), title, widgets, links))
        latent, start = (key, "LATENT"), expert.end_at_step
    return nodes, latent


def custom_sampler_nodes(family: Family, scheduler: Sigmas) -> tuple[list[Node], Socket]:
    """RandomNoise, KSamplerSelect, the family's scheduler node, a guider and SamplerCustomAdvanced."""
    settings, x = family.sampling, COLUMNS["sample"]
    sigmas = Node("sigmas", scheduler.type, (x, None), widgets=dict(scheduler.widgets))
    if scheduler.takes_model:
        sigmas.links["model"] = ACCELERATED
    if family.negative is None:
        guider = Node(
            "guider", "BasicGuider", (x, None), links={"model": ACCELERATED, "conditioning": family.positive}
        )
    else:
        links = {"model": ACCELERATED, "positive": family.positive, "negative": family.negative}
        guider = Node("guider", "CFGGuider", (x, None), links=links, widgets={"cfg": settings.cfg})
    nodes = [
        Node("noise", "RandomNoise", (x, None), widgets={"noise_seed": settings.seed}),
        Node("sampler_select", "KSamplerSelect", (x, None), widgets={"sampler_name": settings.sampler_name}),
        sigmas,
        guider,
        Node(
            "sampler",
            "SamplerCustomAdvanced",
            (x, None),
            links={
                "noise": ("noise", "NOISE"),
                "guider": ("guider", "GUIDER"),
                "sampler": ("sampler_select", "SAMPLER"),
                "sigmas": ("sigmas", "SIGMAS"),
                "latent_image": family.latent,
            },
            size=(320, 326),  # room for the preview of the running sample
        ),
    ]
    return nodes, ("sampler", "output")


def save_nodes(name: str, family: Family, samples: Socket) -> list[Node]:
    """Group 4: decode, then SaveImage, or CreateVideo and SaveVideo."""
    x = COLUMNS["save"]
    decode = family.decode
    nodes = [
        Node(
            "decode",
            decode.type,
            (x, None),
            links={"samples": samples, **decode.links},
            widgets=dict(decode.widgets),
            size=(340, None),
        )
    ]
    if family.video_fps is None:
        nodes.append(
            Node(
                "save",
                "SaveImage",
                (x, None),
                title=SAVE_IMAGE_TITLE,
                links={"images": ("decode", "IMAGE")},
                widgets={"filename_prefix": f"{name}/image"},
                size=(340, 388),
            )
        )
        return nodes
    nodes.append(
        Node(
            "video",
            "CreateVideo",
            (x, None),
            links={"images": ("decode", "IMAGE")},
            widgets={"fps": family.video_fps},
            size=(340, None),
        )
    )
    nodes.append(
        Node(
            "save",
            "SaveVideo",
            (x, None),
            links={"video": ("video", "VIDEO")},
            widgets={"filename_prefix": f"{name}/video", "format": "auto", "codec": "auto"},
            size=(340, 388),
        )
    )
    return nodes


def accelerate_workflow(
    name: str, description: str, note: str, family: Family, thumbnail_from: str | None = None
) -> Workflow:
    """A one-node workflow: the family's group 1, then groups 2-4. The Note starts with the one-line description and
    the files to download; ``thumbnail_from`` names the SaveImage whose output is the thumbnail (None: the graph)."""
    soda = accelerate_nodes(family)
    sampling, samples = sampler_nodes(family)
    saving = save_nodes(name, family, samples)
    groups = [
        Group(title, [node.key for node in members])
        for title, members in zip(GROUP_TITLES, (family.nodes, soda, sampling, saving))
    ]
    limit = memory_limit(family)
    memory = ""
    if limit is not None and family.profiling is not None:
        memory = (
            f"Memory: profiling this model at this size holds about {family.profiling.megabytes() / 1024:.1f} GB "
            f"(SODA's formula), so memory_limit_mb is set to {limit:.0f}. A smaller size needs less."
        )
    full_note = "\n\n".join(part for part in (description, model_files_text(family.nodes), note, memory) if part)
    column_1 = [node if node.size else replace(node, size=(COLUMN_1_WIDTH, None)) for node in family.nodes]
    nodes = [*column_1, *soda, *sampling, *saving]
    return Workflow(name, nodes, groups, full_note, NOTE_POS, NOTE_SIZE, description, thumbnail_from)


HOW_IT_WORKS = """\
How SODA Accelerate works
The first run with a setting computes every step fully, so its result is exactly what the model gives without \
SODA, and meanwhile measures how much reusing each module's output from an earlier step would change the result. \
That profile is stored in models/soda_profiles/auto/. Every later run with the same setting, with any prompt and \
any seed, does {x}x less transformer work (speedup {x}: {fraction} of it). A setting is the model with its LoRAs, \
the sampler, scheduler, steps and denoise, the size and whether CFG is on. Other steps are re-planned from the \
stored profile; any other change is profiled once, on its first run.
The sampler shows what SODA did, under its widgets: "SODA: profiling this run at full compute; next runs {x}x" on \
the first run, "SODA: {x2}x FLOPs, measured ...x, ... of ... steps full" on the next ones.
speedup: higher is faster and drifts further from full compute; 1.5-3 is the useful range."""


def how_it_works(speedup: float = 2.0) -> str:
    """The Note's paragraph on what SODA Accelerate does, for the workflow's speedup."""
    fraction = "half" if speedup == 2.0 else f"1/{speedup:g}"
    return HOW_IT_WORKS.format(x=f"{speedup:g}", x2=f"{speedup:.2f}", fraction=fraction)
