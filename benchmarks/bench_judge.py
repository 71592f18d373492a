"""The judge against DFT: CHGNet alone, SevenNet alone, and confirmed (both), on WBM structures.

A stratified slice of the WBM sample (``../shared/data/wbm_sample.csv.gz``, Wang et al. 2021, DFT formation
energies on the MP2020-compatible scale): half of the structures within 0.1 eV/atom of the shipped reference
hull by their DFT energy, half above, at most ``--max-atoms`` atoms, elements the hull knows. Each structure,
as given in the file:

- CHGNet relaxation (``tools.relax.relax_one``, ``configs/relax.yaml``) -> E_hull (scheme ``as_is``);
- SevenNet relaxation from the same start (``SevenNetRelaxer``, the judge model of ``configs/judge.yaml``)
  -> E_hull with the MP2020 correction on top (SevenNet predicts raw GGA/GGA+U energies);
- for the structures CHGNet calls stable at 0.1: SevenNet relaxed from CHGNet's relaxed structure, as
  ``tessera evaluate --confirm sevennet`` does -> the confirmation E_hull; confirmed = both <= threshold.

Classification against the DFT label (positive: DFT E_hull <= threshold) at 0.1 and 0 eV/atom: precision,
recall, F1, false-positive rate; mean absolute E_hull error of each judge; seconds per relaxation of each
judge on cells of 8-12 and 16-24 atoms.

Run:  .venv/bin/python benchmarks/bench_judge.py [--n 300 --seed 0 --max-atoms 24]
      [--wbm ../shared/data/wbm_sample.csv.gz] [--cache benchmarks/results/judge_relaxations.jsonl]
      [--out benchmarks/results/judge.json] [--report-only]
Each structure's three relaxations are appended to --cache as one JSON line when done; a rerun resumes
(structures already in the cache are skipped). --report-only computes the numbers from the cache as it is.
A second process with --reverse on the same cache works from the other end (two cores, half the wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from tessera.tools.evaluate import load_judge_params
from tessera.tools.hull import ReferenceHull, load_hull_params
from tessera.tools.measures import STABLE_E_HULL, is_stable
from tessera.tools.relax import SevenNetRelaxer, load_relax_params, relax_one

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLDS = (STABLE_E_HULL, 0.0)


def dft_energy_per_atom(hull: ReferenceHull, structure: Structure, formation: float) -> float:
    """DFT total energy per atom on the hull's scale: E_form + sum_i x_i mu_i (eV/atom)."""
    comp = structure.composition.fractional_composition
    return float(formation) + sum(comp[el] * hull.mu[el.symbol] for el in comp)


