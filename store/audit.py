"""The tamper-evident audit log: one append-only, hash-chained JSON-lines file per run.

Why a file and not a LanceDB table
----------------------------------
The log must (1) survive SIGKILL at any instant without losing an acknowledged event, (2) accept
appends from several processes (a campaign writing while a chemist records a review decision), and
(3) let anyone check, with nothing but the file, that no event was edited, deleted or reordered.

- Durability: each event is one ``write`` of one line to a file opened with ``O_APPEND``, followed by
  ``fsync`` before ``append`` returns; an event counts as written only then. A kill mid-write leaves
  at most a torn last line, which was never acknowledged; the next writer cuts it off and records a
  ``log_repaired`` event saying how many bytes it dropped, so even the repair is on the record.
  A LanceDB commit per event would create a table version (a manifest plus data files) per event and
  needs compaction; its commit is atomic but not ``fsync``-ed, and a per-run file is far cheaper.
- Concurrency: writers take an exclusive ``flock`` on the file while they read the chain head and
  append, so two processes never fork the chain. (``flock`` needs a local filesystem; that is why a
  remote, URI-addressed store keeps its audit logs in a local ``TESSERA_AUDIT_DIR``.)
- Tamper evidence: event ``n`` stores ``seq = n``, ``prev_hash`` = the hash of event ``n - 1`` (64 zeros
  for the first) and ``hash`` = SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8) of all its
  other fields. Editing an event breaks its hash; deleting, inserting or reordering breaks ``seq`` and
  ``prev_hash``. Cutting events off the end leaves a valid shorter chain, so the store also records the
  chain head (seq and hash) in the run's row when the run starts and finishes and after each review
  decision; ``verify`` checks the log still reaches that anchor. A hash chain proves integrity, not
  authorship: someone able to rewrite the whole file and the store row can forge a consistent history.

Secrets: every payload passes through ``redact`` first: values under key-like names (api_key,
authorization, token, secret, password, ...) and key-like strings (``sk-...``, ``Bearer ...``) are
replaced by ``"[REDACTED]"`` before anything touches the disk.
"""

from __future__ import annotations

import datetime as dt
import enum
import fcntl
import hashlib
import json
import math
import os
import re
from pathlib import Path, PurePath
from typing import Any, Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tessera.tools.errors import DataError, StoreError

GENESIS_HASH = "0" * 64
REDACTED = "[REDACTED]"
EVENT_FIELDS = ("seq", "run_id", "ts", "kind", "actor", "payload", "prev_hash", "hash")


class EventKind(str, enum.Enum):
    """The standard event kinds (any other short string is accepted too)."""

    RUN_STARTED = "run_started"
    GOAL = "goal"
    PLAN = "plan"
    LLM_CALL = "llm_call"
    TOOL_CALL = "tool_call"
    STEP = "step"
    CANDIDATES_RECORDED = "candidates_recorded"
    HUMAN_DECISION = "human_decision"
    ERROR = "error"
    NOTE = "note"
    LOG_REPAIRED = "log_repaired"
    RUN_FINISHED = "run_finished"


class AuditEvent(BaseModel):
    """One line of the log."""

    model_config = ConfigDict(extra="forbid")

    seq: int = Field(description="0-based position in the run's log")
    run_id: str
    ts: str = Field(description="UTC time the event was written, ISO 8601")
    kind: str
    actor: str = Field(description="who acted: 'tessera', a tool name, a planner, or a reviewer")
    payload: dict[str, Any]
    prev_hash: str
    hash: str


class VerifyResult(BaseModel):
    """Outcome of checking a run's log (and, via the store, its candidates)."""

    ok: bool
    run_id: str
    n_events: int
    head_hash: str | None = None
    problem: str | None = Field(None, description="the first bad event or record, one line")
    bad_seq: int | None = Field(None, description="seq (position) of the first bad event, if an event is bad")
    notes: list[str] = Field(default_factory=list)

    def line(self) -> str:
        """The one-line verdict the CLI prints."""
        if self.ok:
            extra = f" ({'; '.join(self.notes)})" if self.notes else ""
            return f"ok: run {self.run_id}, {self.n_events} events, chain intact{extra}"
        return f"FAILED: run {self.run_id}: {self.problem}"


# ----------------------------------------------------------------------------------------------------
# Canonical JSON, sanitising and redaction

