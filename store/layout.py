"""Opening a store: the directory layout, the marker file, the two tables, and retried LanceDB calls.

Layout of a local store directory::

    <store>/tessera-store.json   marker: format name, version, fingerprint version (refuses foreign dirs)
    <store>/runs.lance/          LanceDB table, one row per run
    <store>/candidates.lance/    LanceDB table, one row per (run_id, candidate id), with the fingerprint
    <store>/audit/<run_id>.jsonl append-only hash-chained audit log of each run (see store.audit)

A URI location (``s3://``, ``gs://``, ``az://``, ``memory://``) keeps the tables there and the audit logs
in the local ``TESSERA_AUDIT_DIR`` (or ``Store.open(..., audit_dir=...)``).

``StoreBase`` holds the open tables and the primitives every concern builds on (a retried call, a
candidates query, a run-row lookup and update, a commit counter that triggers compaction). Concurrent
writers: LanceDB rebases compatible commits itself; a remaining commit conflict is retried here with
exponential backoff. Readers use strong consistency (``read_consistency_interval=0``), so a command
sees what another process acknowledged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Self, TypeVar

# LanceDB's Rust logger prints warnings (retried compaction conflicts, deprecations) straight to stderr;
# the CLI's contract is one clear line per problem, so only its errors are shown unless asked for.
os.environ.setdefault("LANCEDB_LOG", "error")

import lancedb  # noqa: E402
import pyarrow as pa  # noqa: E402

from tessera.store.audit import AuditLog  # noqa: E402
from tessera.store.filters import candidate_filter, sql_in, sql_str  # noqa: E402
from tessera.store.schema import ADDED_COLUMNS, CANDIDATE_SCHEMA, RUN_SCHEMA  # noqa: E402
from tessera.store.settings import StoreSettings, resolve_store_location  # noqa: E402
from tessera.tools.errors import InputError, StoreError  # noqa: E402
from tessera.tools.fingerprint import FINGERPRINT_DIM, FINGERPRINT_VERSION  # noqa: E402

log = logging.getLogger(__name__)

MARKER_NAME = "tessera-store.json"
STORE_FORMAT = "tessera-store"
STORE_VERSION = 1
CANDIDATES = "candidates"
RUNS = "runs"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_T = TypeVar("_T")


def first_line(exc: BaseException) -> str:
    """The first line of an error, without the Rust source locations LanceDB appends."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return re.sub(r",?\s*/\S+\.rs:\d+:\d+", "", lines[0])[:300]


def is_conflict(exc: BaseException) -> bool:
    """Whether a LanceDB error is a commit conflict another attempt may clear."""
    msg = str(exc).lower()
    return any(s in msg for s in ("conflict", "retryable", "concurrent"))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def check_local_dir(root: Path, *, create: bool) -> None:
    """Refuse a file, a foreign or corrupt directory, or another store version; with ``create``, write
    the marker into a new or empty directory."""
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
                        "created_at": utcnow().isoformat(),
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


def open_table(db: Any, name: str, schema: pa.Schema, *, display: str, exists: bool, create: bool) -> Any:
    """Open (or create) one table and read its manifest and first row, so a corrupt table fails here."""
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
            if (is_conflict(exc) or "already exists" in str(exc).lower()) and attempt < 5:
                # another process is creating the same table right now
                time.sleep(0.05 * 2**attempt)
                exists = True
                continue
            raise StoreError(f"store {display} is corrupt: table '{name}' cannot be read ({first_line(exc)})") from exc
        missing = [f.name for f in schema if f.name not in got.names]
        if missing and set(missing) <= ADDED_COLUMNS:
            # An older store: add the newer nullable columns (a schema-only commit; rows read them as null).
            try:
                table.add_columns([schema.field(name) for name in missing])
            except (OSError, RuntimeError, ValueError) as exc:
                if not is_conflict(exc) and "already exists" not in str(exc).lower():
                    raise StoreError(f"store {display}: cannot add columns {missing} ({first_line(exc)})") from exc
            table = db.open_table(name)  # another process may have added them first: read the schema again
            missing = [f.name for f in schema if f.name not in table.schema.names]
        if missing:
            raise StoreError(f"store {display}: table '{name}' lacks columns {missing[:5]} (foreign or older store)")
        return table
    raise StoreError(f"store {display}: table '{name}' cannot be opened ({first_line(last) if last else '?'})")


