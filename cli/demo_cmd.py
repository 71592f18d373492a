"""``tessera demo``: the main job on the embedded defaults, offline.

Until the planner agent exists the main job is "generate, then judge": sample crystals with the shipped
generator and run them through the gated pipeline (prescreen, CHGNet relaxation, hull, novelty), then
evaluate the shipped example set (six held-out Materials Project structures that the pipeline should
call stable, two random pyxtal structures of the same compositions that it should not). Both runs are
recorded in the default store, with E_hull plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console
from tessera.cli.evaluate_cmd import evaluate_paths, print_table
from tessera.cli.generator_cmds import sample_to_folder
from tessera.tools.measures import STABLE_E_HULL
from tessera.tools.paths import DATA_DIR

EXAMPLES_DIR = DATA_DIR / "examples"


def plot_ehull(candidates_jsonl: Path, png: Path, *, title: str = "") -> Path:
    """Bar chart of E_hull per input (eV/atom), coloured by each record's ``stable`` flag, with the stability line."""
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


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    n: int = typer.Option(8, "--n", min=0, help="crystals to generate (0: only the example set)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Generate crystals with the shipped model and judge them; judge the shipped example set; plot E_hull."""
    result: dict = {}
    if n > 0:
        if not json_out:
            err_console.rule(f"1. generate {n} crystals (shipped generator, seed {seed})")
        sampled, cifs = sample_to_folder(out=out / "samples", n=n, seed=seed, store=store)
        if not json_out:
            err_console.print(f"sampled {sampled['n']} crystals in {sampled['seconds']:.1f} s; judging them (gated)")
        payload, candidates, summary = evaluate_paths(cifs, out=out / "generated", store=store, gate=True, quiet=json_out)
        png = plot_ehull(out / "generated" / "candidates.jsonl", out / "generated" / "ehull.png",
                         title=f"generated (seed {seed}): relaxed candidates")
        result["generated"] = {"sample": sampled, "evaluate": payload, "plot": str(png)}
        if not json_out:
            print_table(candidates, summary, out / "generated", payload["run_id"])
    if not json_out:
        err_console.rule("2. the shipped example set (6 held-out MP structures, 2 random pyxtal ones)")
    payload, candidates, summary = evaluate_paths([EXAMPLES_DIR], out=out / "examples", store=store, quiet=json_out)
    png = plot_ehull(out / "examples" / "candidates.jsonl", out / "examples" / "ehull.png", title="shipped example set")
    result["examples"] = {"evaluate": payload, "plot": str(png)}
    if json_out:
        emit_json(result)
        return
    print_table(candidates, summary, out / "examples", payload["run_id"])
    err_console.print(f"E_hull plots: {', '.join(str(v['plot']) for v in result.values())}")
