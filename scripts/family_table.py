"""The README's table of DiT families: what SODA serves per family, and on which ComfyUI it was tested.

    .venv/bin/python scripts/family_table.py                      # rewrite the table for the running ComfyUI
    COMFYUI_DIR=... .venv-other/bin/python scripts/family_table.py  # ... and for another tree (its own column)

A row per tiny model of ``tests/integration/tiny_families`` (built from the running ComfyUI's own classes). The
columns *module cache*, *token recompute* and *block cache* come from the record SODA serves the model with; the
column of the running ComfyUI version says whether its family tests ran there (the class exists) and whether the
behavioural check expects block granularity on that version. Only the running version's column is rewritten; the
others are kept. ``tests/integration/test_families.py`` checks every row against the verdicts of a real run, so the
table cannot drift from what the tests show.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- families:start -->", "<!-- families:end -->"
VERSIONS = ("0.3.75", "0.33.0")  # the range pyproject.toml declares (requires-comfyui)
HEAD = ("Model", "Test id", "ComfyUI class", "Module cache", "Token recompute", "Block cache")
YES, NO, BLOCK = "✓", "–", "✓ block"


@dataclass(frozen=True)
class Row:
    """One row of the table: the test id (a tiny family's name) and its cells."""

    name: str
    cells: dict[str, str]


def parse(text: str) -> dict[str, Row]:
    """The rows of the table between the markers in ``text``, by test id."""
    if START not in text or END not in text:
        return {}
    lines = text.split(START, 1)[1].split(END, 1)[0].strip().splitlines()
    if len(lines) < 2:
        return {}
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True))
        name = cells["Test id"].strip("`")
        rows[name] = Row(name, cells)
    return rows


def render(rows: list[Row]) -> str:
    head = (*HEAD, *(f"ComfyUI {v}" for v in VERSIONS))
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row.cells.get(h, NO) for h in head) + " |" for row in rows]
    return "\n".join(lines)


def replace_table(text: str, table: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {START} ... {END} markers; add them where the table belongs.")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", text)


def served_cells(family: object, model: object) -> dict[str, str]:
    """The record columns of ``family``'s tiny ``model`` (a ModelPatcher): how SODA serves its blocks."""
    from comfyui_soda.soda_core.adapters import serve
    from comfyui_soda.soda_core.adapters.patterns import program_for

    served = serve(model.get_model_object("diffusion_model"))  # type: ignore[attr-defined]
    modules = served.layout.modules
    module_cache = any(layer.spec.program is not None for layer in served.layers) and modules != ("block",)
    programs = [program_for(layer.spec, module_cache) for layer in served.layers]
    partial = [m for m in modules if any(m in p.partial for p in programs)]  # in the layout's order
    return {
        "Module cache": ", ".join(modules) if module_cache else NO,
        "Token recompute": ", ".join(partial) if module_cache and partial else NO,
        "Block cache": YES if served.layers else NO,
    }


def version_cell(family: object) -> str:
    """The running ComfyUI's column: tested there, and at which granularity."""
    if not family.available():  # type: ignore[attr-defined]
        return NO
    return BLOCK if family.falls_back() else YES  # type: ignore[attr-defined]


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests" / "integration"), str(ROOT / "scripts")]
    from comfy_env import import_comfy, register_pack

    register_pack()
    import_comfy()
    import tiny_families as tiny

    from comfyui_soda.nodes.patching import comfy_version

    version = comfy_version()
    if version not in VERSIONS:
        raise SystemExit(f"ComfyUI {version} is not one of the table's versions {VERSIONS}; add it to VERSIONS.")
    text = README.read_text()
    old = parse(text)
    rows = []
    for family in tiny.FAMILIES:
        kept = old[family.name].cells if family.name in old else {}
        cells = {**kept, "Model": family.title, "Test id": f"`{family.name}`", "ComfyUI class": family.model_class}
        if family.available():
            cells |= served_cells(family, tiny.build(family))
        cells[f"ComfyUI {version}"] = version_cell(family)
        rows.append(Row(family.name, cells))
    README.write_text(replace_table(text, render(rows)))


if __name__ == "__main__":
    main()
