"""The SODA nodes: Profile Sensitivity -> Plan SODA Schedule (SODA Model Patch in model_patch.py; profile files)."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..soda_core.api import describe_plan, plan_schedule
from ..soda_core.layout import Granularity
from ..soda_core.planner import PlanConfig
from ..soda_core.profile import SensitivityProfile
from ..soda_core.profiler import ProfileConfig
from ..soda_core.tokens import TokenScore
from ..soda_core.validation import check_denoise, check_ratio_bounds
from .inputs import ADVANCED, SodaNode, checked, known, memory_limit_input
from .model_patch import SODAModelPatch
from .plots import schedule_plot, sensitivity_heatmap
from .profiling import SamplingSettings, profile_model
from .sockets import CATEGORY, OPERATIONS, SodaPlanSocket, SodaProfile, speedup_in_input
from .text_lines import report_text


class SODAProfileSensitivity(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODAProfileSensitivity",
            display_name="Profile Sensitivity (SODA)",
            category=CATEGORY,
            description=(
                "Stage 1 of SODA. Samples once at full compute, exactly like KSampler, and measures for every "
                "step, block and module how much the output changes when it is reused from the cache or when "
                "only part of its tokens is recomputed. Run it once per model and sampler setting; save the "
                "profile and reuse it."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The DiT to profile (Flux-architecture models are supported)."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning, as for KSampler."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning, as for KSampler."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise; its size sets the token count."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFFFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Noise seed of the first calibration run (later runs use seed+1, ...). Set the control "
                    "below to 'fixed': a profile is measured once and reused, and a new seed re-profiles.",
                ),
                io.Int.Input(
                    "steps",
                    default=20,
                    min=1,
                    max=10000,
                    tooltip="Sampling steps. Profile with the step count you will sample with; other "
                    "counts are served by mapping the profile onto their sigmas.",
                ),
                io.Float.Input(
                    "cfg",
                    default=1.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    round=0.01,
                    tooltip="Classifier-free guidance scale, as for KSampler.",
                ),
                io.Combo.Input(
                    "sampler_name",
                    options=comfy.samplers.KSampler.SAMPLERS,
                    default="euler",
                    tooltip="Sampler, as for KSampler.",
                ),
                io.Combo.Input(
                    "scheduler",
                    options=comfy.samplers.KSampler.SCHEDULERS,
                    default="simple",
                    tooltip="Scheduler, as for KSampler.",
                ),
                io.Float.Input(
                    "denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Denoise strength, as for KSampler."
                ),
                io.Combo.Input(
                    "operations",
                    options=list(OPERATIONS),
                    default="cache and prune",
                    tooltip="What to measure: caching errors only, or also token-pruning errors "
                    "(needed for partial recompute; costs no extra model calls).",
                ),
                io.Combo.Input(
                    "granularity",
                    options=[g.value for g in Granularity],
                    default="module",
                    tooltip="module: attention and MLP of each block separately (the paper). "
                    "block: whole blocks, coarser and without token pruning.",
                ),
                io.Int.Input(
                    "calibration_runs",
                    default=1,
                    min=1,
                    max=64,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Sampling runs to average over, with seeds seed, seed+1, ... "
                    "More runs give a steadier profile; each costs one full sampling run.",
                ),
                io.Int.Input(
                    "max_distance",
                    default=8,
                    min=1,
                    max=32,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Longest reuse distance measured (K). Schedules never reuse a "
                    "cache older than this. Memory grows linearly with it.",
                ),
                io.Combo.Input(
                    "token_score",
                    options=[s.value for s in TokenScore],
                    default="mean",
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) How tokens are ranked for recompute: mean of the module's "
                    "input features per token, or mean of their absolute values.",
                ),
                memory_limit_input("profiling"),
                io.Int.Input(
                    "sketch_dim",
                    default=64,
                    min=0,
                    max=4096,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Numbers kept per token of each module output while profiling (a fixed "
                    "seeded random projection). 0 keeps the outputs whole: exact, about 48x more memory at Flux width. "
                    "The error of the measured sensitivities shrinks like 1/sqrt(sketch_dim); 8 is the least.",
                ),
            ],
            outputs=[
                SodaProfile.Output(
                    display_name="profile",
                    tooltip="The sensitivity profile, for Plan SODA Schedule and Save SODA Profile.",
                ),
                io.Image.Output(display_name="heatmap", tooltip="Sensitivity over step x layer per module."),
                io.Latent.Output(
                    display_name="latent",
                    tooltip="The full-compute result of the (last) "
                    "calibration run: a reference to compare SODA's output with.",
                ),
            ],
        )

    @classmethod
    def check(cls, values) -> None:
        if known(values, "denoise"):
            check_denoise("Profile Sensitivity (SODA)", values["denoise"])
        if known(values, "sketch_dim") and 0 < values["sketch_dim"] < 8:
            raise ValueError(
                f"Profile Sensitivity (SODA): sketch_dim={values['sketch_dim']} is too few numbers per token; expected 0 "
                "(exact) or 8..4096. Fix: set sketch_dim to 0 or at least 8 (64 is the default)."
            )

    @classmethod
    @checked
    def execute(
        cls,
        model,
        positive,
        negative,
        latent_image,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        denoise,
        operations,
        granularity,
        calibration_runs=1,
        max_distance=8,
        token_score="mean",
        memory_limit_mb=4096.0,
        sketch_dim=64,
    ) -> io.NodeOutput:
        settings = SamplingSettings(seed, steps, cfg, sampler_name, scheduler, denoise, calibration_runs)
        config = ProfileConfig(
            max_distance=max_distance,
            measure_pruning=OPERATIONS[operations],
            score=TokenScore(token_score),
            memory_limit_mb=memory_limit_mb,
            sketch_dim=sketch_dim,
        )
        profile, latent = profile_model(
            model, positive, negative, latent_image, settings, config, Granularity(granularity)
        )
        title = f"SODA sensitivity: {profile.meta['model_class']}, {steps} steps {sampler_name}/{scheduler}"
        heatmap, _ = sensitivity_heatmap(profile, title)
        return io.NodeOutput(profile, heatmap, latent)


class SODAPlanSchedule(SodaNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SODAPlanSchedule",
            display_name="Plan SODA Schedule",
            category=CATEGORY,
            description=(
                "Stage 2 of SODA. Dynamic programming picks the full-compute steps that minimise the summed "
                "sensitivity error for the acceleration you ask for; on the reuse steps in between, the tokens "
                "whose reuse would cost most are recomputed when the profile says that is cheaper in error."
            ),
            inputs=[
                SodaProfile.Input("profile", tooltip="From Profile Sensitivity or Load SODA Profile."),
                io.Float.Input(
                    "target_speedup",
                    default=2.0,
                    min=1.0,
                    max=20.0,
                    step=0.05,
                    tooltip="Acceleration to reach (2.0 = half the transformer FLOPs, or half the wall time with "
                    "speedup_in wall). Higher "
                    "is faster and drifts further from full compute; 1.5-3 is the useful range.",
                ),
                io.Int.Input(
                    "min_full_steps",
                    default=1,
                    min=1,
                    max=10000,
                    tooltip="At least this many steps are computed fully (the first step always is).",
                ),
                io.Boolean.Input(
                    "pruning",
                    default=True,
                    tooltip="Recompute the most sensitive tokens on reuse steps (SODA's UAS). Off: "
                    "pure caching between the planned full steps.",
                ),
                io.Boolean.Input(
                    "prune_attention",
                    default=False,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Also recompute attention for selected queries (against all "
                    "keys). Off: attention is reused whole and only MLPs are partially "
                    "recomputed, as in ToCa.",
                ),
                io.Float.Input(
                    "lam",
                    default=1.0,
                    min=0.0,
                    max=100.0,
                    step=0.1,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) λ in r = clip(λ·E_c + β): how strongly the recompute share "
                    "follows the caching error. β is solved to meet the target.",
                ),
                io.Float.Input(
                    "ratio_min",
                    default=0.05,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Below this recompute share a module is reused whole (above 0, at most "
                    "ratio_max).",
                ),
                io.Float.Input(
                    "ratio_max",
                    default=0.9,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Largest share of image tokens recomputed on a reuse step.",
                ),
                io.Boolean.Input(
                    "joint_cost",
                    default=False,
                    optional=True,
                    **ADVANCED,
                    tooltip="(advanced) Let the step planner count the pruning error where pruning "
                    "beats caching (beyond the paper; see the benchmark).",
                ),
                speedup_in_input(),
            ],
            outputs=[
                SodaPlanSocket.Output(
                    display_name="schedule",
                    tooltip="For SODA Model Patch: the schedule, and the profile and settings to re-plan it for a "
                    "run with other steps, scheduler or denoise.",
                ),
                io.Image.Output(display_name="plan", tooltip="Full steps, reuse steps and recompute share."),
                io.String.Output(
                    display_name="summary",
                    tooltip="Predicted speedup (FLOPs, and wall time when planned for it), full steps, error.",
                ),
            ],
        )

    @classmethod
    def check(cls, values) -> None:
        where = "Plan SODA Schedule"
        if known(values, "ratio_min", "ratio_max"):
            check_ratio_bounds(where, values["ratio_min"], values["ratio_max"])
        profile = values.get("profile")
        if (
            isinstance(profile, SensitivityProfile)
            and known(values, "min_full_steps")
            and values["min_full_steps"] > profile.steps
        ):
            raise ValueError(
                f"{where}: min_full_steps={values['min_full_steps']} is more than the {profile.steps} steps of the "
                f"profile; expected 1..{profile.steps}. Fix: lower min_full_steps, or profile with more steps."
            )

    @classmethod
    @checked
    def execute(
        cls,
        profile,
        target_speedup,
        min_full_steps,
        pruning,
        prune_attention=False,
        lam=1.0,
        ratio_min=0.05,
        ratio_max=0.9,
        joint_cost=False,
        speedup_in="flops",
    ) -> io.NodeOutput:
        config = PlanConfig(
            speedup_in=speedup_in,
            target=target_speedup,
            min_full_steps=min_full_steps,
            pruning=pruning,
            lam=lam,
            ratio_min=ratio_min,
            ratio_max=ratio_max,
            joint_cost=joint_cost,
        )
        soda_plan = plan_schedule(profile, config, prune_attention)
        image, _ = schedule_plot(soda_plan.schedule, profile)
        summary = report_text(describe_plan(soda_plan).splitlines())  # one list line each: lines in the UI
        return io.NodeOutput(soda_plan, image, summary, ui={"text": [summary]})


NODES: list[type[io.ComfyNode]] = [SODAProfileSensitivity, SODAPlanSchedule, SODAModelPatch]
