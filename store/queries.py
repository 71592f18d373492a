"""Reading candidates: filtered search, one candidate by id, the most stable of a run, and similarity.

Filters are those of ``candidate_filter`` (store.filters); ``count`` lives on ``StoreBase`` because
runs and index maintenance count rows too.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pymatgen.core import Structure

from tessera.store.filters import candidate_filter, sql_str
from tessera.store.layout import StoreBase
from tessera.store.schema import LIGHT_COLUMNS, RECORD_COLUMNS, StoredCandidate
from tessera.tools.errors import InputError
from tessera.tools.fingerprint import FINGERPRINT_DIM, structure_fingerprint


class QueriesMixin(StoreBase):
    """Candidate queries: ``search``, ``get``, ``top_stable``, ``nearest``."""

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
            for row in self._query_ids(run_id, [r["id"] for r in group], cols):
                out[(row["run_id"], row["id"])] = row
        return [StoredCandidate(**out[k]) for k in order if k in out]

    def top_stable(self, run_id: str, k: int = 10) -> list[StoredCandidate]:
        """The k candidates of a run with the lowest E_hull (those without E_hull are skipped)."""
        return [c for c in self.search(run_id=run_id, limit=k, sort_by="e_hull") if c.e_hull is not None]

    def get(self, candidate_id: str, *, run_id: str | None = None) -> StoredCandidate:
        """One candidate with its full record. InputError if absent or ambiguous (then pass run_id)."""
        where = f"id = {sql_str(candidate_id)}" + (f" AND run_id = {sql_str(run_id)}" if run_id else "")
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

        ``query``: a Structure, or a fingerprint of shape (FINGERPRINT_DIM,). ``distance`` on each result
        is the Euclidean fingerprint distance (0 = identical, at most 2). Exact (flat) search until a
        vector index exists; with an IVF_PQ index, ``nprobes`` partitions are searched and
        ``refine_factor * k`` hits re-ranked with exact distances.
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


__all__ = ["QueriesMixin"]
