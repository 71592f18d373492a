"""End-to-end: ``tessera evaluate`` on a folder of good and bad files, real CHGNet, a real store.

Invariants: every bad file gets its own clear error and is not relaxed; every good one is relaxed and
judged; the exit code is 0; stdout carries exactly one JSON object; the run is recorded with a valid
audit chain; a rerun into the same folder reuses the journalled relaxations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The installed console script, as a user runs it. (``python -m agents`` would put the working directory
# first on sys.path, where a store folder named ``store`` would shadow the ``store`` package.)
TESSERA = [str(Path(sys.executable).with_name("tessera"))]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESSERA_STORE": str(cwd / "default_store")}
    return subprocess.run([*TESSERA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    work = tmp_path_factory.mktemp("evaluate")
    out = work / "out"
    proc = run_cli(
        "evaluate", str(REPO / "tests/data/mixed_batch"), "--out", str(out), "--store", str(work / "store"),
        "--workers", "2", "--json", cwd=work,
    )
    return proc, work


def test_exit_zero_and_single_json_object(evaluated: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = evaluated
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    summary = json.loads(lines[0])
    assert summary["n_inputs"] == 6
    assert summary["n_errors"] == 3
    assert summary["n_relaxed"] == 3


def test_bad_files_named_and_good_ones_judged(evaluated: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, work = evaluated
    rows = [json.loads(line) for line in (work / "out/candidates.jsonl").read_text().splitlines()]
    by_name = {Path(r["source"]).name: r for r in rows}
    for bad in ("empty.cif", "malformed.cif", "overlapping.cif"):
        row = by_name[bad]
        assert row["error"], bad
        assert bad in row["error"], row["error"]  # the line names the file
        assert row["relaxed"] is False and row["e_hull"] is None
    # Materials Project's own e_above_hull (eV/atom) for these held-out materials.
    mp_e_hull = {"mp-1002107_LaRh.cif": 0.0, "mp-1016999_SrGeO3.vasp": 0.150, "mp-1017553_CdCo3N.extxyz": 0.0}
    for good, mp_value in mp_e_hull.items():
        row = by_name[good]
        assert row["error"] is None, row["error"]
        assert row["relaxed"] and row["energy_per_atom"] < 0
        # CHGNet-relaxed E_hull agrees with MP's DFT value within CHGNet's typical error, and
        # "stable" is exactly the 0.1 eV/atom rule.
        assert row["e_hull"] is not None and abs(row["e_hull"] - mp_value) < 0.06, (good, row["e_hull"])
        assert row["stable"] is (row["e_hull"] <= 0.1)
        # Known materials are in the reference pool: not novel, and the match names them.
        assert row["novel"] is False
        assert row["matched_id"] == good.split("_")[0]
        assert row["spacegroup"]
        for key in ("id", "formula", "prescreen", "converged", "cif"):
            assert key in row


def test_run_recorded_with_valid_audit_chain(evaluated: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, work = evaluated
    run_id = json.loads(proc.stdout)["run_id"]
    verify = run_cli("audit", "verify", run_id, "--store", str(work / "store"), cwd=work)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith("ok")  # results go to stdout (progress and diagnostics to stderr)
    search = run_cli("store", "search", "--store", str(work / "store"), "--run", run_id, "--json", cwd=work)
    assert search.returncode == 0, search.stderr
    found = json.loads(search.stdout)
    assert len(found["candidates"]) == 6


def test_rerun_reuses_journalled_relaxations(evaluated: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, work = evaluated
    journal = work / "out/relax_progress.jsonl"
    n_before = len(journal.read_text().splitlines())
    assert n_before == 3
    proc = run_cli(
        "evaluate", str(REPO / "tests/data/mixed_batch"), "--out", str(work / "out"), "--no-store",
        "--workers", "0", "--json", cwd=work,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(journal.read_text().splitlines()) == n_before  # nothing relaxed again
    assert json.loads(proc.stdout)["n_relaxed"] == 3


def test_missing_path_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_cli("evaluate", str(tmp_path / "nope"), "--no-store", "--json", cwd=tmp_path)
    assert proc.returncode != 0
    assert "no such file or folder" in json.loads(proc.stdout)["error"]  # --json: the error as JSON on stdout
    assert "no such file or folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_summary_counts_agree_with_the_candidate_rows(evaluated: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """summary.json is a pure function of candidates.jsonl; the prescreen-kept S.U.N. is a subset of S.U.N."""
    _, work = evaluated
    rows = [json.loads(line) for line in (work / "out/candidates.jsonl").read_text().splitlines()]
    summary = json.loads((work / "out/summary.json").read_text())
    passed = [bool(r["prescreen"]) and all(o["passed"] for o in r["prescreen"].values()) for r in rows]
    sun = [bool(r["stable"]) and bool(r["unique"]) and bool(r["novel"]) for r in rows]
    assert summary["n_prescreen_passed"] == sum(passed)
    assert summary["n_stable"] == sum(bool(r["stable"]) for r in rows)
    assert summary["n_sun"] == sum(sun)
    assert summary["n_sun_prescreen_passed"] == sum(p and s for p, s in zip(passed, sun)) <= summary["n_sun"]
    at_or_below = [r["e_hull"] is not None and r["e_hull"] <= 0.0 for r in rows]
    assert summary["n_sun_le0"] == sum(h and s for h, s in zip(at_or_below, sun)) <= summary["n_stable_le0"]
