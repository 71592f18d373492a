"""`tessera --help` answers at once: importing the CLI and building the help of every command (and group)
imports none of the heavy stack. Checked in a fresh interpreter through ``sys.modules``, which is
deterministic where a timing is not (benchmarks/bench_startup.py prints the times)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY: tuple[str, ...] = (
    "torch", "chgnet", "sevenn", "lancedb", "pyarrow", "dask", "distributed", "pymatgen.core.structure",
    "scipy", "matplotlib", "langgraph", "optuna",
)
"""Modules that cost from 0.1 s to several seconds to import; each belongs inside the command that uses it."""

_PROBE = r"""
import contextlib, io, json, sys

import typer

from tessera.cli import app  # imports every command module, as the console script does

root = typer.main.get_command(app)
paths, todo = [], [[]]
while todo:  # every command and group, depth first
    path = todo.pop()
    paths.append(path)
    cmd = root
    for name in path:
        cmd = cmd.commands[name]
    todo.extend(path + [name] for name in sorted(getattr(cmd, "commands", {}) or {}))

codes = {}
for path in paths:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        try:
            rv = app(path + ["--help"], standalone_mode=False)
        except SystemExit as exc:
            rv = exc.code
    codes[" ".join(path) or "(top)"] = [rv, "Usage:" in out.getvalue()]
print(json.dumps({"codes": codes, "modules": sorted(sys.modules)}))
"""


def _probe() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_no_heavy_module() -> None:
    got = _probe()
    codes = got["codes"]
    # The walk reached the commands a chemist meets first, and each printed its help.
    for name in ("(top)", "store", "store search", "store export", "review approve", "audit export", "sample",
                 "evaluate"):
        assert name in codes, sorted(codes)
    assert all(rv in (0, None) and printed for rv, printed in codes.values()), codes
    loaded = set(got["modules"])
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"--help imported {heavy}"
    assert "pymatgen.core.structure" not in loaded and "torch" not in loaded  # the two the issue names first


def test_bench_startup_runs() -> None:
    """benchmarks/bench_startup.py still runs (help commands only, one process each; the times are not judged)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_startup.py"
    proc = subprocess.run([sys.executable, str(script), "--repeat", "1", "--no-store", "--json"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    commands = {r["command"] for r in got["rows"]}
    assert {"tessera --help", "tessera store search --help"} <= commands
    assert all(r["exit_codes"] == [0] and r["median_s"] > 0 and "cpu_median_s" in r for r in got["rows"])
