"""The candidate store: LanceDB tables (runs, candidates) plus one audit log per run.

Layout of a local store directory::

    <store>/tessera-store.json   marker: format name, version, fingerprint version (refuses foreign dirs)
    <store>/runs.lance/          LanceDB table, one row per run
    <store>/candidates.lance/    LanceDB table, one row per (run_id, candidate id), with the fingerprint
    <store>/audit/<run_id>.jsonl append-only hash-chained audit log of each run (see store.audit)

A URI location (``s3://``, ``gs://``, ``az://``, ``memory://``) keeps the tables there and the audit logs
in the local ``TESSERA_AUDIT_DIR`` (or ``Store.open(..., audit_dir=...)``).

Write path of ``RunHandle.add_candidates``: rows are built (CIF parsed, fingerprint computed), the
batch is written to the audit log (ids and content hashes, fsync-ed), then committed to LanceDB as one
version. The call returns only after both: an acknowledged candidate survives SIGKILL, because a
LanceDB commit is atomic (a killed writer leaves unreferenced data files, never a half-visible batch).
Concurrent writers: LanceDB rebases compatible commits itself; a remaining commit conflict is retried
here with exponential backoff. Readers use strong consistency (``read_consistency_interval=0``), so a
command sees what another process acknowledged.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import random
import re
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterable, Literal, Sequence, TypeVar

# LanceDB's Rust logger prints warnings (retried compaction conflicts, deprecations) straight to stderr;
# the CLI's contract is one clear line per problem, so only its errors are shown unless asked for.
os.environ.setdefault("LANCEDB_LOG", "error")

import lancedb  # noqa: E402
import numpy as np
import pyarrow as pa  # noqa: E402
from pymatgen.core import Composition, Element, Structure  # noqa: E402

from tessera.store.audit import AuditEvent, AuditLog, EventKind, VerifyResult, redact, to_jsonable
from tessera.store.provenance import code_version, current_user, host_name, tool_versions
from tessera.store.schema import (
    CANDIDATE_SCHEMA,
    LIGHT_COLUMNS,
    RECORD_COLUMNS,
    REVIEW_STATUSES,
    RUN_SCHEMA,
    RunRecord,
    StoredCandidate,
    candidate_row,
    full_record,
    record_hash,
    rows_to_table,
)
from tessera.store.settings import StoreSettings, resolve_store_location
from tessera.tools.candidate import Candidate
from tessera.tools.errors import InputError, StoreError
from tessera.tools.fingerprint import FINGERPRINT_DIM, FINGERPRINT_VERSION, structure_fingerprint

log = logging.getLogger(__name__)

MARKER_NAME = "tessera-store.json"
STORE_FORMAT = "tessera-store"
STORE_VERSION = 1
CANDIDATES = "candidates"
RUNS = "runs"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_T = TypeVar("_T")


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without the Rust source locations LanceDB appends."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return re.sub(r",?\s*/\S+\.rs:\d+:\d+", "", lines[0])[:300]


def _is_conflict(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return any(s in msg for s in ("conflict", "retryable", "concurrent"))


def _sql_str(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def normalise_formula(formula: str) -> str:
    """'Co Li O2', 'LiCoO2', 'Li2Co2O4' -> 'LiCoO2' (pymatgen reduced formula)."""
    try:
        comp = Composition(formula)
    except (ValueError, KeyError) as exc:
        raise InputError(f"not a chemical formula: {formula!r}") from exc
    if comp.num_atoms == 0 or not all(isinstance(el, Element) for el in comp.elements):
        raise InputError(f"not a chemical formula: {formula!r}")
    return comp.reduced_formula


def normalise_elements(elements: Iterable[str] | str) -> list[str]:
    """'Li,O' / 'Li-O' / ['o', 'Li'] -> ['Li', 'O'] (validated symbols, sorted)."""
    items = re.split(r"[,\-\s]+", elements) if isinstance(elements, str) else list(elements)
    out: set[str] = set()
    for item in items:
        sym = item.strip()
        if not sym:
            continue
        sym = sym[0].upper() + sym[1:].lower()
        if not Element.is_valid_symbol(sym):
            raise InputError(f"not an element symbol: {item!r}")
        out.add(sym)
    if not out:
        raise InputError("no elements given")
    return sorted(out)


def candidate_filter(
    *,
    formula: str | None = None,
    elements: Iterable[str] | str | None = None,
    chemsys: str | None = None,
    within: str | None = None,
    max_e_hull: float | None = None,
    run_id: str | None = None,
    review_status: str | None = None,
    stable: bool | None = None,
    novel: bool | None = None,
    unique: bool | None = None,
    round: int | None = None,
) -> str | None:
    """A SQL filter over the candidates table; None when no condition is given.

    formula: reduced formula, exact. elements: the candidate contains all of them (and maybe more).
    chemsys: exactly this chemical system ('Li-Co-O', any order). within: any subsystem of it
    (Li, Co-O, Li-Co-O, ...). max_e_hull: E_hull <= this (eV/atom; rows without E_hull are excluded).
    """
    parts: list[str] = []
    if formula:
        parts.append(f"formula = {_sql_str(normalise_formula(formula))}")
    if elements:
        syms = normalise_elements(elements)
        parts.append("array_has_all(elements, make_array(" + ", ".join(_sql_str(s) for s in syms) + "))")
    if chemsys:
        parts.append(f"chemsys = {_sql_str('-'.join(normalise_elements(chemsys)))}")
    if within:
        syms = normalise_elements(within)
        if len(syms) > 10:
            raise InputError("--within takes at most 10 elements")
        subs = ["-".join(c) for n in range(1, len(syms) + 1) for c in itertools.combinations(syms, n)]
        parts.append("chemsys IN (" + ", ".join(_sql_str(s) for s in subs) + ")")
    if max_e_hull is not None:
        if not np.isfinite(max_e_hull):
            raise InputError("--max-e-hull must be a finite number (eV/atom)")
        parts.append(f"e_hull <= {float(max_e_hull)!r}")
    if run_id:
        parts.append(f"run_id = {_sql_str(run_id)}")
    if review_status:
        if review_status not in REVIEW_STATUSES:
            raise InputError(f"review status must be one of {', '.join(REVIEW_STATUSES)}, got {review_status!r}")
        parts.append(f"review_status = {_sql_str(review_status)}")
    for name, flag in (("stable", stable), ("novel", novel), ("unique", unique)):
        if flag is not None:
            parts.append(f"{name} = {'true' if flag else 'false'}")
    if round is not None:
        parts.append(f"round = {int(round)}")
    return " AND ".join(parts) if parts else None


# Columns copied verbatim from the Candidate record; verify checks them against the hashed record.
_DERIVED = (
    "e_hull", "energy_per_atom", "corrected_energy_per_atom", "formation_energy_per_atom", "stable", "unique",
    "novel", "relaxed", "converged", "matched_id", "error",
)


class Store:
    """A Tessera candidate store. Open with ``Store.open(path_or_uri)``."""

    def __init__(
        self,
        *,
        location: str,
        db: Any,
        candidates: Any,
        runs: Any,
        audit_dir: Path,
        settings: StoreSettings,
    ) -> None:
        self.location = location
        self._db = db
        self._candidates = candidates
        self._runs = runs
        self.audit_dir = audit_dir
        self.settings = settings
        self._commits = 0
        self.conflicts_retried = 0  # commit conflicts met and retried by this handle (for tests and benchmarks)

    # ------------------------------------------------------------------------------------------------
    # Opening

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        audit_dir: str | os.PathLike[str] | None = None,
    ) -> "Store":
        """Open (and with ``create=True`` initialise) the store at a directory or URI.

        ``location`` None means ``$TESSERA_STORE`` or the platform default (see store.settings).
        Raises StoreError, one line, for a missing store (``create=False``), a file, a non-empty
        directory that is not a Tessera store, or a store whose tables cannot be read.
        """
        settings = StoreSettings()
        loc = resolve_store_location(location)
        local = "://" not in loc or loc.startswith("file://")
        if local:
            root = Path(loc.removeprefix("file://")).expanduser().resolve()
            cls._check_local_dir(root, create=create)
            adir = Path(audit_dir) if audit_dir is not None else root / "audit"
            uri = str(root)
            display = str(root)
        else:
            adir_opt = audit_dir if audit_dir is not None else settings.audit_dir
            if adir_opt is None:
                raise StoreError(
                    f"store {loc} is remote: give a local directory for its audit logs with TESSERA_AUDIT_DIR"
                )
            adir = Path(adir_opt).expanduser().resolve()
            uri = loc
            display = loc
        try:
            db = lancedb.connect(uri, read_consistency_interval=dt.timedelta(0))
            names = set(db.list_tables().tables)
        except (OSError, RuntimeError, ValueError) as exc:
            raise StoreError(f"cannot open store {display}: {_first_line(exc)}") from exc
        if not local and not create and not {CANDIDATES, RUNS} <= names:
            raise StoreError(f"no Tessera store at {display}")
        if not local and names and not names <= {CANDIDATES, RUNS}:
            raise StoreError(f"{display} holds tables {sorted(names)}: not a Tessera store")
        tables = {}
        for name, schema in ((CANDIDATES, CANDIDATE_SCHEMA), (RUNS, RUN_SCHEMA)):
            tables[name] = cls._open_table(db, name, schema, display=display, exists=name in names, create=create)
        adir.mkdir(parents=True, exist_ok=True)
        return cls(
            location=display, db=db, candidates=tables[CANDIDATES], runs=tables[RUNS], audit_dir=adir, settings=settings
        )

    @staticmethod
    def _check_local_dir(root: Path, *, create: bool) -> None:
        marker = root / MARKER_NAME
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not a store directory")
        if not root.exists() or not any(root.iterdir()):
            if not create:
                raise StoreError(f"no Tessera store at {root}")
            try:
                root.mkdir(parents=True, exist_ok=True)
                tmp = root / f".{MARKER_NAME}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
                tmp.write_text(
                    json.dumps(
                        {
                            "format": STORE_FORMAT,
                            "version": STORE_VERSION,
                            "fingerprint": FINGERPRINT_VERSION,
                            "fingerprint_dim": FINGERPRINT_DIM,
                            "created_at": _utcnow().isoformat(),
                        },
                        indent=2,
                    )
                    + "\n"
                )
                # Two processes creating the store at once both land a complete marker; rename is atomic.
                os.replace(tmp, marker)
            except OSError as exc:
                raise StoreError(f"cannot create a store at {root}: {exc.strerror or exc}") from exc
            return
        if not marker.exists():
            raise StoreError(f"{root} is not a Tessera store (no {MARKER_NAME}); give a new or empty directory")
        try:
            meta = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{root}: {MARKER_NAME} is unreadable or corrupt") from exc
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise StoreError(f"{root}: {MARKER_NAME} is not a Tessera store marker")
        if meta.get("version") != STORE_VERSION:
            raise StoreError(f"{root}: store format version {meta.get('version')} (this Tessera reads {STORE_VERSION})")
        if meta.get("fingerprint") != FINGERPRINT_VERSION:
            raise StoreError(
                f"{root}: fingerprints are {meta.get('fingerprint')}, this Tessera computes {FINGERPRINT_VERSION}"
            )

    @staticmethod
    def _open_table(db: Any, name: str, schema: pa.Schema, *, display: str, exists: bool, create: bool) -> Any:
        last: BaseException | None = None
        for attempt in range(6):
            try:
                if exists:
                    table = db.open_table(name)
                elif create:
                    table = db.create_table(name, schema=schema, exist_ok=True)
                else:
                    raise StoreError(f"store {display} is incomplete: table '{name}' is missing")
                got = table.schema
                # Read the manifest and the first rows, so that a corrupt table fails here with one clear
                # line rather than in the middle of a later command.
                table.count_rows()
                table.search().select([schema.names[0]]).limit(1).to_arrow()
            except (OSError, RuntimeError, ValueError) as exc:
                last = exc
                if (_is_conflict(exc) or "already exists" in str(exc).lower()) and attempt < 5:
                    # another process is creating the same table right now
                    time.sleep(0.05 * 2**attempt)
                    exists = True
                    continue
                raise StoreError(f"store {display} is corrupt: table '{name}' cannot be read ({_first_line(exc)})") from exc
            missing = [f.name for f in schema if f.name not in got.names]
            if missing:
                raise StoreError(f"store {display}: table '{name}' lacks columns {missing[:5]} (foreign or older store)")
            return table
        raise StoreError(f"store {display}: table '{name}' cannot be opened ({_first_line(last) if last else '?'})")

    # ------------------------------------------------------------------------------------------------
    # Low-level helpers

    def _retry(self, fn: Callable[[], _T], what: str) -> _T:
        """Run a LanceDB operation, retrying commit conflicts with backoff; other failures -> StoreError."""
        attempts = self.settings.commit_retries
        for attempt in range(attempts):
            try:
                return fn()
            except (OSError, RuntimeError, ValueError) as exc:
                if _is_conflict(exc) and attempt < attempts - 1:
                    self.conflicts_retried += 1
                    time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
                    continue
                raise StoreError(f"store {self.location}: {what} failed: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _query(self, where: str | None, columns: list[str] | None, limit: int | None) -> list[dict[str, Any]]:
        def run() -> pa.Table:
            q = self._candidates.search()
            if where:
                q = q.where(where)
            if columns is not None:
                q = q.select(columns)
            return q.limit(limit).to_arrow()

        return self._retry(run, "query").to_pylist()

    def add_rows(self, table: pa.Table) -> None:
        """Append rows already in CANDIDATE_SCHEMA as one commit (used by add_candidates and benchmarks)."""
        self._retry(lambda: self._candidates.add(table), "insert")
        self._after_commit()

    def _after_commit(self) -> None:
        self._commits += 1
        if self._commits % self.settings.compact_every == 0:
            try:
                self.optimize(index=False)
            except StoreError as exc:
                # The caller's rows are already committed; compaction can wait for the next try.
                log.warning("store maintenance postponed: %s", exc)

    def audit_log(self, run_id: str) -> AuditLog:
        """The audit log of a run (the file may not exist yet)."""
        if not _RUN_ID.match(run_id):
            raise InputError(f"not a run id: {run_id!r}")
        return AuditLog(path=self.audit_dir / f"{run_id}.jsonl", run_id=run_id)

    # ------------------------------------------------------------------------------------------------
    # Runs

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
    ) -> "RunHandle":
        """Register a run and open its audit log with a ``run_started`` event.

        ``kind``: 'evaluate', 'sample', 'campaign', 'design_session', ... ``params``: the run's
        parameters (JSON-able; secrets are redacted in the log). spec_hash / checkpoint_hash / seed
        become every candidate's provenance unless a candidate's own provenance overrides them.
        """
        kind_clean = re.sub(r"[^a-z0-9_]+", "_", kind.lower()).strip("_") or "run"
        rid = run_id or f"{kind_clean}-{_utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        audit = self.audit_log(rid)
        if audit.exists() or self._run_row(rid) is not None:
            raise InputError(f"run {rid} already exists in {self.location}")
        # Redacted here too: the runs table must not hold a key the audit log refuses to write.
        params_j = redact(to_jsonable(params or {}))
        goal = redact(goal) if goal is not None else None
        record = RunRecord(
            run_id=rid, kind=kind_clean, status="running", created_at=_utcnow(), goal=goal, params=params_j,
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

    def resume_run(self, run_id: str) -> "RunHandle":
        """A handle to append to an existing run (a resumed campaign)."""
        record = self.get_run(run_id)
        return RunHandle(store=self, record=record, audit=self.audit_log(run_id))

    def _run_row(self, run_id: str) -> dict[str, Any] | None:
        rows = self._retry(
            lambda: self._runs.search().where(f"run_id = {_sql_str(run_id)}").limit(None).to_arrow(), "run lookup"
        ).to_pylist()
        return rows[0] if rows else None

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
        recs = sorted((RunRecord.from_row(r) for r in rows), key=lambda r: r.created_at or _utcnow(), reverse=True)
        return recs[:limit] if limit else recs

    def _update_run(self, run_id: str, values: dict[str, Any], what: str) -> None:
        self._retry(lambda: self._runs.update(where=f"run_id = {_sql_str(run_id)}", values=values), what)

    # ------------------------------------------------------------------------------------------------
    # Queries

    def count(self, **filters: Any) -> int:
        """Number of candidates matching the filters of ``candidate_filter``."""
        where = candidate_filter(**filters)
        return int(self._retry(lambda: self._candidates.count_rows(where), "count"))

    def search(
        self,
        *,
        limit: int | None = 100,
        sort_by: Literal["e_hull", "recorded_at", "none"] = "e_hull",
        with_record: bool = False,
        **filters: Any,
    ) -> list[StoredCandidate]:
        """Candidates matching filters (see ``candidate_filter``), most stable first by default.

        With a sort, only the sort key of every match is read; full rows are fetched for the top
        ``limit`` only. ``with_record=True`` also fetches the Candidate JSON (``.candidate()``).
        """
        where = candidate_filter(**filters)
        cols = LIGHT_COLUMNS + (RECORD_COLUMNS if with_record else [])
        if sort_by == "none":
            return [StoredCandidate(**r) for r in self._query(where, cols, limit)]
        keys = self._query(where, ["run_id", "id", sort_by], None)

        def key(r: dict[str, Any]) -> tuple[int, Any, str, str]:
            v = r[sort_by]
            return (v is None, v if v is not None else 0, r["run_id"], r["id"])

        keys.sort(key=key)
        top = keys[:limit] if limit else keys
        return self._fetch(top, cols, order=[(r["run_id"], r["id"]) for r in top])

    def _fetch(self, keys: list[dict[str, Any]], cols: list[str], order: list[tuple[str, str]]) -> list[StoredCandidate]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for run_id, group in itertools.groupby(sorted(keys, key=lambda r: r["run_id"]), key=lambda r: r["run_id"]):
            ids = [r["id"] for r in group]
            for chunk in range(0, len(ids), 500):
                where = f"run_id = {_sql_str(run_id)} AND id IN (" + ", ".join(_sql_str(i) for i in ids[chunk : chunk + 500]) + ")"
                for r in self._query(where, cols, None):
                    out[(r["run_id"], r["id"])] = r
        return [StoredCandidate(**out[k]) for k in order if k in out]

    def top_stable(self, run_id: str, k: int = 10) -> list[StoredCandidate]:
        """The k candidates of a run with the lowest E_hull (those without E_hull are skipped)."""
        return [c for c in self.search(run_id=run_id, limit=k, sort_by="e_hull") if c.e_hull is not None]

    def get(self, candidate_id: str, *, run_id: str | None = None) -> StoredCandidate:
        """One candidate with its full record. InputError if absent or ambiguous (then pass run_id)."""
        where = f"id = {_sql_str(candidate_id)}" + (f" AND run_id = {_sql_str(run_id)}" if run_id else "")
        rows = self._query(where, LIGHT_COLUMNS + RECORD_COLUMNS, None)
        if not rows:
            raise InputError(f"no candidate {candidate_id!r}" + (f" in run {run_id}" if run_id else "") + f" in {self.location}")
        if len(rows) > 1:
            runs = ", ".join(sorted(r["run_id"] for r in rows))
            raise InputError(f"candidate {candidate_id} is in several runs ({runs}): name one with --run")
        return StoredCandidate(**rows[0])

    def nearest(
        self,
        query: Structure | np.ndarray,
        *,
        k: int = 10,
        nprobes: int = 20,
        refine_factor: int | None = 10,
        **filters: Any,
    ) -> list[StoredCandidate]:
        """The k stored candidates whose fingerprints are closest to a structure's (or a fingerprint's).

        ``distance`` on each result is the Euclidean fingerprint distance (0 = identical, at most 2).
        Exact (flat) search until a vector index exists; with an IVF_PQ index, ``nprobes`` partitions are
        searched and ``refine_factor * k`` hits re-ranked with exact distances.
        """
        if isinstance(query, Structure):
            vec = structure_fingerprint(query)
        else:
            vec = np.asarray(query, dtype=np.float32).reshape(-1)
            if vec.shape != (FINGERPRINT_DIM,) or not np.isfinite(vec).all():
                raise InputError(f"a query fingerprint must be {FINGERPRINT_DIM} finite numbers")
        if k < 1:
            raise InputError("k must be at least 1")
        where = " AND ".join(w for w in ("has_vector = true", candidate_filter(**filters)) if w)
        indexed = self.has_vector_index()

        def run() -> pa.Table:
            q = self._candidates.search(vec, vector_column_name="vector").distance_type("l2")
            q = q.where(where, prefilter=True).select(LIGHT_COLUMNS + ["_distance"]).limit(k)
            if indexed:
                q = q.nprobes(nprobes)
                if refine_factor:
                    q = q.refine_factor(refine_factor)
            return q.to_arrow()

        rows = self._retry(run, "nearest-neighbour search").to_pylist()
        out = []
        for r in rows:
            d2 = r.pop("_distance")
            out.append(StoredCandidate(**r, distance=float(np.sqrt(max(d2, 0.0)))))
        return sorted(out, key=lambda c: c.distance or 0.0)

    # ------------------------------------------------------------------------------------------------
    # Review and verification

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
        when = _utcnow()
        event = self.audit_log(cand.run_id).append(
            EventKind.HUMAN_DECISION,
            {
                "candidate_id": cand.id, "decision": decision, "reviewer": who, "note": note,
                "previous_status": cand.review_status, "formula": cand.formula, "e_hull": cand.e_hull,
                "content_hash": cand.content_hash,
            },
            actor=who,
        )
        where = f"run_id = {_sql_str(cand.run_id)} AND id = {_sql_str(cand.id)}"
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
            f"run_id = {_sql_str(audit.run_id)}",
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

    # ------------------------------------------------------------------------------------------------
    # Maintenance

    def has_vector_index(self) -> bool:
        indices = self._retry(lambda: self._candidates.list_indices(), "list indices")
        return any("vector" in list(getattr(ix, "columns", [])) for ix in indices)

    def create_vector_index(
        self,
        *,
        num_partitions: int | None = None,
        num_sub_vectors: int | None = None,
        sample_rate: int = 64,
        max_iterations: int = 20,
    ) -> None:
        """Build an IVF_PQ index on the fingerprints (worth it beyond ~100k rows; search is exact before).

        Defaults: sqrt(rows) partitions (1..1024), FINGERPRINT_DIM / 16 sub-vectors (16 dims each),
        k-means on 64 samples per partition for 20 iterations: on 2 shared cores the default LanceDB
        settings (256 samples, 50 iterations, 8-dim sub-vectors) took 6 min at 100k rows for no recall
        gain once results are re-ranked (``refine_factor``); see benchmarks/bench_store.py.
        """
        from lancedb.index import IvfPq

        n = self.count()
        parts = num_partitions or int(np.clip(np.sqrt(max(n, 1)), 1, 1024))
        subs = num_sub_vectors or FINGERPRINT_DIM // 16
        cfg = IvfPq(
            distance_type="l2", num_partitions=parts, num_sub_vectors=subs, sample_rate=sample_rate,
            max_iterations=max_iterations,
        )
        self._retry(lambda: self._candidates.create_index("vector", config=cfg, replace=True), "create vector index")

    def create_scalar_indexes(self) -> list[str]:
        """Index the filter columns (B-tree on ids, formula, chemical system, E_hull; label list on
        elements; bitmap on review status), so filtered queries stay fast at millions of rows."""
        specs = [
            ("id", "BTREE"), ("run_id", "BTREE"), ("formula", "BTREE"), ("chemsys", "BTREE"), ("e_hull", "BTREE"),
            ("elements", "LABEL_LIST"), ("review_status", "BITMAP"),
        ]
        for column, kind in specs:
            self._retry(
                lambda c=column, k=kind: self._candidates.create_scalar_index(c, index_type=k, replace=True),
                f"index {column}",
            )
        return [c for c, _ in specs]

    def optimize(
        self, *, cleanup_older_than: dt.timedelta = dt.timedelta(minutes=10), index: bool | None = None
    ) -> dict[str, bool]:
        """Compact small fragments, fold new rows into existing indices, drop versions older than the
        given age (kept that long so readers in other processes never lose the version they read).

        ``index``: True builds the vector and scalar indexes now; None (``tessera store optimize``)
        builds them once the table holds ``settings.auto_index_rows`` rows and has none; False never
        (the automatic compaction inside writers, which must not stall a campaign for minutes).
        """
        for name, table in ((CANDIDATES, self._candidates), (RUNS, self._runs)):
            self._retry(lambda t=table: t.optimize(cleanup_older_than=cleanup_older_than), f"optimize {name}")
        built = {"vector_index": False, "scalar_indexes": False}
        if index is False:
            return built
        if index or (not self.has_vector_index() and self.count() >= self.settings.auto_index_rows):
            self.create_vector_index()
            self.create_scalar_indexes()
            built = {"vector_index": True, "scalar_indexes": True}
        return built

    def table_versions(self) -> dict[str, int]:
        return {CANDIDATES: int(self._candidates.version), RUNS: int(self._runs.version)}


class RunHandle(AbstractContextManager["RunHandle"]):
    """Records one run: its candidates and its audit events. Get one from ``Store.start_run``.

    Used as a context manager, an exception escaping the block finishes the run as ``failed`` (with the
    error in the log) and propagates.
    """

    def __init__(self, *, store: Store, record: RunRecord, audit: AuditLog) -> None:
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
        now = _utcnow()
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
        existing: set[str] = set()
        for chunk in range(0, len(ids), 500):
            where = f"run_id = {_sql_str(self.run_id)} AND id IN (" + ", ".join(_sql_str(i) for i in ids[chunk : chunk + 500]) + ")"
            existing.update(r["id"] for r in self.store._query(where, ["id"], None))
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
        now = _utcnow()
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
            self.log_error(f"{type(exc).__name__}: {_first_line(exc)}")
            self.finish({"error": _first_line(exc)}, status="failed")
        return None


def open_store(location: str | os.PathLike[str] | None = None, *, create: bool = True) -> Store:
    """Shorthand for ``Store.open``."""
    return Store.open(location, create=create)


__all__ = [
    "RunHandle",
    "Store",
    "candidate_filter",
    "normalise_elements",
    "normalise_formula",
    "open_store",
]
