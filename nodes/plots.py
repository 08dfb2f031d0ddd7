"""Pictures of a profile and of a schedule, as ComfyUI IMAGE tensors (1, H, W, 3) in [0, 1].

Matplotlib renders off-screen (Agg). Each function also returns the numbers it drew, so tests can check the
picture shows the object it claims to show.
"""

from __future__ import annotations

import io as _io
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..soda_core.profile import SensitivityProfile
from ..soda_core.schedule import Schedule


def _figure_to_image(fig: Any) -> torch.Tensor:
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    buffer.seek(0)
    rgb = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).unsqueeze(0)  # (1, H, W, 3)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sensitivity_heatmap(profile: SensitivityProfile, title: str) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Caching error E_c at reuse distance 1 and pruning error E_p (distance 1, half the image tokens recomputed),
    over timestep x layer, one panel per module and operation."""
    plt = _pyplot()
    panels: dict[str, np.ndarray] = {}
    for m, module in enumerate(profile.layout.modules):
        panels[f"cache {module}"] = profile.cache_error[:, :, m, 0].numpy()  # NaN at step 0: nothing to reuse
        if profile.has_prune_error:
            half = int(torch.argmin((profile.prune_ratios - 0.5).abs()))
            panels[f"prune {module}"] = profile.prune_error[:, :, m, 0, half].clamp(max=1e3).numpy()
    cols = profile.layout.num_modules
    rows = len(panels) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows + 0.6), squeeze=False, layout="constrained")
    measured = [p[np.isfinite(p)] for p in panels.values()]
    vmax = max((float(m.max()) for m in measured if m.size), default=0.0) or 1.0
    if not any(m.size for m in measured):  # e.g. a 1-step run: no step has an earlier one to reuse
        title += "\n(nothing measured: no step has an earlier step to reuse; grey = undefined)"
    cmap = plt.get_cmap("magma").with_extremes(bad="#d0d7de")  # undefined (first step) in grey, not as "no error"
    image = None
    for ax, (name, data) in zip(axes.T.flatten() if rows > 1 else axes.flatten(), panels.items(), strict=True):
        image = ax.imshow(np.ma.masked_invalid(data.T), aspect="auto", origin="lower", cmap=cmap, vmin=0.0, vmax=vmax)
        ratio = "" if name.startswith("cache") else " (50% recomputed)"
        ax.set_title(f"{name}{ratio}, reuse distance 1", fontsize=9)
        ax.set_xlabel("sampling step (noisy → clean)")
        ax.set_ylabel("layer (block)")
        for axis in (ax.xaxis, ax.yaxis):
            axis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # steps and layers: whole numbers
    fig.colorbar(image, ax=axes, label="1 − cos(reused, full)")
    fig.suptitle(title, fontsize=10)
    return _figure_to_image(fig), panels


def schedule_plot(schedule: Schedule, profile: SensitivityProfile | None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Which steps compute fully, which reuse, the share of tokens recomputed per reuse step, and the profile's
    step-to-step sensitivity behind it."""
    plt = _pyplot()
    steps = np.arange(schedule.steps)
    anchors = schedule.anchor_mask.numpy()
    recompute = schedule.recompute.mean(dim=(1, 2)).numpy()
    recompute = np.where(anchors, 1.0, recompute)
    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    ax.bar(steps[anchors], np.ones(anchors.sum()), color="#1f6feb", width=0.8, label="full compute (anchor)")
    reuse = ~anchors
    if reuse.any():
        ax.bar(steps[reuse], recompute[reuse], color="#f0883e", width=0.8, label="reuse: share recomputed")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(-0.6, schedule.steps - 0.4)
    ax.set_xlabel("sampling step")
    ax.set_ylabel("share of the model computed")
    drawn: dict[str, Any] = {"anchors": tuple(int(s) for s in steps[anchors]), "recompute": recompute}
    if schedule.compensated and reuse.any():  # reuse cells served by a forecast (soda_core.compensation)
        share = (schedule.compensation > 0).float().mean(dim=(1, 2)).numpy()
        ax.scatter(steps[reuse], share[reuse], marker="v", color="#1a7f37", zorder=3, label="reuse: share compensated")
        drawn["compensated"] = share
    measured = profile is not None and bool(profile.cache_error[:, :, :, 0].isfinite().any())
    if profile is not None and measured and profile.steps == schedule.steps:
        curve = profile.cache_error[:, :, :, 0].nan_to_num(0).sum(dim=(1, 2)).numpy()
        twin = ax.twinx()
        twin.plot(steps, curve, color="#6e7781", lw=1.5, label="sensitivity (Σ E_c, distance 1)")
        twin.set_ylabel("sensitivity")
        drawn["sensitivity"] = curve
    ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    ax.set_title(
        f"SODA schedule: {len(schedule.anchors)}/{schedule.steps} full steps, "
        f"predicted {schedule.predicted_flops_ratio:.2f}x transformer FLOPs",
        fontsize=10,
    )
    return _figure_to_image(fig), drawn
