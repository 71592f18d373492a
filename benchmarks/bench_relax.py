"""Relaxation throughput: CHGNet relaxations per minute with 1 and 2 Dask workers, 10- and 20-atom cells.

Inputs: pool test-split structures with exactly 10 and 20 atoms (a seeded sample), each rattled by a
seeded Gaussian of 0.05 A per Cartesian component so there is work to do (their DFT geometries are
already near CHGNet's minimum). Settings: configs/relax.yaml (fmax 0.05 eV/A, FIRE, Frechet cell filter).

Besides wall-clock throughput it reports CPU seconds per relaxation (user + system time of the
relaxing processes), which a busy machine disturbs much less than wall time.

One LocalCluster per worker count; every worker loads CHGNet before the clock starts (a warm-up), so the
numbers are steady-state throughput. The machine may be shared: compare the ratios within one run, and
read the load average printed beside them.

Rows with workers = 0 relax in-process without Dask: the reference for Dask's own overhead.

Run: .venv/bin/python benchmarks/bench_relax.py [--n 6] [--seed 0] [--workers 0 1 2] [--out PATH]
Writes benchmarks/results/relax.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from tessera.tools.dask_cluster import dask_client
from tessera.tools.pool import load_pool, row_to_structure
from tessera.tools.relax import load_chgnet, load_relax_params, relax_many

RESULTS = Path(__file__).resolve().parent / "results" / "relax.json"


def rattle(structure: Structure, amplitude: float, seed: int) -> Structure:
    rng = np.random.default_rng(seed)
    out = structure.copy()
    for i, delta in enumerate(rng.normal(0.0, amplitude, size=(len(out), 3))):
        out.translate_sites([i], delta, frac_coords=False, to_unit_cell=True)
    return out


def pick(n_atoms: int, n: int, seed: int) -> tuple[list[str], list[Structure]]:
    df = load_pool("test")
    df = df[df["n_atoms"] == n_atoms].sort_values("material_id").reset_index(drop=True)
    rows = np.random.default_rng(seed).choice(len(df), size=min(n, len(df)), replace=False)
    ids = [str(df.loc[int(k), "material_id"]) for k in rows]
    structures = [rattle(row_to_structure(df.loc[int(k)]), 0.05, seed + j) for j, k in enumerate(rows)]
    return ids, structures


def _warm() -> str:
    load_chgnet()
    return "ok"


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (run on each worker through ``client.run``)."""
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="structures per cell size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                    help="0 = in-process, no Dask (the reference for Dask's overhead)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="result JSON")
    args = ap.parse_args()

    params = load_relax_params()
    batches = {size: pick(size, args.n, args.seed) for size in (10, 20)}
    runs = []
    def timed(structures: list[Structure], client) -> tuple[dict, float, float]:
        """Outcomes, wall seconds, and CPU seconds spent by the relaxing processes."""
        cpu0 = _cpu_seconds() if client is None else sum(client.run(_cpu_seconds).values())
        t0 = time.perf_counter()
        if client is None:
            outcomes = dict(relax_many(structures, params, workers=0))
        else:
            outcomes = dict(relax_many(structures, params, address=client.scheduler.address))
        wall = time.perf_counter() - t0
        cpu1 = _cpu_seconds() if client is None else sum(client.run(_cpu_seconds).values())
        return outcomes, wall, cpu1 - cpu0

    for workers in args.workers:
        with contextlib.ExitStack() as stack:
            client = None
            if workers == 0:
                _warm()
            else:
                client = stack.enter_context(dask_client(workers=workers))
                client.wait_for_workers(workers, timeout=120)
                client.run(_warm)  # every worker loads CHGNet before timing
            for size, (ids, structures) in batches.items():
                load = os.getloadavg()[0]
                outcomes, wall, cpu = timed(structures, client)
                secs = [o.seconds for o in outcomes.values()]
                run = {
                    "workers": workers,
                    "n_atoms": size,
                    "n": len(structures),
                    "wall_s": round(wall, 2),
                    "relaxations_per_min": round(60.0 * len(structures) / wall, 2),
                    "median_s_per_relaxation": round(statistics.median(secs), 2),
                    "cpu_s_per_relaxation": round(cpu / len(structures), 2),
                    "relaxations_per_cpu_min": round(60.0 * len(structures) / cpu, 2),
                    "median_steps": statistics.median(o.steps for o in outcomes.values()),
                    "converged": sum(o.converged for o in outcomes.values()),
                    "failed": sum(o.error is not None for o in outcomes.values()),
                    "load_avg_1min_before": round(load, 2),
                }
                runs.append(run)
                print(f"workers={workers} n_atoms={size}: {run['relaxations_per_min']:.1f} relax/min "
                      f"(wall {wall:.1f} s for {len(structures)}, median {run['median_s_per_relaxation']} s, "
                      f"{run['cpu_s_per_relaxation']} CPU-s each, "
                      f"{run['median_steps']} steps, converged {run['converged']}/{len(structures)}, "
                      f"load {load:.1f})", flush=True)

    ratios = {}
    for size in (10, 20):
        by_w = {r["workers"]: r["relaxations_per_min"] for r in runs if r["n_atoms"] == size}
        if 1 in by_w and 2 in by_w:
            ratios[f"speedup_2_vs_1_workers_{size}_atoms"] = round(by_w[2] / by_w[1], 2)
    for size_pair in [(10, 20)]:
        for w in args.workers:
            a = next((r for r in runs if r["workers"] == w and r["n_atoms"] == size_pair[0]), None)
            b = next((r for r in runs if r["workers"] == w and r["n_atoms"] == size_pair[1]), None)
            if a and b:
                ratios[f"rate_10_over_20_atoms_{w}_workers"] = round(a["relaxations_per_min"] / b["relaxations_per_min"], 2)
    for k, v in ratios.items():
        print(f"{k}: {v}")

    result = {
        "what": "CHGNet 0.3.0 relaxations per minute (FIRE + FrechetCellFilter), Dask LocalCluster, 1 thread/worker",
        "inputs": {"split": "test", "sizes": {str(k): v[0] for k, v in batches.items()},
                   "rattle_A": 0.05, "seed": args.seed},
        "params": params.model_dump(),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "ratios": ratios,
        "note": "shared machine: compare ratios within this run; load_avg is the 1-minute load before each run",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
