"""``tessera evaluate --confirm sevennet``: offline, the second judge's numbers in the JSON, the records and the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tessera.tools.pool import load_pool, row_to_structure

TESSERA = [str(Path(sys.executable).with_name("tessera"))]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESSERA_STORE": str(cwd / "default_store")}
    return subprocess.run([*TESSERA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_confirm_sevennet_records_both_judges(tmp_path: Path) -> None:
    pool = load_pool()
    row_to_structure(pool[pool.material_id == "mp-862658"].iloc[0]).to(filename=str(tmp_path / "LiCu3.cif"))
    proc = run_cli("evaluate", str(tmp_path / "LiCu3.cif"), "--out", str(tmp_path / "out"), "--store",
                   str(tmp_path / "store"), "--workers", "0", "--exclude-id", "mp-862658", "--confirm", "sevennet",
                   "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["n_stable"] == 1 and got["n_confirm_tried"] == 1 and got["n_confirmed"] == 1
    assert got["n_sun_confirmed"] == got["n_sun"] and "n_sun_prototype" in got
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["params"]["confirm"] == "sevennet" and summary["n_confirmed"] == 1
    rec = json.loads((tmp_path / "out" / "candidates.jsonl").read_text().splitlines()[0])
    assert rec["e_hull_confirm"] is not None and rec["confirmed"] is True and rec["plausible"] is True

    from tessera.store import Store

    stored = Store.open(tmp_path / "store").get(rec["id"])
    assert stored.confirmed is True and stored.e_hull_confirm == rec["e_hull_confirm"]

    # The run report shows every level: stable, on the hull, confirmed, and both novelty levels.
    report = run_cli("audit", "export", got["run_id"], "--html", str(tmp_path / "r.html"), "--store",
                     str(tmp_path / "store"), "--max-pictures", "0", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    for line in ("S.U.N. confirmed", "confirmed (both judges within the threshold)", "E_hull, second judge",
                 "prototype-novel", "on or below the hull"):
        assert line in page


def test_unknown_second_judge_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.cif").write_text("")
    proc = run_cli("evaluate", str(tmp_path / "x.cif"), "--confirm", "mace", "--no-store", cwd=tmp_path)
    assert proc.returncode != 0
    assert "--confirm mace" in proc.stderr and "Traceback" not in proc.stderr
