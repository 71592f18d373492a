"""End-to-end: ``tessera campaign run/list/status/resume`` and ``tessera design`` as a user runs them.

Real components: the shipped generator (20 reverse steps), CHGNet, the shipped hull, a LanceDB store and
the SQLite checkpointer in temp folders. Invariants: stdout holds exactly one JSON object under --json; a
finished campaign lists as finished; resuming a finished session runs no tool call again; bad campaign
files and impossible goals are one line and a non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tessera.agents.ledger import ToolLedger

TESSERA = [str(Path(sys.executable).with_name("tessera"))]
TINY_CAMPAIGN = """\
name: tiny-licoo
spec:
  chemistry: {elements: [Li, Co, O], n_elements: 3, atoms: 8}
  seed: 3
rounds: 1
samples_per_round: 2
relaxations: 1
options: {steps: 20, relax_steps: 30, threads: 1, max_pictures: 1}
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESSERA_STORE": str(cwd / "default_store")}
    return subprocess.run([*TESSERA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    work = tmp_path_factory.mktemp("campaign")
    (work / "tiny.yaml").write_text(TINY_CAMPAIGN)
    proc = run_cli("campaign", "run", "tiny.yaml", "--root", "root", "--store", "store", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return work, json.loads(proc.stdout)


def test_campaign_run_prints_one_json_object_and_finishes(campaign: tuple[Path, dict]) -> None:
    work, out = campaign
    assert out["status"] == "finished" and out["rounds"][0]["n_sampled"] == 2
    assert out["session_id"].startswith("tiny-licoo-")
    assert Path(out["report_path"]).is_file()
    assert len(out["candidates"]) == 2


def test_campaign_list_and_status_read_the_checkpoint(campaign: tuple[Path, dict]) -> None:
    work, out = campaign
    listed = run_cli("campaign", "list", "--root", "root", "--json", cwd=work)
    assert listed.returncode == 0, listed.stderr
    sessions = json.loads(listed.stdout)["sessions"]
    assert [(s["session_id"], s["status"], s["rounds_done"]) for s in sessions] == [(out["session_id"], "finished", 1)]
    status = run_cli("campaign", "status", out["session_id"], "--root", "root", cwd=work)
    assert status.returncode == 0 and "status: finished" in status.stdout


def test_resuming_a_finished_session_runs_nothing_again(campaign: tuple[Path, dict]) -> None:
    work, out = campaign
    before = ToolLedger(work / "root" / out["session_id"]).entries()
    again = run_cli("campaign", "resume", out["session_id"], "--root", "root", "--store", "store", "--json", cwd=work)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["status"] == "finished"
    assert ToolLedger(work / "root" / out["session_id"]).entries() == before


@pytest.mark.parametrize(("text", "needle"), [
    ("name: x\nrounds: 1\n", "exactly one of goal, spec, spec_file"),
    ("name: x\ngoal: kagome Mn\nschedule: 'every night'\n", "not a cron expression"),
    ("name: x\ngoal: kagome Mn\nrounds: 0\n", "rounds"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_bad_campaign_files_are_one_line(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    proc = run_cli("campaign", "run", "bad.yaml", "--root", "root", "--store", "store", cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_unknown_session_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("campaign", "resume", "nope-123", "--root", "root", "--store", "store", cwd=tmp_path)
    assert proc.returncode == 1 and "no campaign session 'nope-123'" in proc.stderr


def test_design_runs_a_goal_end_to_end(tmp_path: Path) -> None:
    proc = run_cli("design", "Li-Co-O with 8 atoms per cell", "--n", "2", "--relaxations", "1", "--steps", "20",
                   "--planner", "offline", "--out", "session", "--store", "store", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "finished" and out["plan"]["backend"] == "offline"
    assert out["spec"]["chemistry"]["atoms"] == 8 and out["spec"]["budgets"]["samples"] == 2
    assert sum(r["n_relaxed"] for r in out["rounds"]) <= 1
    assert (tmp_path / "session" / "report.html").is_file()


def test_design_refuses_an_impossible_goal_in_one_line(tmp_path: Path) -> None:
    proc = run_cli("design", "a kagome net of Xq", "--planner", "offline", "--out", "s", "--store", "store",
                   cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert not (tmp_path / "s").exists()  # refused before any work
