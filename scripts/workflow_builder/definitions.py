"""The workflows on the bundled reference model, one function each, and ``WORKFLOWS``, every shared workflow in the
order the template browser should offer them; scripts/build_workflows.py writes both formats of each into
example_workflows/ and scripts/render_thumbnails.py draws each one's thumbnail.

* ``soda_accelerate_quickstart``: the one-node path (SODA Accelerate), the first workflow to open;
* ``soda_quickstart``: SODA step by step (profile -> plan -> patch) with a full-compute comparison;
* ``soda_saved_profile``: a schedule planned from the profile the pack ships, no profiling.

The model families (Flux.1, Flux.2, SD3.5, Wan 2.2: those soda_core has a record for) are in families.py and
video_families.py. To add one: describe its group 1 as a ``Family`` (accelerate_graph.py) with the loaders, prompts,
latent and sampler settings of ComfyUI's own template for it (declare model downloads with ``Node(models=[...])``:
the editor offers them and the Note lists them), add its function to ``WORKFLOWS``, run scripts/build_workflows.py
and scripts/render_thumbnails.py, and commit the .json and .jpg files.
"""

from __future__ import annotations

from .accelerate_graph import SAVE_IMAGE_TITLE, Decode, Family, accelerate_workflow, how_it_works
from .families import flux2_dev, flux_dev, qwen_image, sd35_large
from .graph import Group, Node, Workflow
from .soda_graph import NOTE_POS, NOTE_SIZE, SAMPLING, SODA_OUTPUT_TITLE, ModelInputs, soda_workflow
from .video_families import hunyuan_video, wan22_t2v_14b


COLUMN_1_WIDTH = 380  # group 1 (model and prompt): wide enough for model file names
QUICKSTART_LABELS = " ".join(["0-9"] * 10)  # ten of each digit: a batch large enough for SODA to pay off on a CPU
REFERENCE_MODEL = "soda_reference_digits.safetensors"
SHIPPED_PROFILE = "soda_reference_digits_euler_simple_20.safetensors"  # profiles/ (scripts/make_reference_profile.py)
MODEL: tuple[str, str] = ("model", "MODEL")


def reference_inputs(labels_title: str = "Digits to draw") -> list[Node]:
    """Group 1 on the bundled digits model: the model, the digits to draw (conditioning and latents), a negative."""
    return [
        Node(
            "model",
            "SODALoadReferenceModel",
            (0, 0),
            widgets={"model_name": REFERENCE_MODEL},
            size=(COLUMN_1_WIDTH, 58),
        ),
        Node(
            "positive",
            "SODAReferenceClassEncode",
            (0, 130),
            title=labels_title,
            links={"model": MODEL},
            widgets={"labels": QUICKSTART_LABELS},
            size=(COLUMN_1_WIDTH, 160),
        ),
        Node(
            "negative",
            "SODAReferenceTextEncode",
            (0, 350),
            title="Negative prompt",
            links={"model": MODEL},
            widgets={"text": ""},
            size=(COLUMN_1_WIDTH, 120),
        ),
    ]


PREVIEW_DECODE = Decode("SODALatentToImage", {"model": MODEL}, {"upscale": 4, "grid_columns": 10})

ACCELERATE_QUICKSTART_DESCRIPTION = (
    "Start here: one node (SODA Accelerate) makes sampling faster; bundled model, any CPU."
)
ACCELERATE_QUICKSTART_NOTE = """What this graph does
1. Model and prompt. The small reference model that ships with the pack (a Flux-shaped transformer trained on \
handwritten digits) and the digits to draw: "0-9" asks for one of each; here ten of each, a batch of 100 16x16 \
latents. No CLIP, T5 or VAE is needed.
2. SODA Accelerate, between the model and the sampler: the only SODA node. Put it after the model loader (and \
any LoRA) in your own workflows, in front of any sampler.
3. An ordinary KSampler (20 steps euler/simple, cfg 1.0).
4. The digits are tiled into one picture and saved.

Queue it twice. The first run profiles: it is the full-compute result. Then change the digits or the seed and queue \
again: that run is accelerated.

{how}"""


def accelerate_quickstart() -> Workflow:
    family = Family(
        reference_inputs(),
        MODEL,
        positive=("positive", "conditioning"),
        negative=("negative", "CONDITIONING"),
        latent=("positive", "latent"),
        decode=PREVIEW_DECODE,
    )
    note = ACCELERATE_QUICKSTART_NOTE.format(how=how_it_works(family.speedup))
    return accelerate_workflow(
        "soda_accelerate_quickstart", ACCELERATE_QUICKSTART_DESCRIPTION, note, family, SAVE_IMAGE_TITLE
    )


QUICKSTART_DESCRIPTION = (
    "SODA step by step on the bundled digits model: profile, plan, patch, compare with full compute."
)
QUICKSTART_NOTE = """\
What this graph does
1. Model and prompt. Loads the small reference model that ships with the pack: a Flux-shaped transformer trained \
on handwritten digits. "Digits to draw" asks for one image per class number ("0-9" gives ten digits; here ten \
of each, a batch of 100) and makes the matching batch of empty 16x16 latents; the decode nodes tile the batch into \
one picture. No CLIP, T5 or VAE is needed.
2. SODA: profile -> plan -> patch. "Profile Sensitivity" samples once at full compute and measures, for every \
step and every attention and MLP module, how much the result would change if that module's output were reused from \
an earlier step. "Plan SODA Schedule" turns that profile into a schedule for the speed-up you ask for \
(target_speedup 2.0 = half the transformer work). "SODA Model Patch" returns a copy of the model that follows the \
schedule. The sensitivity heatmap and the plan are saved as images; the text box shows the plan's summary.
3. Sample. Two ordinary KSamplers with identical settings and the same seed: "Full compute KSampler" on the \
original model, "SODA KSampler" on the patched one.
4. Compare. PSNR and SSIM of the SODA digits against the full-compute digits (higher is closer; identical images \
give PSNR inf).

How to use it
Queue it once. Profiling runs first; it samples once and measures every module at every step, so it takes a few \
times longer than a plain sampling run. As long as the model, prompt and sampler settings stay the same, ComfyUI keeps the profile, so you can change target_speedup and queue again to try other \
speeds: only the SODA branch runs again.
Keep the sampler settings (steps, sampler, scheduler, cfg) of Profile Sensitivity and the two KSamplers \
identical: a profile describes the steps it was measured on.

This is SODA step by step, for control over each stage. For the one-node path open \
"soda_accelerate_quickstart" (this model) or a family template such as "soda_flux_dev" (comfyui-soda in the \
template browser). Profile once per model, image size and sampler setting; save the profile with "Save SODA \
Profile" to skip profiling next time ("soda_saved_profile" plans from a saved one).
"""


