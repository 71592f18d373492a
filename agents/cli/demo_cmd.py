"""``tessera demo``: the main job on the embedded defaults, offline.

Until the agent exists the main job is the evaluation pipeline on the shipped example set: six held-out
Materials Project structures (the pipeline should call them stable) and two random pyxtal structures of
the same compositions (it should not), recorded in the default store, with an E_hull plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from agents.cli.common import JSON_OPTION, app, emit_json, err_console
from agents.cli.evaluate_cmd import evaluate_command
from tools.paths import DATA_DIR

EXAMPLES_DIR = DATA_DIR / "examples"


def plot_ehull(candidates_jsonl: Path, png: Path) -> Path:
    """Bar chart of E_hull per input (eV/atom) with the 0.1 eV/atom stability line."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in candidates_jsonl.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("e_hull") is not None]
    labels = [f"{r['formula']}\n{Path(r['source']).stem[:18]}" for r in rows]
    values = [r["e_hull"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    ax.bar(range(len(rows)), values, color=["tab:green" if v <= 0.1 else "tab:red" for v in values])
    ax.axhline(0.1, color="k", ls="--", lw=1, label="stable: E_hull <= 0.1 eV/atom")
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("E_hull (eV/atom, CHGNet vs MP reference hull)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Evaluate the shipped example set end to end (prescreen, CHGNet relax, hull, novelty) and plot E_hull."""
    evaluate_command(
        paths=[EXAMPLES_DIR], out=out, store=store, no_store=False, gate=False, workers=None, address=None,
        fmax=None, steps=None, max_seconds=None, stable_threshold=0.1, exclude_id=[], json_out=json_out,
    )
    png = plot_ehull(out / "candidates.jsonl", out / "ehull.png")
    if json_out:
        return
    err_console.print(f"E_hull plot: {png}")
