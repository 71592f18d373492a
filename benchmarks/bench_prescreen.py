"""What does each prescreen stage cost in stable hits, and what does it save in relaxation time?

Reads candidates that went through an *ungated* `tessera evaluate` (every candidate prescreened, relaxed
and placed on the hull, e.g. the model sets of `benchmarks/bench_generator.py`), so each one carries both
its prescreen verdicts and its relaxed outcome. For each stage it reports the pass rate among all
candidates and among the S.U.N. hits (a stage that passes hits no more often than the rest only costs
hits), and sweeps the ceiling of the unrelaxed-E_hull stage: the share of S.U.N. hits kept (recall), the
share of relaxation seconds still spent, and the hits per relaxation hour against relaxing everything.

Sampling costs ~0.1 s per crystal and a relaxation ~5 s, so a campaign is bound by relaxation time: a
tighter ceiling finds more hits per CPU-hour from more samples, a looser one more hits per sample.

Run:  .venv/bin/python benchmarks/bench_prescreen.py runs/*/model/eval/candidates.jsonl
Writes benchmarks/results/prescreen.json and prescreen.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tessera.tools.candidate import Candidate

RESULTS = Path(__file__).resolve().parent / "results"
CEILINGS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def load_evaluated(paths: list[Path]) -> list[Candidate]:
    """Candidates with a relaxed E_hull and an unrelaxed-E_hull prescreen value (others are skipped)."""
    out = []
    for path in paths:
        for line in path.read_text().splitlines():
            cand = Candidate.model_validate_json(line)
            ehull = cand.prescreen.get("ehull")
            if cand.e_hull is not None and ehull is not None and ehull.value is not None:
                out.append(cand)
    return out


def is_sun(c: Candidate) -> bool:
    return bool(c.stable and c.unique and c.novel)


def stage_table(cands: list[Candidate]) -> dict[str, dict[str, float]]:
    """Per stage: pass rate over all candidates and over S.U.N. hits."""
    sun = np.array([is_sun(c) for c in cands])
    out = {}
    for stage in ("charge", "geometry"):
        passed = np.array([bool(c.prescreen[stage].passed) if stage in c.prescreen else True for c in cands])
        out[stage] = {"pass_all": float(passed.mean()), "pass_sun": float(passed[sun].mean())}
    return out


def ceiling_sweep(cands: list[Candidate]) -> list[dict[str, float]]:
    """For each ceiling (eV/atom) on the unrelaxed E_hull: kept share, hit recall, relaxation time share."""
    unrelaxed = np.array([c.prescreen["ehull"].value for c in cands])
    sun = np.array([is_sun(c) for c in cands])
    seconds = np.array([c.relax_seconds or 0.0 for c in cands])
    rows = []
    for ceiling in CEILINGS + (float("inf"),):
        keep = unrelaxed <= ceiling
        time_share = float(seconds[keep].sum() / seconds.sum())
        recall = float(keep[sun].mean())
        rows.append({
            "ceiling_ev_atom": ceiling,
            "kept": float(keep.mean()),
            "sun_recall": recall,
            "relax_time_share": time_share,
            "hit_rate_among_kept": float(sun[keep].mean()) if keep.any() else 0.0,
            "hits_per_relax_hour_vs_all": recall / time_share if time_share > 0 else 0.0,
        })
    return rows


def plot(rows: list[dict[str, float]], current: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    x = [r["relax_time_share"] for r in rows]
    y = [r["sun_recall"] for r in rows]
    ax.plot(x, y, "o-", color="tab:blue")
    for r in rows:
        label = "none" if r["ceiling_ev_atom"] == float("inf") else f'{r["ceiling_ev_atom"]:g}'
        ax.annotate(label, (r["relax_time_share"], r["sun_recall"]), textcoords="offset points", xytext=(5, -10), fontsize=8)
        if r["ceiling_ev_atom"] == current:
            ax.plot([r["relax_time_share"]], [r["sun_recall"]], "s", color="tab:red", label=f"configs/prescreen.yaml ({current:g})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="no enrichment")
    ax.set_xlabel("share of relaxation seconds spent")
    ax.set_ylabel("share of S.U.N. hits kept")
    ax.set_title("Unrelaxed CHGNet E_hull ceiling (eV/atom)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+", type=Path, help="candidates.jsonl files of ungated evaluate runs")
    ap.add_argument("--out", type=Path, default=RESULTS / "prescreen.json")
    args = ap.parse_args()
    missing = [str(p) for p in args.candidates if not p.exists()]
    if missing:
        print(f"bench_prescreen: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    cands = load_evaluated(args.candidates)
    if not cands:
        print("bench_prescreen: no candidate has both a relaxed and an unrelaxed E_hull (run evaluate without --gate)",
              file=sys.stderr)
        return 2
    from tessera.tools.prescreen import load_prescreen_params

    current = load_prescreen_params().ehull.ceiling
    rows = ceiling_sweep(cands)
    result = {
        "files": [str(p) for p in args.candidates],
        "n_candidates": len(cands),
        "n_sun": int(sum(is_sun(c) for c in cands)),
        "stages": stage_table(cands),
        "ceiling_sweep": [{**r, "ceiling_ev_atom": None if r["ceiling_ev_atom"] == float("inf") else r["ceiling_ev_atom"]}
                          for r in rows],
        "current_ceiling_ev_atom": current,
    }
    print(f"{result['n_candidates']} candidates, {result['n_sun']} S.U.N. hits")
    for stage, d in result["stages"].items():
        print(f"{stage:>9}: passes {d['pass_all']:.1%} of all, {d['pass_sun']:.1%} of S.U.N. hits")
    print(f"{'ceiling':>8} {'kept':>6} {'recall':>7} {'time':>6} {'hits/h':>7}")
    for r in rows:
        print(f"{r['ceiling_ev_atom']:>8g} {r['kept']:>6.2f} {r['sun_recall']:>7.3f} {r['relax_time_share']:>6.2f} "
              f"{r['hits_per_relax_hour_vs_all']:>7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(rows, current, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