def quickstart() -> Workflow:
    inputs = ModelInputs(
        reference_inputs(),
        MODEL,
        positive=("positive", "conditioning"),
        negative=("negative", "CONDITIONING"),
        latent=("positive", "latent"),
        decoder="SODALatentToImage",
        decoder_links={"model": MODEL},
        decoder_widgets={"upscale": 4, "grid_columns": 10},
    )
    return soda_workflow(
        "soda_quickstart", QUICKSTART_DESCRIPTION, QUICKSTART_NOTE, inputs, thumbnail_from=SODA_OUTPUT_TITLE
    )


SAVED_PROFILE_DESCRIPTION = (
    "Plan from a saved profile, no profiling: the profile shipped for the bundled digits model."
)
SAVED_PROFILE_NOTE = """\
What this graph does
1. Model and prompt: the bundled digits model and ten of each digit (as in soda_quickstart).
2. SODA from a saved profile. "Load SODA Profile" reads a profile from models/soda_profiles (or the ones the pack \
ships: this one was measured on this model, 20 steps euler/simple, cfg 1.0, 100 digits); "Plan SODA Schedule" \
turns it into a schedule for target_speedup (2.0 = half the transformer work) and shows its summary; "SODA Model \
Patch" returns a copy of the model that follows it.
3. Sample with an ordinary KSampler on the patched model, decode and save.

Nothing is profiled: the run is accelerated from the first queue. A profile fits the model it was measured on \
(another block layout is refused with a message); other steps, schedulers or denoise values are re-planned from \
it by sigma. Save your own profiles with "Save SODA Profile" after "Profile Sensitivity" (soda_quickstart); \
SODA Accelerate keeps its profiles in models/soda_profiles/auto/, which this node lists too.
"""


def saved_profile() -> Workflow:
    soda, sample = 440, 820
    nodes = [
        *reference_inputs(),
        Node(
            "load_profile",
            "SODALoadProfile",
            (soda, None),
            widgets={"profile_name": SHIPPED_PROFILE},
            size=(380, None),
        ),
        Node(
            "plan",
            "SODAPlanSchedule",
            (soda, None),
            title="Plan SODA Schedule",
            links={"profile": ("load_profile", "profile")},
            widgets={"target_speedup": 2.0, "min_full_steps": 1, "pruning": True},
            size=(380, 266),
        ),
        Node("patch", "SODAModelPatch", (soda, None), links={"model": MODEL, "schedule": ("plan", "schedule")}),
        Node(
            "summary",
            "PreviewAny",
            (soda, None),
            title="Plan summary",
            links={"source": ("plan", "summary")},
            size=(380, 126),  # its text preview is a frontend widget: /object_info does not size it
        ),
        Node(
            "save_plan",
            "SaveImage",
            (soda, None),
            title="Save schedule plot",
            links={"images": ("plan", "plan")},
            widgets={"filename_prefix": "soda_saved_profile/plan"},
            size=(380, 300),
        ),
        Node(
            "sampler",
            "KSampler",
            (sample, None),
            links={
                "model": ("patch", "MODEL"),
                "positive": ("positive", "conditioning"),
                "negative": ("negative", "CONDITIONING"),
                "latent_image": ("positive", "latent"),
            },
            widgets=dict(SAMPLING),
        ),
        Node(
            "decode",
            PREVIEW_DECODE.type,
            (sample, None),
            links={"samples": ("sampler", "LATENT"), **PREVIEW_DECODE.links},
            widgets=dict(PREVIEW_DECODE.widgets),
            size=(320, 102),
        ),
        Node(
            "save",
            "SaveImage",
            (sample, None),
            title=SAVE_IMAGE_TITLE,
            links={"images": ("decode", "IMAGE")},
            widgets={"filename_prefix": "soda_saved_profile/image"},
            size=(340, 388),
        ),
    ]
    groups = [
        Group("1. Model and prompt", ["model", "positive", "negative"]),
        Group("2. SODA: saved profile → plan → patch", ["load_profile", "plan", "patch", "summary", "save_plan"]),
        Group("3. Sample", ["sampler", "decode", "save"]),
    ]
    note = f"{SAVED_PROFILE_DESCRIPTION}\n\n{SAVED_PROFILE_NOTE}"
    return Workflow(
        "soda_saved_profile", nodes, groups, note, NOTE_POS, NOTE_SIZE, SAVED_PROFILE_DESCRIPTION, SAVE_IMAGE_TITLE
    )


WORKFLOWS = (
    accelerate_quickstart,
    quickstart,
    saved_profile,
    flux_dev,
    flux2_dev,
    sd35_large,
    qwen_image,
    wan22_t2v_14b,
    hunyuan_video,
)
