"""Plots of the guidance case studies: target-property histograms and Pareto fronts of loss vs E_hull.

Reads the sample folders that ``benchmarks/bench_guidance.py`` wrote (``WORK/<case>/{guided,unguided}``),
measures every case's guidance terms on both arms with the code the guided run used
(``tools.steering.guidance_record``), and places each crystal on the shipped hull by its CHGNet single-point
energy (the prescreen's unrelaxed E_hull estimate: a stability proxy, no relaxation). Per case it draws

- the target property, guided vs unguided, with the target band shaded (for two terms: the first term), and
  how many crystals are physically valid (no overlapping atoms) and on target: the share that counts;
- loss (the mean |value - target| over the terms) against the unrelaxed E_hull, both arms, with each arm's
  Pareto front (lower loss and lower E_hull are both better).

Run: .venv/bin/python benchmarks/plot_guidance.py [--work runs/bench_guidance_n256]
     [--out benchmarks/results/guidance_plots] [--cases boron,licoo_cn4]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guidance import CASES, _measure  # noqa: E402

from tessera.tools.paths import REPO_ROOT, repo_relative  # noqa: E402
from tessera.tools.spec import parse_spec  # noqa: E402


def pareto_front(loss: np.ndarray, ehull: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both (lower is better), sorted by loss."""
    order = np.lexsort((ehull, loss))
    front, best = [], math.inf
    for i in order:
        if ehull[i] < best:
            front.append(i)
            best = ehull[i]
    return np.array(front, dtype=int)


def _arm(case_dir: Path, label: str, spec: Any, vocab: list[int], hull: Any) -> dict[str, np.ndarray]:
    from tessera.tools.lineage import read_candidates_file
    from tessera.tools.relax import static_energies

    records = read_candidates_file(case_dir / label / "candidates.jsonl")
    cands = [c for c in records if c.error is None]  # the rest fail the physical sanity checks (overlapping atoms)
    measured = _measure(spec.guidance, cands, vocab)
    structures = [c.structure() for c in cands]
    energies = static_energies(structures)
    ehull = []
    for s, e in zip(structures, energies):
        try:
            ehull.append(hull.e_hull_value(s, e) if math.isfinite(e) else math.nan)
        except Exception:  # noqa: BLE001 - an element the hull cannot judge: no proxy for this one
            ehull.append(math.nan)
    values = np.array([[float(t["value"]) for t in rec] for rec in measured])
    targets = np.array([float(np.mean(t.target)) if isinstance(t.target, list) else float(t.target)
                        for t in spec.guidance])
    return {"values": values, "loss": np.abs(values - targets).mean(axis=1), "ehull": np.array(ehull),
            "met": np.array([all(t["met"] for t in rec) for rec in measured]), "n_total": len(records)}


def plot_case(name: str, arms: dict[str, dict[str, np.ndarray]], spec: Any, out: Path) -> dict[str, Any]:
    term = spec.guidance[0]
    target = float(np.mean(term.target)) if isinstance(term.target, list) else float(term.target)
    label = "volume per atom (A^3)" if term.kind == "volume_per_atom" else f"{'-'.join(term.elements)} coordination"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    lo = min(float(np.nanmin(a["values"][:, 0])) for a in arms.values())
    hi = max(float(np.nanmax(a["values"][:, 0])) for a in arms.values())
    bins = np.linspace(lo, hi, 30)
    for arm, colour in (("unguided", "tab:gray"), ("guided", "tab:blue")):
        ax1.hist(arms[arm]["values"][:, 0], bins=bins, alpha=0.55, color=colour,
                 label=f"{arm}: {int(arms[arm]['met'].sum())} of {arms[arm]['n_total']} valid and on target "
                       f"({arms[arm]['n_total'] - len(arms[arm]['met'])} with overlapping atoms)")
    ax1.axvspan(target - term.tolerance, target + term.tolerance, color="tab:green", alpha=0.15, label="target band")
    ax1.set_xlabel(label)
    ax1.set_ylabel("crystals")
    ax1.yaxis.get_major_locator().set_params(integer=True)
    ax1.legend(fontsize=8)
    ax1.set_title(f"{name}: target property")
    summary: dict[str, Any] = {}
    for arm, colour in (("unguided", "tab:gray"), ("guided", "tab:blue")):
        a = arms[arm]
        ok = np.isfinite(a["ehull"])
        ax2.scatter(a["loss"][ok], a["ehull"][ok], s=8, alpha=0.45, color=colour, label=arm)
        idx = np.flatnonzero(ok)
        front = idx[pareto_front(a["loss"][ok], a["ehull"][ok])]
        ax2.plot(a["loss"][front], a["ehull"][front], "-o", ms=3, color=colour)
        summary[arm] = {"n_total": int(a["n_total"]), "n": int(len(a["loss"])), "n_met": int(a["met"].sum()),
                        "median_loss": float(np.median(a["loss"])),
                        "median_unrelaxed_e_hull": float(np.nanmedian(a["ehull"])),
                        "pareto_front": [[float(a["loss"][i]), float(a["ehull"][i])] for i in front]}
    from tessera.tools.measures import two_proportion_z_test

    g, u = summary["guided"], summary["unguided"]
    summary["z_test_valid_and_met"] = two_proportion_z_test(g["n_met"], g["n_total"], u["n_met"],
                                                            u["n_total"]).model_dump()
    ax2.set_xlabel("loss: mean |value - target|")
    ax2.set_ylabel("unrelaxed E_hull, CHGNet (eV/atom)")
    ax2.set_title("loss vs stability proxy, Pareto fronts")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=110)
    plt.close(fig)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench_guidance_n256")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "guidance_plots")
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    from tessera.generators.model import load_weights
    from tessera.tools.hull import ReferenceHull
    from tessera.tools.sample import SHIPPED_CHECKPOINT

    vocab = load_weights(SHIPPED_CHECKPOINT).vocab
    hull = ReferenceHull.default()
    results: dict[str, Any] = {}
    for name in args.cases.split(","):
        case_dir = args.work / name
        if not (case_dir / "guided" / "candidates.jsonl").exists() or not (case_dir / "unguided" / "candidates.jsonl").exists():
            print(f"{name}: no finished sample folders under {case_dir}, skipped", file=sys.stderr)
            continue
        spec = parse_spec({**CASES[name]}, source=name)
        arms = {label: _arm(case_dir, label, spec, vocab, hull) for label in ("unguided", "guided")}
        results[name] = plot_case(name, arms, spec, args.out)
        g, u = results[name]["guided"], results[name]["unguided"]
        p_value = results[name]["z_test_valid_and_met"]["p_value"]
        print(f"{name}: valid and on target {g['n_met']}/{g['n_total']} vs {u['n_met']}/{u['n_total']} (p {p_value:.1e}; "
              f"{g['n_total'] - g['n']} vs {u['n_total'] - u['n']} with overlapping atoms); median loss {g['median_loss']:.2f} vs "
              f"{u['median_loss']:.2f}; median unrelaxed E_hull {g['median_unrelaxed_e_hull']:.3f} vs "
              f"{u['median_unrelaxed_e_hull']:.3f} eV/atom -> {repo_relative(args.out / (name + '.png'))}", flush=True)
    (args.out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
