"""Benchmark the candidate store: insert rate, filtered and nearest-neighbour query latency, size.

Two parts:

1. The real recording path: ``RunHandle.add_candidates`` with Candidates built from real pool structures
   (CIF parse, fingerprint, audit event with fsync, one LanceDB commit per batch).
2. Scale: synthetic rows at each size (default 10k and 1M). Each row is a real pool structure's data
   (formula, elements, CIF text) with its fingerprint plus small Gaussian noise (renormalised), so
   vectors are distributed like real ones and each pool structure has size/19,952 near-copies.
   Ingest rate, then filtered-query latency (formula, elements + E_hull ceiling, chemical system,
   one id), nearest-neighbour latency and recall@10 (IVF_PQ vs exact), and bytes on disk per 1,000
   rows. At 100k rows and more an IVF_PQ vector index and scalar indexes are built first (timed).

Prints a table and writes benchmarks/results/store.json (or --out). Usage:

    .venv/bin/python benchmarks/bench_store.py                      # 10k and 1M (about 30-60 min)
    .venv/bin/python benchmarks/bench_store.py --sizes 10000 --real 500   # quick
    .venv/bin/python benchmarks/bench_store.py --sizes 500 --real 20 --synth-pool 200 --out /tmp/store.json  # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from tessera.store import Store
from tessera.store.provenance import tool_versions
from tessera.store.schema import CANDIDATE_SCHEMA
from tessera.tools.candidate import Candidate
from tessera.tools.fingerprint import FINGERPRINT_DIM, FINGERPRINT_VERSION, fingerprint_from_arrays
from tessera.tools.measures import STABLE_E_HULL
from tessera.tools.paths import REPO_ROOT
from tessera.tools.pool import load_pool, row_arrays, row_to_structure

RESULTS = REPO_ROOT / "benchmarks" / "results" / "store.json"
CHUNK = 50_000


def _median_ms(fn: Callable[[], Any], args: list[Any], warmup: int = 2) -> float:
    for a in args[:warmup]:
        fn(a)
    times = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        times.append((time.perf_counter() - t) * 1e3)
    return round(statistics.median(times), 2)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_real_path(pool: Any, n: int, batch: int, workdir: Path) -> dict[str, Any]:
    """Candidates per second through RunHandle.add_candidates (what `tessera evaluate` calls)."""
    store = Store.open(workdir / "real")
    rows = pool.sample(n=n, random_state=0)
    cands = []
    for _, row in rows.iterrows():
        c = Candidate.from_structure(row_to_structure(row), source=row["material_id"])
        c.spacegroup_number = int(row["spacegroup"])
        c.spacegroup = f"#{int(row['spacegroup'])}"  # the analyze stage sets it; not re-derived here
        c.e_hull = float(row["e_above_hull_mp"])
        cands.append(c)
    t = time.perf_counter()
    with store.start_run("benchmark", {"n": n, "batch": batch}) as run:
        for k in range(0, n, batch):
            run.add_candidates(cands[k : k + batch])
    secs = time.perf_counter() - t
    size = _dir_bytes(workdir / "real")
    return {
        "n": n,
        "batch": batch,
        "seconds": round(secs, 2),
        "candidates_per_s": round(n / secs, 1),
        "bytes_per_1000": int(size / (n / 1000)),
    }


class Synth:
    """Synthetic candidate rows built from the pool (see module docstring)."""

    def __init__(self, pool: Any, seed: int = 0) -> None:
        self.pool = pool.reset_index(drop=True)
        self.rng = np.random.default_rng(seed)
        t = time.perf_counter()
        self.fp = np.stack([fingerprint_from_arrays(*row_arrays(r)) for _, r in self.pool.iterrows()])
        self.cif = [row_to_structure(r).to(fmt="cif") for _, r in self.pool.iterrows()]
        self.prep_seconds = time.perf_counter() - t

    def table(self, start: int, n: int, noise: float = 0.002) -> pa.Table:
        m = len(self.pool)
        src = (np.arange(start, start + n) * 7919) % m  # spread the copies of each structure
        vec = self.fp[src] + self.rng.normal(0.0, noise, size=(n, FINGERPRINT_DIM)).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        p = self.pool.iloc[src]
        e_hull = np.round(self.rng.gamma(1.5, 0.08, size=n) - 0.02, 4)
        ids = [f"s{start + i:08d}" for i in range(n)]
        cifs = [self.cif[j] for j in src]
        formulas = p["formula"].tolist()
        cand_json = [
            json.dumps({"id": i, "formula": f, "e_hull": float(e), "source": "synthetic", "relaxed": True},
                       separators=(",", ":"))
            for i, f, e in zip(ids, formulas, e_hull)
        ]
        now = dt.datetime.now(dt.timezone.utc)
        cols: dict[str, Any] = {f.name: pa.nulls(n, type=f.type) for f in CANDIDATE_SCHEMA}
        cols.update(
            id=pa.array(ids), run_id=pa.array([f"bench-{start // 100_000:03d}"] * n), round=pa.array(np.zeros(n, np.int32)),
            recorded_at=pa.array([now] * n, type=pa.timestamp("us", tz="UTC")), source=pa.array(["synthetic"] * n),
            formula=pa.array(formulas), elements=pa.array([list(x) for x in p["elements"]], type=pa.list_(pa.string())),
            chemsys=pa.array(p["chemsys"].tolist()), n_elements=pa.array([len(x) for x in p["elements"]], type=pa.int32()),
            n_atoms=pa.array(p["n_atoms"].to_numpy().astype(np.int32)),
            spacegroup_number=pa.array(p["spacegroup"].to_numpy().astype(np.int32)),
            cif=pa.array(cifs), initial_cif=pa.array(cifs), relaxed=pa.array(np.ones(n, bool)),
            energy_per_atom=pa.array(self.rng.normal(-5, 1, n)), e_hull=pa.array(e_hull),
            stable=pa.array(e_hull <= STABLE_E_HULL), candidate_json=pa.array(cand_json),
            content_hash=pa.array([f"{i:064x}" for i in range(start, start + n)]),
            has_vector=pa.array(np.ones(n, bool)),
            vector=pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel(), type=pa.float32()), FINGERPRINT_DIM),
            review_status=pa.array(["pending"] * n),
        )
        return pa.Table.from_pydict({f.name: cols[f.name] for f in CANDIDATE_SCHEMA}, schema=CANDIDATE_SCHEMA)


def bench_size(synth: Synth, n: int, workdir: Path, n_queries: int = 20) -> dict[str, Any]:
    path = workdir / f"s{n}"
    store = Store.open(path)
    t = time.perf_counter()
    for start in range(0, n, CHUNK):
        store.add_rows(synth.table(start, min(CHUNK, n - start)))
    ingest = time.perf_counter() - t
    out: dict[str, Any] = {"rows": n, "ingest_seconds": round(ingest, 1), "ingest_rows_per_s": int(n / ingest)}

    rng = np.random.default_rng(1)
    q_rows = synth.pool.iloc[rng.choice(len(synth.pool), size=n_queries, replace=False)]
    formulas = q_rows["formula"].tolist()
    chemsys = q_rows["chemsys"].tolist()
    elem_pairs = [",".join(list(e)[:2]) for e in q_rows["elements"]]
    ids = [f"s{int(i):08d}" for i in rng.integers(0, n, size=n_queries)]
    queries = []
    for _, r in q_rows.iterrows():
        s = row_to_structure(r)
        s.perturb(0.01)
        queries.append(s)

    def filtered(label: str) -> dict[str, float]:
        return {
            f"{label}formula_top20_ms": _median_ms(lambda f: store.search(formula=f, limit=20), formulas),
            f"{label}elements_ehull_top20_ms": _median_ms(
                lambda e: store.search(elements=e, max_e_hull=0.05, limit=20), elem_pairs),
            f"{label}chemsys_count_ms": _median_ms(lambda c: store.count(chemsys=c), chemsys),
            f"{label}get_by_id_ms": _median_ms(lambda i: store.get(i), ids),
        }

    out.update(filtered(""))
    exact_top: list[list[str]] = []
    t_exact = []
    for q in queries:
        t = time.perf_counter()
        exact_top.append([h.id for h in store.nearest(q, k=10)])
        t_exact.append((time.perf_counter() - t) * 1e3)
    out["nn_exact_k10_ms"] = round(statistics.median(t_exact), 2)
    if n >= 100_000:
        t = time.perf_counter()
        store.create_vector_index(num_partitions=256)
        out["ivf_pq_build_seconds"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        store.create_scalar_indexes()
        out["scalar_index_build_seconds"] = round(time.perf_counter() - t, 1)
        out.update(filtered("indexed_"))
        ann_top: list[list[str]] = []
        t_ann = []
        for q in queries:
            t = time.perf_counter()
            ann_top.append([h.id for h in store.nearest(q, k=10, nprobes=20, refine_factor=10)])
            t_ann.append((time.perf_counter() - t) * 1e3)
        out["nn_ivfpq_k10_ms"] = round(statistics.median(t_ann), 2)
        out["nn_ivfpq_recall_at_10"] = round(
            float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ann_top, exact_top)])), 3
        )
        out["ivf_pq"] = {"num_partitions": 256, "num_sub_vectors": FINGERPRINT_DIM // 16, "sample_rate": 64,
                         "max_iterations": 20, "nprobes": 20, "refine_factor": 10}
    size = _dir_bytes(path)
    out["bytes_on_disk"] = size
    out["bytes_per_1000"] = int(size / (n / 1000))
    out["vector_bytes_per_1000_raw"] = FINGERPRINT_DIM * 4 * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--real", type=int, default=2000, help="candidates through the real recording path")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--synth-pool", type=int, default=None,
                    help="synthetic rows copy only this many pool structures (default: all; fewer makes preparation quick)")
    args = ap.parse_args()
    # pymatgen warns about missing electronegativities (noble gases) while writing CIFs: noise here.
    warnings.filterwarnings("ignore", category=UserWarning)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store_"))
    workdir.mkdir(parents=True, exist_ok=True)
    pool = load_pool()
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "versions": tool_versions(),
        "fingerprint_dim": FINGERPRINT_DIM,
        "fingerprint_version": FINGERPRINT_VERSION,
        "load_average_at_start": list(__import__("os").getloadavg()),
        "note": "2 shared cores: other jobs (model training, benchmarks) ran at the same time",
    }
    try:
        results["real_path"] = bench_real_path(pool, args.real, args.batch, workdir)
        print(f"real path: {results['real_path']}", flush=True)
        synth = Synth(pool if args.synth_pool is None else pool.sample(n=min(args.synth_pool, len(pool)), random_state=0))
        results["synthetic_prep_seconds"] = round(synth.prep_seconds, 1)
        if args.synth_pool is not None:
            results["synthetic_pool_structures"] = len(synth.pool)
        results["scale"] = []
        for n in args.sizes:
            r = bench_size(synth, n, workdir)
            results["scale"].append(r)
            print(f"{n} rows: {r}", flush=True)
            shutil.rmtree(workdir / f"s{n}", ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
