"""Reliability with real processes: SIGKILL mid-write loses nothing acknowledged; two writers at once
both succeed with no lost rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tessera.store import Store

CHILD = Path(__file__).with_name("writer_child.py")


def _spawn(store_dir: Path, tag: str, batches: int, size: int, seed: int) -> subprocess.Popen[str]:
    # Compacting after every commit makes the two writers' compactions, appends and review updates collide,
    # so the commit-conflict retry path is exercised, not only LanceDB's own rebasing of appends.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "TESSERA_COMPACT_EVERY": "1"}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store_dir), tag, str(batches), str(size), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def _parse(lines: list[str]) -> tuple[str | None, list[str], list[int]]:
    run_id, ids, seqs = None, [], []
    reviewed: list[str] = []
    for line in lines:
        if not line.endswith("\n"):
            continue  # a line the child had not finished printing was not an acknowledgement
        parts = line.split()
        if parts[:1] == ["RUN"]:
            run_id = parts[1]
        elif parts[:1] == ["ACK"]:
            ids.extend(parts[1:])
        elif parts[:1] == ["EVT"]:
            seqs.append(int(parts[1]))
        elif parts[:1] == ["REV"]:
            reviewed.append(parts[1])
    return run_id, ids, seqs, reviewed


def test_sigkill_loses_no_acknowledged_row_or_event(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    rng = np.random.default_rng(1)
    acked: dict[str, list[str]] = {}
    runs: dict[str, tuple[str, list[int]]] = {}
    for round_, tag in enumerate(("K1", "K2", "K3")):
        proc = _spawn(store_dir, tag, batches=500, size=3, seed=round_)
        lines: list[str] = []
        assert proc.stdout is not None
        n_ack_target = int(rng.integers(3, 8))
        while sum(line.startswith("ACK") for line in lines) < n_ack_target:
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
        time.sleep(float(rng.uniform(0.0, 0.08)))  # land the kill at a different point of a write each time
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        lines.extend(rest.splitlines(keepends=True))
        assert proc.returncode == -signal.SIGKILL
        run_id, ids, seqs, _ = _parse(lines)
        assert run_id and ids
        acked[tag] = ids
        runs[tag] = (run_id, seqs)

    store = Store.open(store_dir)  # readable after three kills
    for tag, ids in acked.items():
        run_id, seqs = runs[tag]
        stored = {c.id for c in store.search(run_id=run_id, limit=None, sort_by="none")}
        assert set(ids) <= stored, f"lost acknowledged rows of {tag}: {sorted(set(ids) - stored)[:5]}"
        log = store.audit_log(run_id)
        assert log.verify().ok  # the chain is intact (a torn last line, if any, is ignored and noted)
        logged = {e.seq: e for e in log.events()}
        assert all(s in logged and logged[s].kind == "note" for s in seqs)
        assert store.get_run(run_id).status == "running"  # killed: never finished, and the row says so
    # The store still takes writes, and the killed run's log can be continued.
    with store.start_run("after", {}) as run:
        run.add_candidates([])
    store.resume_run(runs["K1"][0]).log_event("note", {"resumed": True})
    assert store.audit_log(runs["K1"][0]).verify().ok


def test_two_writers_at_once_both_succeed(tmp_path: Path) -> None:
    store_dir = tmp_path / "fresh"  # both processes also race to create the store
    procs = {tag: _spawn(store_dir, tag, batches=12, size=4, seed=i) for i, tag in enumerate("AB")}
    results = {}
    for tag, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"writer {tag} failed: {err[-2000:]}"
        results[tag] = _parse(out.splitlines(keepends=True))
        assert out.rstrip().endswith("DONE")
    store = Store.open(store_dir)
    assert store.count() == 2 * 12 * 4
    for tag, (run_id, ids, _seqs, reviewed) in results.items():
        assert len(ids) == 48 and len(reviewed) == 12
        assert {c.id for c in store.search(run_id=run_id, review_status="approved", limit=None)} == set(reviewed)
        assert {c.id for c in store.search(run_id=run_id, limit=None, sort_by="none")} == set(ids)
        assert store.verify_run(run_id).ok
        assert store.get_run(run_id).status == "finished"
