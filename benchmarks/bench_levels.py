"""Every stability level for three sets side by side: the generator, random pyxtal crystals, held-out MP (issue 16).

The sets, in one run so the relaxation limits and the machine load are the same for all three:
- model: ``tessera sample`` of the shipped generator (``--n``, ``--seed``, ``--steps``);
- pyxtal: random symmetric pyxtal crystals with the same composition and atom count as each model crystal
  (``bench_generator.pyxtal_like``; failed generations count as not stable);
- held_out: ``--n`` structures of the pool's test split (real MP crystals; their own ids are excluded from the
  novelty pool, so "novel" means "not in the training/validation pool").

Each set goes through ``tools.evaluate.evaluate_files`` ungated (every structure relaxed by CHGNet, the first
judge) with ``confirm="sevennet"`` (CHGNet's stable ones re-relaxed by SevenNet-0 from CHGNet's structure).
Counted per set, over all crystals asked for: stable (CHGNet E_hull <= 0.1 eV/atom), on or below the hull (<= 0),
confirmed (both judges <= 0.1), S.U.N., S.U.N. confirmed, S.U.N. confirmed and prototype-novel, implausible
S.U.N. (``tools.measures.plausibility``), and the share of CHGNet's hits that survive each stricter level.
Per level the model / pyxtal ratio of rates and the one-sided two-proportion z-test p-value.

Run:  .venv/bin/python benchmarks/bench_levels.py [--n 96] [--seed 1800] [--steps 200] [--workers 2]
      [--max-seconds 120] [--sets model,pyxtal,held_out] [--work scratch/bench_levels]
      [--out benchmarks/results/levels.json]
Resume: a set's numbers land in ``<work>/<set>/metrics.json`` when its evaluation is complete; a rerun skips
it, and a half-done evaluation resumes from its relaxation journal. The plot goes next to --out (.png).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tessera.tools.paths import REPO_ROOT, repo_relative  # noqa: E402

SETS = ("model", "pyxtal", "held_out")
# (key in metrics, label): the levels, loosest first; each is a subset of the one before except <= 0
LEVELS = (
    ("n_stable", "stable (CHGNet, <= 0.1)"),
    ("n_stable_le0", "on/below hull (CHGNet, <= 0)"),
    ("n_confirmed", "confirmed (both <= 0.1)"),
    ("n_sun", "S.U.N. (CHGNet)"),
    ("n_sun_confirmed", "S.U.N. confirmed"),
    ("n_sun_confirmed_prototype", "S.U.N. confirmed, prototype-novel"),
)


def write_structures(set_name: str, args: argparse.Namespace, folder: Path) -> tuple[list[Path], list[str], int]:
    """The set's CIFs in ``folder`` (made once; a rerun reads them back), the ids to exclude from the novelty
    pool, and the number of crystals asked for (the denominator: failed pyxtal generations count)."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    manifest = folder / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        return [folder / p for p in m["files"]], m["exclude_ids"], m["n_asked"]
    folder.mkdir(parents=True, exist_ok=True)
    exclude: list[str] = []
    if set_name == "model":
        from tessera.tools.sample import SampleParams, sample_crystals

        res = sample_crystals(SampleParams(out=folder / "sample", n=args.n, seed=args.seed, steps=args.steps))
        files = [p.relative_to(folder) for p in res.cif_paths]
    elif set_name == "pyxtal":
        from bench_generator import pyxtal_like

        model_files, _, _ = write_structures("model", args, args.work / "model" / "structures")
        made = pyxtal_like([Structure.from_file(p) for p in model_files], args.seed)
        files = []
        for i, s in enumerate(made):
            if s is not None:
                p = folder / f"pyxtal-{i:04d}.cif"
                p.write_text(str(CifWriter(s)))
                files.append(p.relative_to(folder))
    else:
        from tessera.tools.pool import load_pool, row_to_structure

        test = load_pool("test")
        held = test.sample(n=min(args.n, len(test)), random_state=args.seed)
        files = []
        for _, row in held.iterrows():
            p = folder / f"{row['material_id']}.cif"
            p.write_text(str(CifWriter(row_to_structure(row))))
            files.append(p.relative_to(folder))
        exclude = [str(x) for x in held["material_id"]]
    manifest.write_text(json.dumps({"files": [str(f) for f in files], "exclude_ids": exclude, "n_asked": args.n},
                                   indent=1) + "\n")
    return [folder / f for f in files], exclude, args.n


def set_metrics(result: Any, n_asked: int) -> dict[str, Any]:
    """Counts at every level from an EvaluateFilesResult, over ``n_asked`` crystals."""
    s = result.summary
    cands = result.candidates
    sun = [c for c in cands if c.stable and c.unique and c.novel]
    m: dict[str, Any] = {
        "n": n_asked, "n_evaluated": s.n_inputs, "n_errors": s.n_errors, "n_relaxed": s.n_relaxed,
        "n_converged": s.n_converged,
        "n_stable": s.n_stable, "n_stable_le0": s.n_stable_le0, "n_confirmed": s.n_confirmed,
        "n_sun": s.n_sun, "n_sun_confirmed": s.n_sun_confirmed,
        "n_sun_confirmed_prototype": s.n_sun_confirmed_prototype,
        "n_sun_implausible": sum(c.plausible is False for c in sun),
        "n_novel": s.n_novel,
        "n_confirm_relaxations": sum(c.e_hull_confirm is not None for c in cands),
        "sun_confirmed_formulas": sorted(c.formula for c in sun if c.confirmed),
    }
    m["survive_confirmed_of_stable"] = m["n_confirmed"] / m["n_stable"] if m["n_stable"] else None
    m["survive_confirmed_of_sun"] = m["n_sun_confirmed"] / m["n_sun"] if m["n_sun"] else None
    m["survive_prototype_of_sun_confirmed"] = (m["n_sun_confirmed_prototype"] / m["n_sun_confirmed"]
                                               if m["n_sun_confirmed"] else None)
    return m


