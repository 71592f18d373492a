"""The audit log: hash chain, durability artefacts (torn lines), tamper detection, redaction."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from tessera.store.audit import GENESIS_HASH, REDACTED, AuditLog, event_hash, redact


def _log(tmp_path: Path, n: int = 6) -> AuditLog:
    log = AuditLog(path=tmp_path / "run-1.jsonl", run_id="run-1")
    for i in range(n):
        log.append("tool_call", {"tool": f"t{i}", "seconds": 0.1 * i})
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def test_chain_links_every_event(tmp_path: Path) -> None:
    log = _log(tmp_path)
    events = log.events()
    assert [e.seq for e in events] == list(range(6))
    assert events[0].prev_hash == GENESIS_HASH
    for a, b in zip(events, events[1:]):
        assert b.prev_hash == a.hash
    for e in events:
        assert event_hash(e.model_dump()) == e.hash
    res = log.verify()
    assert res.ok and res.n_events == 6 and res.head_hash == events[-1].hash


def test_edit_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[3] = lines[3].replace('"tool":"t3"', '"tool":"t9"')
    log.path.write_text("".join(lines))
    res = log.verify()
    assert not res.ok and res.bad_seq == 3 and "hash" in res.problem


def test_edit_with_recomputed_hash_detected_at_next_event(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    rec = json.loads(lines[2])
    rec["payload"]["seconds"] = 99.0
    rec["hash"] = event_hash(rec)
    lines[2] = json.dumps(rec) + "\n"
    log.path.write_text("".join(lines))
    res = log.verify()
    assert not res.ok and res.bad_seq == 3 and "prev_hash" in res.problem


def test_delete_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    del lines[2]
    log.path.write_text("".join(lines))
    res = log.verify()
    assert not res.ok and res.bad_seq == 2 and "deleted" in res.problem


def test_reorder_detected(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[1], lines[4] = lines[4], lines[1]
    log.path.write_text("".join(lines))
    res = log.verify()
    assert not res.ok and res.bad_seq == 1 and "reordered" in res.problem


def test_truncation_caught_by_anchor(tmp_path: Path) -> None:
    log = _log(tmp_path)
    head = log.events()[-1]
    lines = _lines(log)
    log.path.write_text("".join(lines[:-2]))
    assert log.verify().ok  # a shorter chain is self-consistent ...
    res = log.verify(anchor=(head.seq, head.hash))
    assert not res.ok and "deleted from the end" in res.problem  # ... but not with the recorded head


def test_torn_tail_is_cut_and_the_repair_logged(tmp_path: Path) -> None:
    log = _log(tmp_path, n=3)
    with log.path.open("ab") as fh:  # what SIGKILL in the middle of a write leaves behind
        fh.write(b'{"seq":3,"run_id":"run-1","kind":"tool_c')
    res = log.verify()
    assert res.ok and res.n_events == 3 and "incomplete" in res.notes[0]
    fresh = AuditLog(path=log.path, run_id="run-1")  # another process, no cached head
    ev = fresh.append("note", {"after": "crash"})
    events = fresh.events()
    assert [e.kind for e in events[-2:]] == ["log_repaired", "note"] and ev.seq == 4
    assert events[-2].payload["dropped_bytes"] == 40
    assert fresh.verify().ok


def test_redaction() -> None:
    payload = {
        "api_key": "abc", "headers": {"Authorization": "Bearer sk-live-123456789", "X-Api-Key": "k"},
        "params": {"max_tokens": 100, "temperature": 0.2, "access_token": "t"},
        "text": "my key is sk-abcdefghijklmnopqrstu ok", "nested": [{"password": "p"}],
    }
    out = redact(payload)
    assert out["api_key"] == REDACTED and out["headers"]["Authorization"] == REDACTED
    assert out["headers"]["X-Api-Key"] == REDACTED and out["params"]["access_token"] == REDACTED
    assert out["params"]["max_tokens"] == 100 and out["params"]["temperature"] == 0.2
    assert "sk-abc" not in out["text"] and out["text"].startswith("my key is ")
    assert out["nested"][0]["password"] == REDACTED


def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "r.jsonl", run_id="r")
    log.append("llm_call", {"model": "m", "params": {"api_key": "sk-secretsecretsecret99"}, "request": "hi"})
    assert "secretsecret" not in log.path.read_text()


def _appender(path: str, n: int, tag: str) -> None:
    log = AuditLog(path=Path(path), run_id="shared")
    for i in range(n):
        log.append("note", {"tag": tag, "i": i})


def test_two_processes_append_to_one_log(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_appender, args=(str(path), 40, tag)) for tag in "AB"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(path=path, run_id="shared")
    assert log.verify().ok
    events = log.events()
    assert len(events) == 80
    for tag in "AB":
        assert [e.payload["i"] for e in events if e.payload["tag"] == tag] == list(range(40))