_SECRET_KEYS = {
    "api_key", "apikey", "authorization", "auth", "token", "access_token", "refresh_token", "id_token",
    "secret", "client_secret", "password", "passwd", "cookie", "set_cookie", "x_api_key", "private_key",
    "mp_api_key", "openai_api_key", "bearer",
}
_SECRET_SUFFIXES = ("_api_key", "_apikey", "_token", "_secret", "_password", "_private_key")
_SECRET_VALUE = re.compile(
    r"(sk-[A-Za-z0-9_\-]{16,}|Bearer\s+[A-Za-z0-9._\-+/=]{8,}|ghp_[A-Za-z0-9]{20,}|xox[abp]-[A-Za-z0-9\-]{10,})"
)


def _is_secret_key(key: str) -> bool:
    norm = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
    return norm in _SECRET_KEYS or norm.endswith(_SECRET_SUFFIXES)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values for anything a tool might log (pydantic models, numpy, paths, times, enums).

    Non-finite floats become the strings "NaN", "Infinity", "-Infinity" so that the canonical JSON stays
    standard JSON.
    """
    if isinstance(obj, BaseModel):
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (bool, type(None), str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return x
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes):
        return {"bytes": len(obj), "sha256": hashlib.sha256(obj).hexdigest()}
    return str(obj)


def redact(obj: Any) -> Any:
    """A copy of a JSON-able value with secrets replaced by "[REDACTED]" (see module docstring)."""
    if isinstance(obj, dict):
        return {k: (REDACTED if _is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return _SECRET_VALUE.sub(REDACTED, obj)
    return obj


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 (not ASCII-escaped), standard numbers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def event_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field except ``hash`` itself."""
    return sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


# ----------------------------------------------------------------------------------------------------
# The log file


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_tail(fd: int, size: int, block: int = 65536) -> bytes:
    """The bytes after the second-to-last newline of a file that ends with a newline (its last line)."""
    buf = b""
    pos = size
    while pos > 0:
        step = min(block, pos)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
        # The final byte is the last line's own newline; look for the one before it.
        cut = buf.rfind(b"\n", 0, len(buf) - 1)
        if cut >= 0:
            return buf[cut + 1 :]
    return buf


