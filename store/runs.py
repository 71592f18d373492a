"""Runs: registering one, reading them back, and the handle that records a run's events and candidates.

Write path of ``RunHandle.add_candidates``: rows are built (CIF parsed, fingerprint computed), the
batch is written to the audit log (ids and content hashes, fsync-ed), then committed to LanceDB as one
version. The call returns only after both: an acknowledged candidate survives SIGKILL, because a
LanceDB commit is atomic (a killed writer leaves unreferenced data files, never a half-visible batch).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Literal, Sequence

import pyarrow as pa

from tessera.store.audit import AuditEvent, AuditLog, EventKind, redact, to_jsonable
from tessera.store.layout import StoreBase, first_line, utcnow
from tessera.store.provenance import code_version, current_user, host_name, tool_versions
from tessera.store.schema import RUN_SCHEMA, RunRecord, candidate_row, rows_to_table
from tessera.tools.candidate import Candidate
from tessera.tools.errors import InputError


class RunsMixin(StoreBase):
    """Starting, resuming and listing runs."""

    def start_run(
        self,
        kind: str,
        params: dict[str, Any] | None = None,
        *,
        goal: str | None = None,
        spec_hash: str | None = None,
        checkpoint_hash: str | None = None,
        seed: int | None = None,
        run_id: str | None = None,
    ) -> RunHandle:
        """Register a run and open its audit log with a ``run_started`` event.

        ``kind``: 'evaluate', 'sample', 'campaign', 'design_session', ... ``params``: the run's
        parameters (JSON-able; secrets are redacted in the log). spec_hash / checkpoint_hash / seed
        become every candidate's provenance unless a candidate's own provenance overrides them.
        """
        kind_clean = re.sub(r"[^a-z0-9_]+", "_", kind.lower()).strip("_") or "run"
        rid = run_id or f"{kind_clean}-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        audit = self.audit_log(rid)
        if audit.exists() or self._run_row(rid) is not None:
            raise InputError(f"run {rid} already exists in {self.location}")
        # Redacted here too: the runs table must not hold a key the audit log refuses to write.
        params_j = redact(to_jsonable(params or {}))
        goal = redact(goal) if goal is not None else None
        record = RunRecord(
            run_id=rid, kind=kind_clean, status="running", created_at=utcnow(), goal=goal, params=params_j,
            spec_hash=spec_hash, checkpoint_hash=checkpoint_hash, seed=seed, code_version=code_version(),
            user=current_user(), host=host_name(),
        )
        event = audit.append(
            EventKind.RUN_STARTED,
            {
                "kind": kind_clean, "params": params_j, "goal": goal, "spec_hash": spec_hash,
                "checkpoint_hash": checkpoint_hash, "seed": seed, "versions": tool_versions(),
                "user": record.user, "host": record.host, "pid": os.getpid(),
            },
        )
        record.audit_head_seq, record.audit_head_hash = event.seq, event.hash
        row = {
            "run_id": rid, "kind": kind_clean, "status": "running", "created_at": record.created_at,
            "finished_at": None, "goal": goal, "params_json": json.dumps(params_j, sort_keys=True),
            "summary_json": "{}", "spec_hash": spec_hash, "checkpoint_hash": checkpoint_hash, "seed": seed,
            "code_version": record.code_version, "user": record.user, "host": record.host, "pid": os.getpid(),
            "audit_head_seq": event.seq, "audit_head_hash": event.hash,
        }
        self._retry(lambda: self._runs.add(pa.Table.from_pylist([row], schema=RUN_SCHEMA)), "start run")
        return RunHandle(store=self, record=record, audit=audit)

    def resume_run(self, run_id: str) -> RunHandle:
        """A handle to append to an existing run (a resumed campaign)."""
        record = self.get_run(run_id)
        return RunHandle(store=self, record=record, audit=self.audit_log(run_id))

    def get_run(self, run_id: str) -> RunRecord:
        row = self._run_row(run_id)
        if row is None:
            raise InputError(f"no run {run_id!r} in {self.location}")
        rec = RunRecord.from_row(row)
        rec.n_candidates = self.count(run_id=run_id)
        return rec

    def runs(self, *, limit: int | None = None) -> list[RunRecord]:
        """All runs, newest first."""
        rows = self._retry(lambda: self._runs.search().limit(None).to_arrow(), "list runs").to_pylist()
        recs = sorted((RunRecord.from_row(r) for r in rows), key=lambda r: r.created_at or utcnow(), reverse=True)
        return recs[:limit] if limit else recs


class RunHandle(AbstractContextManager["RunHandle"]):
    """Records one run: its candidates and its audit events. Get one from ``Store.start_run``.

    Used as a context manager, an exception escaping the block finishes the run as ``failed`` (with the
    error in the log) and propagates.
    """

    def __init__(self, *, store: StoreBase, record: RunRecord, audit: AuditLog) -> None:
        self.store = store
        self.record = record
        self.audit = audit
        self.finished = record.status != "running"

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def _provenance(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        base = {
            "run_id": self.run_id,
            "checkpoint_hash": self.record.checkpoint_hash,
            "spec_hash": self.record.spec_hash,
            "seed": self.record.seed,
            "code_version": self.record.code_version or code_version(),
        }
        base.update(extra or {})
        return {k: v for k, v in base.items() if v is not None}

    # -- events ---------------------------------------------------------------------------------------

    def log_event(self, kind: str | EventKind, payload: dict[str, Any] | None = None, *, actor: str = "tessera") -> AuditEvent:
        """Append an event to the run's audit log; it is on disk when this returns."""
        return self.audit.append(kind, payload, actor=actor)

    def log_goal(self, goal: str, *, actor: str = "user") -> AuditEvent:
        return self.log_event(EventKind.GOAL, {"goal": goal}, actor=actor)

    def log_plan(self, plan: Any, *, reasoning: str | None = None, actor: str = "planner") -> AuditEvent:
        """A plan (a DesignSpec or any model/dict) with the planner's reasoning."""
        return self.log_event(EventKind.PLAN, {"plan": plan, "reasoning": reasoning}, actor=actor)

    def log_llm_call(
        self,
        *,
        model: str,
        params: dict[str, Any],
        request: Any,
        response: Any,
        seconds: float | None = None,
        endpoint: str | None = None,
        actor: str = "llm",
    ) -> AuditEvent:
        """One LLM request and its response. Key-like fields anywhere in it are redacted before writing."""
        return self.log_event(
            EventKind.LLM_CALL,
            {"model": model, "params": params, "endpoint": endpoint, "request": request, "response": response,
             "seconds": seconds},
            actor=actor,
        )

    def log_tool_call(
        self,
        *,
        tool: str,
        arguments: Any,
        result_summary: Any,
        seconds: float,
        versions: dict[str, str] | None = None,
        error: str | None = None,
    ) -> AuditEvent:
        """One tool call: its arguments, a summary of its result, wall time (s) and versions."""
        return self.log_event(
            EventKind.TOOL_CALL,
            {"tool": tool, "arguments": arguments, "result": result_summary, "seconds": seconds,
             "versions": versions or tool_versions(), "error": error},
            actor=tool,
        )

    def log_error(self, message: str, detail: Any = None) -> AuditEvent:
        return self.log_event(EventKind.ERROR, {"message": message, "detail": detail})

    # -- candidates -----------------------------------------------------------------------------------

    def add_candidates(
        self, candidates: Sequence[Candidate], *, round: int = 0, provenance: dict[str, Any] | None = None
    ) -> list[str]:
        """Record a batch: an audit event with each candidate's id and content hash (fsync-ed), then one
        LanceDB commit. Returns the ids once both are durable. Recording an id again in the same run
        updates its row (and resets its review to pending: the numbers changed).

        ``provenance`` (e.g. checkpoint_hash, spec_hash, seed) applies to every candidate; a candidate's
        own ``provenance`` entries win. A candidate whose structure cannot be parsed or fingerprinted is
        still stored (without a vector, so similarity search skips it).
        """
        if self.finished:
            raise InputError(f"run {self.run_id} is finished; start a new run or resume_run it")
        if not candidates:
            return []
        now = utcnow()
        prov = self._provenance(provenance)
        by_id: dict[str, dict[str, Any]] = {}
        for c in candidates:
            by_id[c.id] = candidate_row(c, run_id=self.run_id, round=round, run_provenance=prov, recorded_at=now)
        rows = list(by_id.values())
        self.log_event(
            EventKind.CANDIDATES_RECORDED,
            {
                "round": round,
                "count": len(rows),
                "provenance": prov,
                "candidates": [
                    {"id": r["id"], "formula": r["formula"], "e_hull": r["e_hull"], "stable": r["stable"],
                     "content_hash": r["content_hash"]}
                    for r in rows
                ],
            },
        )
        ids = [r["id"] for r in rows]
        existing = {r["id"] for r in self.store._query_ids(self.run_id, ids, ["id"])}
        fresh = [r for r in rows if r["id"] not in existing]
        again = [r for r in rows if r["id"] in existing]
        if fresh:
            self.store.add_rows(rows_to_table(fresh))
        if again:
            table = rows_to_table(again)
            self.store._retry(
                lambda: self.store._candidates.merge_insert(["run_id", "id"])
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(table),
                "update candidates",
            )
            self.store._after_commit()
        return ids

    # -- end ------------------------------------------------------------------------------------------

    def finish(self, summary: dict[str, Any] | None = None, *, status: Literal["finished", "failed"] = "finished") -> RunRecord:
        """Close the run: a ``run_finished`` event with the summary, then the run row (status, summary,
        audit anchor). Calling it twice is an error."""
        if self.finished:
            raise InputError(f"run {self.run_id} is already finished")
        summary_j = redact(to_jsonable(summary or {}))
        n = self.store.count(run_id=self.run_id)
        event = self.log_event(EventKind.RUN_FINISHED, {"status": status, "summary": summary_j, "n_candidates": n})
        now = utcnow()
        self.store._update_run(
            self.run_id,
            {"status": status, "finished_at": now, "summary_json": json.dumps(event.payload["summary"], sort_keys=True),
             "audit_head_seq": event.seq, "audit_head_hash": event.hash},
            "finish run",
        )
        self.finished = True
        self.record.status, self.record.finished_at, self.record.summary = status, now, event.payload["summary"]
        self.record.audit_head_seq, self.record.audit_head_hash, self.record.n_candidates = event.seq, event.hash, n
        return self.record

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.finished:
            return None
        if exc is None:
            self.finish()
        else:
            self.log_error(f"{type(exc).__name__}: {first_line(exc)}")
            self.finish({"error": first_line(exc)}, status="failed")
        return None


__all__ = ["RunHandle", "RunsMixin"]
