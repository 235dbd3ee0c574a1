"""The documented model table: parameters at every dataset geometry, FLOPs, and who asked.

``docs/models.md`` embeds the Markdown this module prints (``e2evision models --markdown``), and
a test recomputes every number, so the documentation cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import torch

from e2evision.models.registry import (
    count_flops,
    count_parameters,
    create_model,
    get_entry,
    list_models,
)

#: (channels, side) of the community's datasets: e/γ crops, quark/gluon jets, boosted top / top
#: mass (8 channels), DeepLense Model I (150 px) and Models II/III (64 px).
GEOMETRIES: tuple[tuple[int, int], ...] = ((2, 32), (3, 125), (8, 125), (1, 150), (1, 64))
FLOPS_GEOMETRY: tuple[int, int] = (3, 125)
BEGIN, END = "<!-- model-table:begin -->", "<!-- model-table:end -->"


def catalog_rows(pattern: str = "*") -> list[dict[str, Any]]:
    """One row per model: parameter count at each geometry and GFLOPs at ``FLOPS_GEOMETRY``."""
    rows = []
    for name in list_models(pattern):
        entry = get_entry(name)
        if entry.family == "scalars":  # no image input: nothing to count per geometry
            continue
        params = {}
        for c, s in GEOMETRIES:
            with torch.device("meta"):
                params[f"{c}x{s}x{s}"] = count_parameters(create_model(name, in_chans=c, img_size=s))
        c, s = FLOPS_GEOMETRY
        with torch.device("meta"):
            flops = count_flops(create_model(name, in_chans=c, img_size=s), c, s)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "params": params,
                "flops": flops,
                "source": entry.source,
                "description": entry.description,
            }
        )
    return rows


def catalog_markdown(rows: list[dict[str, Any]] | None = None) -> str:
    """The Markdown table between the BEGIN/END markers of docs/models.md."""
    rows = catalog_rows() if rows is None else rows
    geos = [f"{c}×{s}×{s}" for c, s in GEOMETRIES]
    c, s = FLOPS_GEOMETRY
    head = ["name", "family", *(f"params {g}" for g in geos), f"GFLOPs {c}×{s}×{s}", "asked for by"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---", *["---:"] * (len(geos) + 1), "---"]) + "|"]
    for r in rows:
        cells = [
            f"`{r['name']}`",
            r["family"],
            *(f"{v:,}" for v in r["params"].values()),
            f"{r['flops'] / 1e9:.3f}",
            r["source"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_catalog_markdown(text: str) -> dict[str, dict[str, int]]:
    """Parameter counts per model and geometry, read back from docs/models.md."""
    body = text.split(BEGIN, 1)[1].split(END, 1)[0].strip().splitlines()
    out: dict[str, dict[str, int]] = {}
    for line in body[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[0].strip("`")
        out[name] = {f"{c}x{s}x{s}": int(v.replace(",", "")) for (c, s), v in zip(GEOMETRIES, cells[2:])}
    return out
