"""Start-up time of the ``tessera`` command: each command in a fresh process, median of N (default 5).

Two groups:

1. ``--help`` of the top level and of every command group a chemist meets first (store, review, audit,
   sample, evaluate). Target (issue 20): under 0.5 s each. The CLI imports the heavy stack (torch,
   CHGNet, pymatgen, LanceDB, Dask) only inside the commands that use it, so help is Typer and Rich alone.
2. Commands that open a store (a small temporary one built here first: one run, a few candidates):
   ``store runs``, ``store search``, ``audit verify``. These must import LanceDB, whose own import is the
   floor; ``python -c "import lancedb"`` is timed beside them so the numbers say what is ours.

Wall-clock times of a subprocess, so they include interpreter start-up; a busy machine inflates them (run
alone for numbers to quote). Usage:

    .venv/bin/python benchmarks/bench_startup.py                 # prints the table
    .venv/bin/python benchmarks/bench_startup.py --repeat 3 --json --out /tmp/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HELP_TARGET_S = 0.5
"""s: the issue-20 target for ``--help``."""

HELP_COMMANDS: list[list[str]] = [
    ["--help"],
    ["store", "search", "--help"],
    ["store", "export", "--help"],
    ["review", "approve", "--help"],
    ["audit", "export", "--help"],
    ["sample", "--help"],
    ["evaluate", "--help"],
]


def tessera_argv() -> list[str]:
    """The console script beside this interpreter, else the same entry point through ``python -c``."""
    script = Path(sys.executable).parent / "tessera"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from tessera.cli import main; main()"]


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds (user + system) of one fresh process, and its exit code (output
    discarded). CPU time is what the start-up costs; wall time adds waiting when the cores are busy."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        sys.stderr.write(f"warning: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}\n")
    return seconds, cpu, proc.returncode


def measure(argv: list[str], env: dict[str, str], repeat: int) -> dict[str, Any]:
    walls, cpus, codes = zip(*(time_once(argv, env) for _ in range(repeat)))
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3), "cpu_median_s": round(statistics.median(cpus), 3), "n": repeat,
            "exit_codes": sorted(set(codes))}


def build_store(root: Path) -> str:
    """A small real store: one evaluate run with 6 rock-salt candidates. Returns the run id."""
    import numpy as np
    from pymatgen.core import Lattice, Structure

    from tessera.store import Store
    from tessera.tools.candidate import Candidate

    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cands = []
    for k, (a, b) in enumerate([("Na", "Cl"), ("Mg", "O"), ("Li", "F"), ("Ca", "S"), ("K", "Br"), ("Na", "F")]):
        s = Structure(Lattice.cubic(4.0 + 0.3 * k), [a] * 4 + [b] * 4, np.vstack([fcc, fcc + 0.5]) % 1.0)
        c = Candidate.from_structure(s, source="bench_startup")
        c.id = f"b{k:03d}"
        c.relaxed, c.energy_per_atom, c.e_hull = True, -4.0, 0.02 * k
        c.stable = c.e_hull <= 0.1
        cands.append(c)
    with Store.open(root).start_run("evaluate", {"n": len(cands)}, goal="bench_startup") as run:
        run.add_candidates(cands)
    return run.run_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per command (the median is reported)")
    ap.add_argument("--no-store", action="store_true", help="time only the --help commands")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = ap.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    tessera = tessera_argv()
    rows: list[dict[str, Any]] = []
    for cmd in HELP_COMMANDS:
        rows.append({"group": "help", "command": "tessera " + " ".join(cmd), **measure(tessera + cmd, env, args.repeat)})

    workdir = None
    if not args.no_store:
        workdir = Path(tempfile.mkdtemp(prefix="bench_startup_"))
        try:
            store = workdir / "store"
            run_id = build_store(store)
            env_store = {**env, "TESSERA_STORE": str(store)}
            for cmd in (["store", "runs"], ["store", "search"], ["audit", "verify", run_id]):
                shown = " ".join(cmd).replace(run_id, "RUN")
                rows.append({"group": "store", "command": f"tessera {shown}", **measure(tessera + cmd, env_store, args.repeat)})
            rows.append({"group": "floor", "command": 'python -c "import lancedb"',
                         **measure([sys.executable, "-c", "import lancedb"], env, args.repeat)})
            rows.append({"group": "floor", "command": 'python -c "pass"',
                         **measure([sys.executable, "-c", "pass"], env, args.repeat)})
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    helps = [r for r in rows if r["group"] == "help"]
    result = {
        "benchmark": "startup",
        "repeat": args.repeat,
        "help_target_s": HELP_TARGET_S,
        "help_all_under_target": all(r["median_s"] < HELP_TARGET_S for r in helps),
        "rows": rows,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        print(json.dumps(result))
        return
    width = max(len(r["command"]) for r in rows)
    print(f"{'command':<{width}}  median s   min s   max s   CPU s   (wall; fresh process each, n = {args.repeat})")
    for r in rows:
        flag = ""
        if r["group"] == "help":
            flag = "  ok" if r["median_s"] < HELP_TARGET_S else f"  over {HELP_TARGET_S} s"
        print(f"{r['command']:<{width}}  {r['median_s']:8.3f}  {r['min_s']:6.3f}  {r['max_s']:6.3f}  "
              f"{r['cpu_median_s']:6.3f}{flag}")
    print(f"--help under {HELP_TARGET_S} s: {'yes' if result['help_all_under_target'] else 'NO'}; "
          f"load average {result['machine']['load_avg_1m']:.2f} on {result['machine']['cpus']} cores")


if __name__ == "__main__":
    main()
