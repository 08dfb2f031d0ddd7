"""PNG figures of a benchmark run: speed-up vs PSNR per method family, and the SODA schedules per target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .methods import FAMILIES


MARKERS = {
    "SODA": "o",
    "SODA + compensation": "p",
    "SODA cache only": "s",
    "SODA uniform schedule": "X",
    "SODA ablation": "^",
}
MARKERS.update({"FORA (static cache)": "D", "ToCa (token cache)": "*", "EasyCache": "v", "LazyCache": "P"})
MARKERS.update({"MagCache-like": "h", "TeaCache-like": "<"})


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (speed-up, PSNR) points that no other point beats in both, by increasing speed-up."""
    return [
        p
        for p in sorted(points)
        if not any(q[0] >= p[0] and q[1] > p[1] or q[0] > p[0] and q[1] >= p[1] for q in points)
    ]


def speedup_psnr(run: dict[str, Any], title: str, path: Path) -> Path:
    """Two panels (wall and FLOPs speed-up on x, PSNR vs full compute on y): every run as a marker, each method
    family's Pareto front as a line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, key, label in zip(axes, ("speedup_wall", "flops_speedup"), ("wall-clock speed-up", "FLOPs speed-up")):
        for family in FAMILIES:
            points = sorted(
                (m[key], m["fidelity"]["psnr"])
                for m in run["methods"]
                if m["family"] == family and m.get(key) and (m.get("fidelity") or {}).get("psnr") is not None
            )
            if not points:
                continue
            xs, ys = zip(*points)
            line = ax.plot(xs, ys, marker=MARKERS.get(family, "o"), linestyle="none", label=family)[0]
            if family != "SODA ablation":  # the family's Pareto front: the runs no other run of it beats on both
                front = pareto_front(points)
                ax.plot(*zip(*front), color=line.get_color(), linestyle="-")
        ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(label + " vs full compute")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR vs full compute (dB, latent preview)")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def schedules(run: dict[str, Any], title: str, path: Path) -> Path | None:
    """Per SODA-kind method and step: full-compute step (1.0) or the mean share of recomputed tokens (0 = reuse)."""
    rows = [m for m in run["methods"] if m.get("recompute_mean") is not None]
    if not rows:
        return None
    plt = _pyplot()
    import numpy as np

    steps = run["steps"]
    grid = np.array([m["recompute_mean"] for m in rows], dtype=float)
    anchors = np.zeros_like(grid, dtype=bool)
    for i, m in enumerate(rows):
        anchors[i, m["anchors"]] = True
    shown = np.ma.masked_array(grid, mask=anchors)  # anchors drawn in the "bad" colour
    top = max(float(grid[~anchors].max()) if (~anchors).any() else 0.0, 0.01)
    cmap = plt.get_cmap("Blues").with_extremes(bad="tab:orange")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * steps + 3.5), 0.38 * len(rows) + 1.6))
    image = ax.imshow(shown, aspect="auto", cmap=cmap, vmin=0.0, vmax=top, interpolation="nearest")
    for i, m in enumerate(rows):
        for t in m["anchors"]:
            ax.text(t, i, "F", ha="center", va="center", color="black", fontsize=7, fontweight="bold")
    ax.set_yticks(range(len(rows)), [f"{m['name']} ({m['full_steps']} F)" for m in rows], fontsize=8)
    ax.set_xticks(range(steps), [str(t) if steps <= 25 or t % 5 == 0 else "" for t in range(steps)], fontsize=7)
    ax.set_xlabel("sampling step")
    bar = fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
    bar.set_label("mean share of tokens recomputed (reuse steps)", fontsize=8)
    ax.set_title(f"{title}\nF (orange) = full-compute step; reuse steps coloured by the share of tokens recomputed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