class StoreBase:
    """The open tables of a store and the primitives the query, run, review and index code share."""

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

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        audit_dir: str | os.PathLike[str] | None = None,
    ) -> Self:
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
            check_local_dir(root, create=create)
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
            raise StoreError(f"cannot open store {display}: {first_line(exc)}") from exc
        if not local and not create and not {CANDIDATES, RUNS} <= names:
            raise StoreError(f"no Tessera store at {display}")
        if not local and names and not names <= {CANDIDATES, RUNS}:
            raise StoreError(f"{display} holds tables {sorted(names)}: not a Tessera store")
        tables = {}
        for name, schema in ((CANDIDATES, CANDIDATE_SCHEMA), (RUNS, RUN_SCHEMA)):
            tables[name] = open_table(db, name, schema, display=display, exists=name in names, create=create)
        adir.mkdir(parents=True, exist_ok=True)
        return cls(
            location=display, db=db, candidates=tables[CANDIDATES], runs=tables[RUNS], audit_dir=adir, settings=settings
        )

    def _retry(self, fn: Callable[[], _T], what: str) -> _T:
        """Run a LanceDB operation, retrying commit conflicts with backoff; other failures -> StoreError."""
        attempts = self.settings.commit_retries
        for attempt in range(attempts):
            try:
                return fn()
            except (OSError, RuntimeError, ValueError) as exc:
                if is_conflict(exc) and attempt < attempts - 1:
                    self.conflicts_retried += 1
                    time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
                    continue
                raise StoreError(f"store {self.location}: {what} failed: {first_line(exc)}") from exc
        raise AssertionError("unreachable")

    # -- candidates table -------------------------------------------------------------------------------

    def _query(self, where: str | None, columns: list[str] | None, limit: int | None) -> list[dict[str, Any]]:
        def run() -> pa.Table:
            q = self._candidates.search()
            if where:
                q = q.where(where)
            if columns is not None:
                q = q.select(columns)
            return q.limit(limit).to_arrow()

        return self._retry(run, "query").to_pylist()

    def _query_ids(self, run_id: str, ids: list[str], columns: list[str]) -> list[dict[str, Any]]:
        """The rows of one run with these ids (500 ids per query, to keep the SQL short)."""
        rows: list[dict[str, Any]] = []
        for chunk in range(0, len(ids), 500):
            where = f"run_id = {sql_str(run_id)} AND " + sql_in("id", ids[chunk : chunk + 500])
            rows.extend(self._query(where, columns, None))
        return rows

    def count(self, **filters: Any) -> int:
        """Number of candidates matching the filters of ``candidate_filter``."""
        where = candidate_filter(**filters)
        return int(self._retry(lambda: self._candidates.count_rows(where), "count"))

    def has_vector_index(self) -> bool:
        """Whether the fingerprints have an IVF_PQ index (nearest-neighbour search is exact without)."""
        indices = self._retry(lambda: self._candidates.list_indices(), "list indices")
        return any("vector" in list(getattr(ix, "columns", [])) for ix in indices)

    def add_rows(self, table: pa.Table) -> None:
        """Append rows already in CANDIDATE_SCHEMA as one commit (used by add_candidates and benchmarks)."""
        self._retry(lambda: self._candidates.add(table), "insert")
        self._after_commit()

    def _after_commit(self) -> None:
        self._commits += 1
        if self._commits % self.settings.compact_every == 0:
            try:
                self._compact()
            except StoreError as exc:
                # The caller's rows are already committed; compaction can wait for the next try.
                log.warning("store maintenance postponed: %s", exc)

    def _compact(self, cleanup_older_than: dt.timedelta = dt.timedelta(minutes=10)) -> None:
        """Compact small fragments of both tables, fold new rows into existing indices, and drop versions
        older than ``cleanup_older_than`` (kept that long so readers in other processes never lose the
        version they read)."""
        for name, table in ((CANDIDATES, self._candidates), (RUNS, self._runs)):
            self._retry(lambda t=table: t.optimize(cleanup_older_than=cleanup_older_than), f"optimize {name}")

    # -- runs table and audit logs ----------------------------------------------------------------------

    def _run_row(self, run_id: str) -> dict[str, Any] | None:
        rows = self._retry(
            lambda: self._runs.search().where(f"run_id = {sql_str(run_id)}").limit(None).to_arrow(), "run lookup"
        ).to_pylist()
        return rows[0] if rows else None

    def _update_run(self, run_id: str, values: dict[str, Any], what: str) -> None:
        self._retry(lambda: self._runs.update(where=f"run_id = {sql_str(run_id)}", values=values), what)

    def audit_log(self, run_id: str) -> AuditLog:
        """The audit log of a run (the file may not exist yet)."""
        if not _RUN_ID.match(run_id):
            raise InputError(f"not a run id: {run_id!r}")
        return AuditLog(path=self.audit_dir / f"{run_id}.jsonl", run_id=run_id)
