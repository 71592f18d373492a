"""Build the stability model's labelled sets: data/stability/train.npz and data/stability/heldout.npz.

Each row is an UNRELAXED structure's features (tools.stability_model.featurize: CHGNet 0.3.0 crystal feature +
single-point energy, single-point E_hull estimate and geometry scalars) and its label, the relaxed E_hull in eV/atom
against the shipped reference hull (ReferenceHull.default(), configs/hull.yaml). Sources (column ``source``):

- ``generated``: crystals from the shipped generator (``tessera sample --steps 200``) relaxed by CHGNet with
  ``tessera evaluate --no-store --workers 1`` (ungated; label = the record's e_hull; a relaxation that failed
  or timed out has no label). Given as SAMPLE_DIR:EVAL_DIR pairs; while an evaluation is still running its
  relaxation journal (EVAL_DIR/relax_progress.jsonl) is read and placed on the hull here. A relaxation stopped
  by the wall-time limit is labelled by its last energy (an upper bound, usually close; counted in the provenance).
- ``pool`` / ``pyxtal``: benchmarks/results/hull_relaxations.jsonl (bench_hull.py): 150 held-out MP ground states
  relaxed by CHGNet from the DFT geometry (label: CHGNet-relaxed E_hull) and 100 pyxtal random cells of the same
  compositions, regenerated here with bench_hull's seeded generator (a regenerated cell is kept only when its
  CHGNet single-point energy matches the journal's initial energy within 1 meV/atom).
- ``wbm``: WBM structures (Wang et al. 2021, ../shared/data/wbm_sample.csv.gz, <= 24 atoms, elements the hull
  knows). The 300 rows of benchmarks/results/judge_relaxations.jsonl carry their CHGNet-relaxed E_hull; further
  rows (``--n-wbm``, seeded) the DFT formation energy placed on the shipped hull (bench_judge.py's rule).

The held-out set (``--heldout SAMPLE_DIR:EVAL_DIR``, one generator seed) keeps every row with features, label NaN
where relaxation failed, plus relax_seconds, stable/unique/novel flags (for S.U.N. per relaxation hour).

Run (developer checkout; reads ../shared only here, never at run time):
    .venv/bin/python data/build_stability_data.py --heldout scratch/stab/s1800:scratch/stab/e1800 \
        --generated scratch/stab/s1801:scratch/stab/e1801 --generated scratch/stab/s1802:scratch/stab/e1802 \
        --n-wbm 700 --cache scratch/stab/features.jsonl [--train]
Features are cached per row in ``--cache`` (JSON lines), so a rerun only featurizes new rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from tessera.tools.candidate import RelaxOutcome
from tessera.tools.evaluate import structure_key
from tessera.tools.hull import ReferenceHull
from tessera.tools.pool import load_pool, row_to_structure
from tessera.tools.stability_model import STABILITY_DIR, LabelledSet, featurize, label_from_energy

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


class FeatureCache:
    """id -> feature row (list of floats, NaN allowed), appended to a JSON-lines file as rows are computed."""

    def __init__(self, path: Path, hull: ReferenceHull) -> None:
        self.path = path
        self.hull = hull
        self.rows: dict[str, list[float]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.rows[rec["id"]] = rec["x"]
                except (ValueError, KeyError):
                    continue

    def get(self, items: list[tuple[str, Structure]]) -> dict[str, np.ndarray]:
        todo = [(k, s) for k, s in items if k not in self.rows]
        for start in range(0, len(todo), 32):
            chunk = todo[start:start + 32]
            fb = featurize([s for _, s in chunk], ehull_fn=self.hull.ehull_fn())
            with open(self.path, "a", encoding="utf-8") as fh:
                for (k, _), row in zip(chunk, fb.x):
                    vals = [float(v) if math.isfinite(v) else None for v in row]
                    fh.write(json.dumps({"id": k, "x": vals}) + "\n")
                    self.rows[k] = vals
            print(f"  featurized {min(start + 32, len(todo))}/{len(todo)}", file=sys.stderr, flush=True)
        return {k: np.array([np.nan if v is None else v for v in self.rows[k]], dtype=np.float32) for k, _ in items}


def generated_rows(sample_dir: Path, eval_dir: Path, hull: ReferenceHull) -> list[dict]:
    """One dict per sampled crystal: key, structure, label (NaN if not relaxed), relax_seconds, flags."""
    records = [json.loads(line) for line in (sample_dir / "candidates.jsonl").read_text().splitlines() if line.strip()]
    evaluated: dict[str, dict] = {}
    if (eval_dir / "candidates.jsonl").exists():
        for line in (eval_dir / "candidates.jsonl").read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                evaluated[r["id"]] = r
    journal: dict[str, RelaxOutcome] = {}
    if (eval_dir / "relax_progress.jsonl").exists():
        for line in (eval_dir / "relax_progress.jsonl").read_text().splitlines():
            try:
                rec = json.loads(line)
                journal[rec["key"]] = RelaxOutcome.model_validate(rec["outcome"])
            except (ValueError, KeyError):
                continue
    out: list[dict] = []
    for rec in records:
        s = parse(rec["cif"])
        # evaluate re-writes each sampled CIF once (Candidate.from_structure); the journal is keyed by that text.
        key = structure_key(s.to(fmt="cif"))
        row = {"id": key, "name": rec["id"], "structure": s, "y": np.nan, "relax_seconds": np.nan,
               "stable": False, "unique": False, "novel": False, "relaxed": False, "partial": False}
        ev = evaluated.get(rec["id"])
        if ev is not None:
            if ev.get("initial_cif"):
                row["id"] = structure_key(ev["initial_cif"])
            if ev.get("e_hull") is not None and ev.get("relaxed"):
                row["y"] = float(ev["e_hull"])
            row.update(relax_seconds=float(ev["relax_seconds"]) if ev.get("relax_seconds") is not None else np.nan,
                       stable=bool(ev.get("stable")), unique=bool(ev.get("unique")), novel=bool(ev.get("novel")),
                       relaxed=bool(ev.get("relaxed")))
        o = journal.get(row["id"]) or journal.get(key)
        if o is not None and not math.isfinite(row["y"]):
            if not math.isfinite(row["relax_seconds"]):
                row["relax_seconds"] = o.seconds
            # A relaxation stopped by the wall-time limit (CPU-starved on a shared machine) keeps its last energy and
            # structure: an upper bound of the relaxed E_hull, usually close (the last max force is small). Used as
            # the label (row "partial"); other failures (exploded, collapsed, NaN) stay unlabelled.
            timed_out = o.error is not None and o.error.startswith("time limit")
            if (o.error is None or timed_out) and o.energy_per_atom is not None and o.cif:
                try:
                    row["y"] = label_from_energy(parse(o.cif), o.energy_per_atom, hull=hull)
                    row["relaxed"] = o.error is None
                    row["partial"] = timed_out
                except Exception:  # noqa: BLE001 - a composition the hull cannot place stays unlabelled
                    pass
        out.append(row)
    return out


def hull_bench_rows(hull: ReferenceHull, *, max_atoms: int = 20, seed: int = 0) -> list[dict]:
    """bench_hull's known MP structures and regenerated pyxtal cells with their CHGNet-relaxed labels."""
    path = RESULTS / "hull_relaxations.jsonl"
    if not path.exists():
        return []
    # Reuse the bench's seeded generator itself (loaded from its file, benchmarks/ is not a package).
    spec = importlib.util.spec_from_file_location("bench_hull", ROOT / "benchmarks" / "bench_hull.py")
    bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench)  # type: ignore[union-attr]
    random_structure = bench.random_structure

    recs = {json.loads(line)["key"]: json.loads(line) for line in path.read_text().splitlines() if line.strip()}
    pool = load_pool()
    test = pool[pool["split"] == "test"]
    known = test[(test["e_above_hull_mp"] <= 0.02) & (test["n_atoms"] <= max_atoms)]
    known = known.sample(n=min(150, len(known)), random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    out: list[dict] = []

    def label(rec: dict) -> float:
        o = rec["outcome"]
        if o.get("error") is None and o.get("energy_per_atom") is not None and o.get("cif"):
            try:
                return label_from_energy(parse(o["cif"]), o["energy_per_atom"], hull=hull)
            except Exception:  # noqa: BLE001
                return np.nan
        return np.nan

    for _, row in known.iterrows():
        rec = recs.get(f"known:{row['material_id']}")
        if rec is not None:
            out.append({"id": f"pool:{row['material_id']}", "structure": row_to_structure(row), "y": label(rec),
                        "source": "pool", "check_energy": None})
    for _, row in known.head(100).iterrows():
        comp = row_to_structure(row).composition
        species = [el.symbol for el in comp.elements]
        counts = [int(round(comp[el])) for el in comp.elements]
        s, _ = random_structure(species, counts, rng)
        rec = recs.get(f"random:{row['material_id']}:seed{seed}")
        if rec is not None:
            out.append({"id": f"pyxtal:{row['material_id']}:seed{seed}", "structure": s, "y": label(rec),
                        "source": "pyxtal", "check_energy": rec["outcome"].get("initial_energy_per_atom")})
    return out


def wbm_rows(wbm: Path, hull: ReferenceHull, *, n_extra: int, seed: int, max_atoms: int = 24) -> list[dict]:
    """The judge bench's 300 rows (CHGNet labels) + ``n_extra`` more (DFT labels on the shipped hull)."""
    df = pd.read_csv(wbm)
    judged = {}
    jpath = RESULTS / "judge_relaxations.jsonl"
    if jpath.exists():
        for line in jpath.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("chgnet_e_hull") is not None and r.get("chgnet_error") is None:
                    judged[int(r["wbm_row"])] = float(r["chgnet_e_hull"])
    out: list[dict] = []
    extra = 0
    order = np.random.default_rng(seed).permutation(len(df))
    for pos in order:
        row = df.iloc[int(pos)]
        wid = int(row.iloc[0])
        if wid not in judged and extra >= n_extra:
            continue
        try:
            s = parse(row["cif"])
        except (ValueError, KeyError, IndexError):
            continue
        if len(s) > max_atoms or not {el.symbol for el in s.composition.elements} <= hull.elements:
            continue
        if wid in judged:
            y = judged[wid]
        else:
            comp = s.composition.fractional_composition
            e_dft = float(row["formation_energy_per_atom"]) + sum(comp[el] * hull.mu[el.symbol] for el in comp)
            try:
                y = hull.e_hull_value(s, e_dft)
            except Exception:  # noqa: BLE001
                continue
            extra += 1
        out.append({"id": f"wbm:{wid}", "structure": s, "y": y, "source": "wbm", "check_energy": None})
    return out


def to_set(rows: list[dict], feats: dict[str, np.ndarray], source: str | None = None) -> LabelledSet:
    if not rows:
        return LabelledSet.empty()
    return LabelledSet(x=np.stack([feats[r["id"]] for r in rows]).astype(np.float32),
                       y=np.array([r["y"] for r in rows], dtype=np.float64),
                       source=np.array([source or r["source"] for r in rows]), ids=np.array([r["id"] for r in rows]))


def pair(text: str) -> tuple[Path, Path]:
    a, _, b = text.partition(":")
    return Path(a), Path(b)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heldout", type=pair, required=True, help="SAMPLE_DIR:EVAL_DIR of the held-out seed")
    ap.add_argument("--generated", type=pair, action="append", default=[], help="SAMPLE_DIR:EVAL_DIR (repeatable)")
    ap.add_argument("--wbm", type=Path, default=ROOT.parent / "shared" / "data" / "wbm_sample.csv.gz")
    ap.add_argument("--n-wbm", type=int, default=700, help="WBM rows with DFT labels beyond the judge bench's 300")
    ap.add_argument("--no-hull-bench", action="store_true", help="skip hull_relaxations.jsonl's pool/pyxtal rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=ROOT / "scratch" / "stability_features.jsonl")
    ap.add_argument("--out", type=Path, default=STABILITY_DIR)
    ap.add_argument("--train", action="store_true",
                    help="then train a version from scratch on the new base set (tools.stability_model.train_version; "
                         "promoted only if it beats the current promoted version on the held-out set)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    hull = ReferenceHull.default()
    cache = FeatureCache(args.cache, hull)
    provenance: dict = {"script": "data/build_stability_data.py", "argv": sys.argv[1:] if argv is None else argv,
                        "hull": {"sources": list(hull.sources), "scheme": hull.scheme}, "sources": {}}

    # held-out first: it must be complete and fixed
    hs, he = args.heldout
    held = generated_rows(hs, he, hull)
    print(f"held-out {hs}: {len(held)} crystals, {sum(np.isfinite(r['y']) for r in held)} labelled", file=sys.stderr)
    feats = cache.get([(r["id"], r["structure"]) for r in held])
    hset = to_set(held, feats, "generated")
    keep = np.isfinite(hset.x).all(axis=1)
    hset.subset(keep).save(
        args.out / "heldout.npz",
        relax_seconds=np.array([r["relax_seconds"] for r in held])[keep],
        stable=np.array([r["stable"] for r in held])[keep], unique=np.array([r["unique"] for r in held])[keep],
        novel=np.array([r["novel"] for r in held])[keep], relaxed=np.array([r["relaxed"] for r in held])[keep],
        names=np.array([r["name"] for r in held])[keep], partial=np.array([r["partial"] for r in held])[keep],
    )
    provenance["heldout"] = {"sample": str(hs), "eval": str(he), "rows": int(keep.sum()),
                             "labelled": int(np.isfinite(hset.y[keep]).sum()),
                             "stable": int((hset.y[keep] <= 0.1).sum()),
                             "labelled_from_a_timed_out_relaxation": int(sum(r["partial"] for r in held))}

    parts: list[LabelledSet] = []
    held_ids = set(hset.ids.tolist())
    for sd, ed in args.generated:
        rows = [r for r in generated_rows(sd, ed, hull) if np.isfinite(r["y"]) and r["id"] not in held_ids]
        print(f"generated {sd}: {len(rows)} labelled", file=sys.stderr)
        feats = cache.get([(r["id"], r["structure"]) for r in rows])
        parts.append(to_set(rows, feats, "generated"))
        provenance["sources"][f"generated:{sd}"] = len(rows)
    if not args.no_hull_bench:
        rows = [r for r in hull_bench_rows(hull, seed=0) if np.isfinite(r["y"])]
        feats = cache.get([(r["id"], r["structure"]) for r in rows])
        good = []
        for r in rows:
            e_sp = feats[r["id"]][64]
            if r["check_energy"] is not None and not (abs(e_sp - r["check_energy"]) < 1e-3):
                continue  # pyxtal did not regenerate the same cell: its label belongs to another structure
            good.append(r)
        print(f"hull bench: {len(good)} of {len(rows)} rows", file=sys.stderr)
        parts.append(to_set(good, feats))
        for src in ("pool", "pyxtal"):
            provenance["sources"][f"{src}:benchmarks/results/hull_relaxations.jsonl"] = sum(
                r["source"] == src for r in good)
    if args.wbm.exists() and args.n_wbm >= 0:
        rows = [r for r in wbm_rows(args.wbm, hull, n_extra=args.n_wbm, seed=args.seed) if np.isfinite(r["y"])]
        print(f"wbm: {len(rows)} rows", file=sys.stderr)
        feats = cache.get([(r["id"], r["structure"]) for r in rows])
        parts.append(to_set(rows, feats))
        provenance["sources"]["wbm:../shared/data/wbm_sample.csv.gz (+ judge_relaxations.jsonl CHGNet labels)"] = len(rows)
    train_set = LabelledSet.concat(parts).finite()
    train_set.save(args.out / "train.npz")
    provenance["train"] = {str(s): int(c) for s, c in zip(*np.unique(train_set.source, return_counts=True))}
    provenance["train_stable"] = int((train_set.y <= 0.1).sum())
    (args.out / "data_provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))
    if args.train:
        from tessera.tools.stability_model import train_version

        v = train_version(root=args.out)
        print(f"{v.name}: held-out F1 {v.record.heldout.f1:.3f}, MAE {v.record.heldout.mae:.3f} eV/atom, "
              f"{'promoted' if v.promoted else 'not promoted'} (parent {v.lineage.parent})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