def run_set(set_name: str, args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from tessera.tools.evaluate import EvaluateFilesParams, EvaluateParams, evaluate_files
    from tessera.tools.relax import load_relax_params

    set_dir = args.work / set_name
    metrics_path = set_dir / "metrics.json"
    if metrics_path.exists():
        return {**json.loads(metrics_path.read_text()), "resumed": True}
    task = progress.add_task(f"{set_name}: make structures", total=None)
    t0 = time.perf_counter()
    paths, exclude, n_asked = write_structures(set_name, args, set_dir / "structures")
    make_seconds = time.perf_counter() - t0
    progress.update(task, description=f"{set_name}: evaluate (CHGNet, then SevenNet on hits)", total=len(paths))

    def on_step(step: Any) -> None:
        progress.update(task, total=step.total)
        if step.stage in ("relax", "done"):
            progress.advance(task)

    relax = load_relax_params().model_copy(update={"max_seconds": args.max_seconds})
    params = EvaluateParams(exclude_ids=exclude, relax=relax, workers=args.workers, confirm="sevennet")
    t1 = time.perf_counter()
    result = evaluate_files(EvaluateFilesParams(paths=paths, out=set_dir / "eval", evaluate=params), on_step=on_step)
    progress.remove_task(task)
    m = set_metrics(result, n_asked)
    m.update({"make_seconds": make_seconds, "evaluate_wall_seconds": time.perf_counter() - t1})
    metrics_path.write_text(json.dumps(m, indent=1) + "\n")
    return m


def compare(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per level: model / pyxtal ratio of rates and the one-sided z-test (model > pyxtal)."""
    from tessera.tools.measures import two_proportion_z_test

    if "model" not in results or "pyxtal" not in results:
        return {}
    mo, py = results["model"], results["pyxtal"]
    out = {}
    for key, _ in LEVELS:
        test = two_proportion_z_test(mo[key], mo["n"], py[key], py["n"])
        ratio = (mo[key] / mo["n"]) / (py[key] / py["n"]) if py[key] else None
        out[key] = {"ratio_model_over_pyxtal": ratio, "p_value": test.p_value}
    return out


def table(results: dict[str, dict[str, Any]], comparison: dict[str, Any]) -> str:
    names = [s for s in SETS if s in results]
    lines = ["| level | " + " | ".join(names) + (" | model / pyxtal | p |" if comparison else " |"),
             "|---|" + "---|" * len(names) + ("---|---|" if comparison else "")]
    for key, label in LEVELS:
        cells = [f"{results[s][key]}/{results[s]['n']} ({100.0 * results[s][key] / results[s]['n']:.1f}%)"
                 for s in names]
        row = f"| {label} | " + " | ".join(cells)
        if comparison:
            c = comparison[key]
            r = "-" if c["ratio_model_over_pyxtal"] is None else f"{c['ratio_model_over_pyxtal']:.2f}x"
            p = "-" if c["p_value"] is None else f"{c['p_value']:.2g}"
            row += f" | {r} | {p}"
        lines.append(row + " |")
    surv = [f"{results[s]['n_confirmed']}/{results[s]['n_stable']}" for s in names]
    lines.append("| CHGNet hits SevenNet confirms | " + " | ".join(surv) + (" | | |" if comparison else " |"))
    imp = [str(results[s]["n_sun_implausible"]) for s in names]
    lines.append("| S.U.N. flagged implausible | " + " | ".join(imp) + (" | | |" if comparison else " |"))
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [s for s in SETS if s in results]
    colors = {"model": "tab:blue", "pyxtal": "tab:red", "held_out": "tab:green"}
    x = np.arange(len(LEVELS))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(11, 4))
    for j, s in enumerate(names):
        vals = [results[s][k] / results[s]["n"] for k, _ in LEVELS]
        ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, label=f"{s} (n={results[s]['n']})",
               color=colors.get(s))
    ax.set_xticks(x, [lab.replace(" (", "\n(").replace(", ", ",\n") for _, lab in LEVELS], fontsize=8)
    ax.set_ylabel("share of crystals")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Stability levels: CHGNet alone, confirmed by SevenNet-0, novelty strict and prototype-level",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=96, help="crystals per set")
    ap.add_argument("--seed", type=int, default=1800, help="sampling seed, pyxtal seed and held-out draw")
    ap.add_argument("--steps", type=int, default=200, help="reverse steps of the generator (0: sampler config)")
    ap.add_argument("--workers", type=int, default=None, help="Dask relaxation workers (default one per core)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="wall limit per relaxation, s")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {','.join(SETS)}")
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "scratch" / "bench_levels")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "levels.json")
    args = ap.parse_args(argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        print(f"unknown set(s): {', '.join(unknown)}; known: {', '.join(SETS)}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as progress:
        for s in sets:
            results[s] = run_set(s, args, progress)
    comparison = compare(results)
    report = {
        "what": "stability levels of the generator, random pyxtal (same compositions) and held-out MP; CHGNet "
                "0.3.0 relaxes every structure, SevenNet-0 re-relaxes CHGNet's stable ones (not DFT)",
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "params": {k: repo_relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
        "model_over_pyxtal": comparison,
        "wall_seconds": time.perf_counter() - t0,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    plot(results, args.out.with_suffix(".png"))
    print(table(results, comparison))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