def select(wbm: Path, n: int, seed: int, max_atoms: int, hull: ReferenceHull) -> list[dict]:
    """The stratified slice, interleaved (stable, unstable, stable, ...) so any prefix stays balanced."""
    df = pd.read_csv(wbm)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    near: list[dict] = []
    above: list[dict] = []
    for pos in order:
        if len(near) >= n // 2 and len(above) >= n - n // 2:
            break
        row = df.iloc[int(pos)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                s = Structure.from_str(row["cif"], fmt="cif")
            except (ValueError, KeyError, IndexError):
                continue
        if len(s) > max_atoms or not {el.symbol for el in s.composition.elements} <= hull.elements:
            continue
        try:
            e_hull = hull.e_hull_value(s, dft_energy_per_atom(hull, s, row["formation_energy_per_atom"]))
        except Exception:  # noqa: BLE001 - a composition the hull cannot place is simply not in the slice
            continue
        rec = {"wbm_row": int(row.iloc[0]), "formula": s.composition.reduced_formula, "n_atoms": len(s),
               "e_hull_dft": e_hull, "cif": row["cif"]}
        (near if e_hull <= STABLE_E_HULL else above).append(rec)
    near, above = near[: n // 2], above[: n - n // 2]
    out: list[dict] = []
    for a, b in zip(near, above):
        out += [a, b]
    return out


def load_cache(path: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["wbm_row"]] = rec
            except (ValueError, KeyError):
                continue  # a line torn by a kill: that structure runs again
    return done


def judge_one(item: dict, hull: ReferenceHull, hull7: ReferenceHull, chg_params, sev: SevenNetRelaxer) -> dict:
    """The three relaxations of one structure and their E_hull values (None where a relaxation failed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = Structure.from_str(item["cif"], fmt="cif")
    rec = {k: item[k] for k in ("wbm_row", "formula", "n_atoms", "e_hull_dft")}

    def place(h: ReferenceHull, outcome) -> float | None:
        if outcome.error is not None or outcome.energy_per_atom is None or outcome.cif is None:
            return None
        try:
            return h.e_hull_value(Structure.from_str(outcome.cif, fmt="cif"), outcome.energy_per_atom)
        except Exception:  # noqa: BLE001 - e.g. MP2020 refusing an exotic anion: recorded as no verdict
            return None

    chg = relax_one(s, chg_params)
    rec.update(chgnet_e_hull=place(hull, chg), chgnet_seconds=chg.seconds, chgnet_steps=chg.steps,
               chgnet_error=chg.error)
    alone = sev.relax(s)
    rec.update(sevennet_e_hull=place(hull7, alone), sevennet_seconds=alone.seconds, sevennet_steps=alone.steps,
               sevennet_error=alone.error)
    rec["confirm_e_hull"] = None
    if is_stable(rec["chgnet_e_hull"]) and chg.cif is not None:
        conf = sev.relax(Structure.from_str(chg.cif, fmt="cif"))
        rec.update(confirm_e_hull=place(hull7, conf), confirm_seconds=conf.seconds, confirm_error=conf.error)
    return rec


def classification(truth: list[bool], pred: list[bool]) -> dict:
    tp = sum(t and p for t, p in zip(truth, pred))
    fp = sum(p and not t for t, p in zip(truth, pred))
    fn = sum(t and not p for t, p in zip(truth, pred))
    tn = sum(not t and not p for t, p in zip(truth, pred))
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if tp else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": prec, "recall": rec, "f1": f1,
            "fpr": fp / (fp + tn) if fp + tn else float("nan"), "n": len(truth)}


def report(records: list[dict]) -> dict:
    """Numbers from the cached records (a judge with no verdict counts as 'not stable')."""
    out: dict = {"n": len(records), "n_dft_within_0.1": sum(r["e_hull_dft"] <= STABLE_E_HULL for r in records)}
    for thr in THRESHOLDS:
        truth = [r["e_hull_dft"] <= thr + 1e-9 for r in records]
        chg = [is_stable(r["chgnet_e_hull"], threshold=thr) for r in records]
        sev = [is_stable(r["sevennet_e_hull"], threshold=thr) for r in records]
        # Confirmation runs on CHGNet's hits at 0.1 (the pipeline's rule); at a stricter level both must pass it.
        conf = [c and is_stable(r.get("confirm_e_hull"), threshold=thr) for c, r in zip(chg, records)]
        out[f"at_{thr:g}"] = {"chgnet": classification(truth, chg), "sevennet": classification(truth, sev),
                              "confirmed": classification(truth, conf)}
    for judge, key in (("chgnet", "chgnet_e_hull"), ("sevennet", "sevennet_e_hull"), ("confirm", "confirm_e_hull")):
        errs = [abs(r[key] - r["e_hull_dft"]) for r in records if r.get(key) is not None and math.isfinite(r[key])]
        out[f"mae_{judge}"] = statistics.fmean(errs) if errs else None
        out[f"n_mae_{judge}"] = len(errs)
    for judge in ("chgnet", "sevennet"):
        out[f"n_failed_{judge}"] = sum(r[f"{judge}_e_hull"] is None for r in records)
        for label, lo, hi in (("10", 8, 12), ("20", 16, 24)):
            secs = [r[f"{judge}_seconds"] for r in records if lo <= r["n_atoms"] <= hi and r.get(f"{judge}_error") is None]
            out[f"seconds_{judge}_{label}_atoms_median"] = statistics.median(secs) if secs else None
            out[f"seconds_{judge}_{label}_atoms_mean"] = statistics.fmean(secs) if secs else None
            out[f"n_seconds_{judge}_{label}_atoms"] = len(secs)
    conf_s = [r["confirm_seconds"] for r in records if r.get("confirm_seconds") is not None]
    out["confirm_seconds_per_hit_mean"] = statistics.fmean(conf_s) if conf_s else None
    out["n_confirm_runs"] = len(conf_s)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-atoms", type=int, default=24)
    ap.add_argument("--wbm", type=Path, default=ROOT.parent / "shared" / "data" / "wbm_sample.csv.gz")
    ap.add_argument("--cache", type=Path, default=RESULTS / "judge_relaxations.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS / "judge.json")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--reverse", action="store_true",
                    help="work from the end of the slice: a second process on the same --cache meets the first")
    args = ap.parse_args(argv)

    hull = ReferenceHull.default()
    judge = load_judge_params()
    hull7 = ReferenceHull.from_params(load_hull_params().model_copy(update={"scheme": judge.sevennet_scheme}))
    items = select(args.wbm, args.n, args.seed, args.max_atoms, hull)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    done = load_cache(args.cache)
    if not args.report_only:
        relax_params = load_relax_params()
        sev = SevenNetRelaxer(params=relax_params, model=judge.sevennet_model)
        t0 = time.perf_counter()
        for k, item in (reversed(list(enumerate(items))) if args.reverse else enumerate(items)):
            done.update(load_cache(args.cache))  # another process may share the cache
            if item["wbm_row"] in done:
                continue
            rec = judge_one(item, hull, hull7, relax_params, sev)
            line = json.dumps(rec) + "\n"
            with open(args.cache, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            done[item["wbm_row"]] = rec
            print(f"[{k + 1}/{len(items)}] {rec['formula']} dft {rec['e_hull_dft']:+.3f} chgnet "
                  f"{rec['chgnet_e_hull']} sevennet {rec['sevennet_e_hull']} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    records = [done[i["wbm_row"]] for i in items if i["wbm_row"] in done]
    out = {"command": "benchmarks/bench_judge.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "n_selected": len(items), "seed": args.seed, "max_atoms": args.max_atoms,
           "sevennet_model": judge.sevennet_model, "sevennet_scheme": judge.sevennet_scheme,
           "load_average": os.getloadavg(), **report(records)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