class AuditLog:
    """The append-only, hash-chained log of one run (a JSON-lines file).

    Safe for several processes at once (``flock``); every ``append`` is on disk (``fsync``) before it
    returns.
    """

    def __init__(self, *, path: Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        # Cached chain head after our own last append: (file size, seq, hash). Re-read when the size moved.
        self._head: tuple[int, int, str] | None = None
        self._pending_repair = 0  # bytes of a torn last line cut off, to be reported in the next event
        self._last_event: AuditEvent | None = None
        self.torn_tail = 0  # bytes of an unparsable incomplete last line seen by the last read

    # -- writing ------------------------------------------------------------------------------------

    def append(self, kind: str | EventKind, payload: dict[str, Any] | None = None, *, actor: str = "tessera") -> AuditEvent:
        """Append one event durably and return it (with its seq and hash)."""
        kind_s = kind.value if isinstance(kind, EventKind) else str(kind)
        if not kind_s or len(kind_s) > 64:
            raise StoreError(f"audit event kind must be 1..64 characters, got {kind_s!r}")
        clean = redact(to_jsonable(payload or {}))
        if not isinstance(clean, dict):
            raise StoreError("audit event payload must be a mapping")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if created:
                    _fsync_dir(self.path.parent)
                seq, prev = self._chain_head(fd)
                repaired = self._pending_repair
                if repaired:
                    self._pending_repair = 0
                    note = self._write(
                        fd, seq, prev, EventKind.LOG_REPAIRED.value, "tessera",
                        {"dropped_bytes": repaired, "reason": "incomplete last line from an interrupted write"},
                    )
                    seq, prev = note.seq + 1, note.hash
                event = self._write(fd, seq, prev, kind_s, actor, clean)
                return event
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _chain_head(self, fd: int) -> tuple[int, str]:
        """Next seq and the previous hash, cutting off a torn last line (held under the lock)."""
        size = os.fstat(fd).st_size
        if self._head is not None and self._head[0] == size:
            return self._head[1] + 1, self._head[2]
        if size == 0:
            return 0, GENESIS_HASH
        last = os.pread(fd, 1, size - 1)
        if last != b"\n":
            # A writer died mid-line. That line was never acknowledged: cut it off, and say so in the log.
            block = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
            cut = block.rfind(b"\n")
            keep = (size - len(block) + cut + 1) if cut >= 0 else 0
            if cut < 0 and size > len(block):
                raise StoreError(f"audit log {self.path}: last line longer than 1 MiB and incomplete")
            os.ftruncate(fd, keep)
            os.fsync(fd)
            self._pending_repair = size - keep
            size = keep
            if size == 0:
                return 0, GENESIS_HASH
        line = _read_tail(fd, size)
        try:
            rec = json.loads(line)
            return int(rec["seq"]) + 1, str(rec["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"audit log {self.path}: last event unreadable ({exc}); run `tessera audit verify`") from exc

    def _write(self, fd: int, seq: int, prev: str, kind: str, actor: str, payload: dict[str, Any]) -> AuditEvent:
        record: dict[str, Any] = {
            "seq": seq, "run_id": self.run_id, "ts": _now(), "kind": kind, "actor": actor,
            "payload": payload, "prev_hash": prev,
        }
        record["hash"] = event_hash(record)
        data = (canonical_json(record) + "\n").encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):
            raise StoreError(f"audit log {self.path}: short write ({written} of {len(data)} bytes)")
        os.fsync(fd)
        self._head = (os.fstat(fd).st_size, seq, record["hash"])
        self._last_event = AuditEvent(**record)
        return self._last_event

    # -- reading ------------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def events(self) -> list[AuditEvent]:
        """Every complete event in file order (a torn last line is skipped). Does not verify the chain."""
        out: list[AuditEvent] = []
        for lineno, raw, rec in self._lines():
            if rec is None:
                raise DataError(f"audit log {self.path}, line {lineno}: not a JSON event; run `tessera audit verify`")
            try:
                out.append(AuditEvent(**rec))
            except (TypeError, ValueError) as exc:
                raise DataError(f"audit log {self.path}, line {lineno}: malformed event ({exc})") from exc
        return out

    def _lines(self) -> Iterable[tuple[int, bytes, dict[str, Any] | None]]:
        if not self.path.exists():
            raise DataError(f"no audit log for run {self.run_id} at {self.path}")
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        for lineno, raw in enumerate(lines, start=1):
            try:
                rec = json.loads(raw)
            except ValueError:
                rec = None
            yield lineno, raw, rec if isinstance(rec, dict) else None
        if torn:
            try:
                rec = json.loads(torn)
            except ValueError:
                self.torn_tail = len(torn)
                return
            yield len(lines) + 1, torn, rec if isinstance(rec, dict) else None

    def verify(self, *, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Check the chain; ``anchor`` = (seq, hash) the store recorded, to catch events cut off the end.

        Returns the first bad event (by position) in ``problem``; never raises on a bad log.
        """
        self.torn_tail = 0
        prev = GENESIS_HASH
        n = 0
        try:
            lines = list(self._lines())
        except DataError as exc:
            return VerifyResult(ok=False, run_id=self.run_id, n_events=0, problem=str(exc))

        def bad(msg: str, seq: int | None) -> VerifyResult:
            return VerifyResult(ok=False, run_id=self.run_id, n_events=n, problem=msg, bad_seq=seq)

        for lineno, _raw, rec in lines:
            where = f"event {n} (line {lineno})"
            if rec is None:
                return bad(f"{where}: not a JSON event (edited by hand?)", n)
            if set(rec) != set(EVENT_FIELDS):
                return bad(f"{where}: fields {sorted(rec)} are not an audit event's", n)
            kind = rec.get("kind")
            where = f"event {n} ({kind}, line {lineno})"
            if event_hash(rec) != rec["hash"]:
                return bad(f"{where}: content does not match its hash (edited after it was written)", n)
            if rec["seq"] != n:
                return bad(
                    f"{where}: has seq {rec['seq']}, expected {n} (an event was deleted, inserted or reordered)", n
                )
            if rec["prev_hash"] != prev:
                return bad(f"{where}: prev_hash does not match the event before it (deleted or reordered)", n)
            if rec["run_id"] != self.run_id:
                return bad(f"{where}: belongs to run {rec['run_id']}, not {self.run_id}", n)
            prev = rec["hash"]
            n += 1
        notes: list[str] = []
        if self.torn_tail:
            notes.append(f"ignored an incomplete last line of {self.torn_tail} bytes from an interrupted write")
        if anchor is not None:
            a_seq, a_hash = anchor
            if a_seq >= n:
                return VerifyResult(
                    ok=False, run_id=self.run_id, n_events=n, bad_seq=n,
                    problem=f"log ends after {n} events but the store recorded event {a_seq} "
                    f"(events deleted from the end)",
                )
            rec = lines[a_seq][2] or {}
            if rec.get("hash") != a_hash:
                return VerifyResult(
                    ok=False, run_id=self.run_id, n_events=n, bad_seq=a_seq,
                    problem=f"event {a_seq}: hash differs from the one the store recorded (history rewritten)",
                )
        return VerifyResult(ok=True, run_id=self.run_id, n_events=n, head_hash=prev if n else None, notes=notes)
