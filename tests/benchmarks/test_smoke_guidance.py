"""benchmarks/bench_guidance.py runs on a tiny setting and writes its numbers (never into benchmarks/results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_guidance_smoke(tmp_path: Path) -> None:
    out = tmp_path / "guidance.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_guidance.py", "--cases", "boron,licoo_cn4", "--n", "2", "--steps", "5",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for case in ("boron", "licoo_cn4"):
        got = result["cases"][case]
        assert got["guided"]["n"] == got["unguided"]["n"] == 2
        assert 0 <= got["z_test"]["k_guided"] <= 2 and got["time_ratio_guided_over_unguided"] > 0
    # the plots of the same folders: a PNG per case and counts that add up
    plots = subprocess.run(
        [sys.executable, "benchmarks/plot_guidance.py", "--work", str(tmp_path / "work"), "--cases", "boron",
         "--out", str(tmp_path / "plots")],
        cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert plots.returncode == 0, plots.stderr[-2000:]
    summary = json.loads((tmp_path / "plots" / "summary.json").read_text())["boron"]
    assert (tmp_path / "plots" / "boron.png").stat().st_size > 0
    for arm in ("guided", "unguided"):
        assert summary[arm]["n_total"] == 2 and 0 <= summary[arm]["n_met"] <= summary[arm]["n"] <= 2
