"""Draw the pack's icon for the Comfy Registry (``[tool.comfy] Icon`` in pyproject.toml): docs/images/icon.png.

A schedule in miniature: columns are sampling steps, rows are modules; full-compute steps are solid, reuse steps
dark with a few recomputed modules lit, the way the plan picture of "Plan SODA Schedule" shows a schedule.
Usage: .venv/bin/python scripts/render_icon.py
"""

from __future__ import annotations

import sys

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from comfy_env import ROOT  # noqa: E402


TARGET = ROOT / "docs" / "images" / "icon.png"
SIZE_PX = 400  # the registry allows up to 800 x 400
STEPS, MODULES = 10, 6
FULL_STEPS = (0, 1, 4, 7, 9)  # like the plans SODA makes: the first and last steps, a few in between
RECOMPUTED = {(2, 1), (3, 4), (5, 0), (5, 3), (6, 5), (8, 2)}  # (step, module) cells of token recompute
BACKGROUND, FULL, REUSE, PARTIAL, TEXT = "#1b2230", "#f28e2b", "#2e3a4f", "#4e79a7", "#f4f4f4"


def main() -> int:
    figure = plt.figure(figsize=(4, 4), dpi=SIZE_PX / 4)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.axis("off")
    axes.add_patch(
        FancyBboxPatch((0.02, 0.02), 0.96, 0.96, boxstyle="round,pad=0,rounding_size=0.12", color=BACKGROUND)
    )
    cell, gap, left, bottom = 0.072, 0.012, 0.12, 0.36
    for step in range(STEPS):
        for module in range(MODULES):
            color = FULL if step in FULL_STEPS else PARTIAL if (step, module) in RECOMPUTED else REUSE
            axes.add_patch(
                FancyBboxPatch(
                    (left + step * (cell + gap), bottom + module * (cell + gap)),
                    cell,
                    cell,
                    boxstyle="round,pad=0,rounding_size=0.012",
                    color=color,
                )
            )
    axes.text(0.5, 0.19, "SODA", color=TEXT, fontsize=54, fontweight="bold", ha="center", va="center")
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(TARGET, dpi=SIZE_PX / 4, transparent=True)
    plt.close(figure)
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
