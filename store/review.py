"""A chemist's review decision, and verification of a run's records against its audit log.

A decision is written first to the candidate's run's audit log, then to the row, then as the run's new
audit anchor. ``verify_run`` checks the hash chain, the anchor, and that each stored candidate and
review status matches what the log recorded.
"""

from __future__ import annotations

from typing import Any, Literal

from tessera.store.audit import AuditLog, EventKind, VerifyResult
from tessera.store.filters import sql_str
from tessera.store.layout import utcnow
from tessera.store.provenance import current_user
from tessera.store.queries import QueriesMixin
from tessera.store.schema import RECORD_COLUMNS, REVIEW_STATUSES, StoredCandidate, full_record, record_hash
from tessera.tools.errors import InputError

# Columns copied verbatim from the Candidate record; verify checks them against the hashed record.
_DERIVED = (
    "e_hull", "energy_per_atom", "corrected_energy_per_atom", "formation_energy_per_atom", "stable", "unique",
    "novel", "relaxed", "converged", "matched_id", "error",
)


class ReviewMixin(QueriesMixin):
    """``review`` a candidate and ``verify_run`` a run."""

    def review(
        self,
        candidate_id: str,
        decision: Literal["approved", "rejected", "pending"],
        *,
        reviewer: str | None = None,
        note: str | None = None,
        run_id: str | None = None,
    ) -> StoredCandidate:
        """Record a chemist's decision: first as a ``human_decision`` event in the candidate's run's
        audit log (fsync-ed), then on the candidate row, then as the run's new audit anchor."""
        if decision not in REVIEW_STATUSES:
            raise InputError(f"decision must be one of {', '.join(REVIEW_STATUSES)}, got {decision!r}")
        cand = self.get(candidate_id, run_id=run_id)
        who = reviewer or current_user()
        when = utcnow()
        event = self.audit_log(cand.run_id).append(
            EventKind.HUMAN_DECISION,
            {
                "candidate_id": cand.id, "decision": decision, "reviewer": who, "note": note,
                "previous_status": cand.review_status, "formula": cand.formula, "e_hull": cand.e_hull,
                "content_hash": cand.content_hash,
            },
            actor=who,
        )
        where = f"run_id = {sql_str(cand.run_id)} AND id = {sql_str(cand.id)}"
        self._retry(
            lambda: self._candidates.update(
                where=where, values={"review_status": decision, "reviewer": who, "review_note": note, "reviewed_at": when}
            ),
            "review update",
        )
        self._update_run(cand.run_id, {"audit_head_seq": event.seq, "audit_head_hash": event.hash}, "audit anchor")
        return self.get(cand.id, run_id=cand.run_id)

    def verify_run(self, run_id: str) -> VerifyResult:
        """Check a run's audit chain, its anchor, and that every stored candidate and review decision of
        the run matches what the log recorded. Never raises for a bad log; the result names the first fault."""
        audit = self.audit_log(run_id)
        row = self._run_row(run_id)
        if row is None and not audit.exists():
            raise InputError(f"no run {run_id!r} in {self.location}")
        anchor = None
        if row is not None and row.get("audit_head_seq") is not None and row.get("audit_head_hash"):
            anchor = (int(row["audit_head_seq"]), str(row["audit_head_hash"]))
        result = audit.verify(anchor=anchor)
        if not result.ok:
            return result
        if row is None:
            result.notes.append("run missing from the runs table")
        return self._check_records(audit, result)

    def _check_records(self, audit: AuditLog, result: VerifyResult) -> VerifyResult:
        logged: dict[str, tuple[str, int]] = {}
        decisions: dict[str, tuple[dict[str, Any], int]] = {}
        for ev in audit.events():
            if ev.kind == EventKind.CANDIDATES_RECORDED.value:
                for c in ev.payload.get("candidates", []):
                    logged[c["id"]] = (c.get("content_hash"), ev.seq)
            elif ev.kind == EventKind.HUMAN_DECISION.value:
                decisions[ev.payload.get("candidate_id")] = (ev.payload, ev.seq)
        rows = self._query(
            f"run_id = {sql_str(audit.run_id)}",
            ["id", "content_hash", *RECORD_COLUMNS, "review_status", "reviewer", "review_note", *_DERIVED], None,
        )

        def fail(msg: str, seq: int | None = None) -> VerifyResult:
            result.ok, result.problem, result.bad_seq = False, msg, seq
            return result

        stored = {r["id"]: r for r in rows}
        for cid, (h, seq) in sorted(logged.items(), key=lambda kv: (kv[1][1], kv[0])):
            r = stored.get(cid)
            if r is None:
                return fail(f"candidate {cid} recorded in event {seq} is missing from the store", seq)
            try:
                record = full_record(r["candidate_json"] or "null", r["cif"], r["initial_cif"])
            except (ValueError, TypeError):
                record = {}
            if r["content_hash"] != h or record_hash(record) != h:
                return fail(f"candidate {cid}: stored record differs from event {seq} (changed after recording)", seq)
            for col in _DERIVED:
                if record.get(col) != r[col]:
                    return fail(
                        f"candidate {cid}: column {col} = {r[col]!r} differs from its recorded value "
                        f"{record.get(col)!r} (changed after recording)", seq,
                    )
        for cid in sorted(set(stored) - set(logged)):
            return fail(f"candidate {cid} is in the store but no event recorded it (added outside the run)")
        for cid, r in sorted(stored.items()):
            dec = decisions.get(cid)
            if dec is None:
                if r["review_status"] not in (None, "pending"):
                    return fail(f"candidate {cid}: review status '{r['review_status']}' with no decision in the log")
                continue
            payload, seq = dec
            if (r["review_status"], r["reviewer"], r["review_note"]) != (
                payload.get("decision"), payload.get("reviewer"), payload.get("note")
            ):
                return fail(
                    f"candidate {cid}: review in the store ({r['review_status']}) differs from decision event {seq} "
                    f"({payload.get('decision')})",
                    seq,
                )
        result.notes.append(f"{len(stored)} candidates match the log")
        return result


__all__ = ["ReviewMixin"]
