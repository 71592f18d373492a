"""benchmarks/bench_judge.py still runs (2 WBM structures, real CHGNet and SevenNet) and resumes from its cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.test_smoke import COMMITTED, REPO, run_benchmark

WBM = REPO.parent / "shared" / "data" / "wbm_sample.csv.gz"


@pytest.mark.slow
@pytest.mark.skipif(not WBM.exists(), reason="the WBM sample lives in the developers' shared data folder")
def test_bench_judge_runs_and_resumes(tmp_path: Path) -> None:
    before = sorted(p.name for p in COMMITTED.iterdir())
    args = ("--n", 2, "--max-atoms", 8, "--cache", tmp_path / "cache.jsonl", "--out", tmp_path / "judge.json")
    run_benchmark("bench_judge", *args)
    got = json.loads((tmp_path / "judge.json").read_text())
    assert got["n"] == 2 and {"at_0.1", "at_0", "mae_chgnet", "mae_sevennet"} <= set(got)
    assert set(got["at_0.1"]) == {"chgnet", "sevennet", "confirmed"}
    lines = (tmp_path / "cache.jsonl").read_text().splitlines()
    run_benchmark("bench_judge", *args)  # resumes: nothing left to relax, nothing appended
    assert (tmp_path / "cache.jsonl").read_text().splitlines() == lines
    assert sorted(p.name for p in COMMITTED.iterdir()) == before
