"""Plots people would rather look at than tables (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import json
from pathlib import Path

from tessera.tools.measures import STABLE_E_HULL


def plot_ehull(candidates_jsonl: Path, png: Path, *, title: str = "") -> Path:
    """Bar chart of E_hull per input (eV/atom), coloured by each record's ``stable`` flag, with the
    stability line. Records without an E_hull (stopped before the hull) are left out. Returns ``png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in candidates_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("e_hull") is not None]
    labels = [f"{r['formula']}\n{Path(r['source']).stem[:18]}" for r in rows]
    values = [r["e_hull"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    ax.bar(range(len(rows)), values, color=["tab:green" if r["stable"] else "tab:red" for r in rows])
    ax.axhline(STABLE_E_HULL, color="k", ls="--", lw=1, label=f"stable: E_hull <= {STABLE_E_HULL} eV/atom")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("E_hull (eV/atom, CHGNet vs MP reference hull)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
