"""Index maintenance: the IVF_PQ index on fingerprints, scalar indexes on filter columns, compaction.

Writers compact on their own every ``settings.compact_every`` commits (``StoreBase._after_commit``) but
never build indexes; ``optimize`` (``tessera store optimize``) builds them once a store is large enough.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from tessera.store.layout import CANDIDATES, RUNS, StoreBase
from tessera.tools.fingerprint import FINGERPRINT_DIM


class IndexesMixin(StoreBase):
    """``create_vector_index``, ``create_scalar_indexes``, ``optimize``, ``table_versions``."""

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
        self._compact(cleanup_older_than)
        built = {"vector_index": False, "scalar_indexes": False}
        if index is False:
            return built
        if index or (not self.has_vector_index() and self.count() >= self.settings.auto_index_rows):
            self.create_vector_index()
            self.create_scalar_indexes()
            built = {"vector_index": True, "scalar_indexes": True}
        return built

    def table_versions(self) -> dict[str, int]:
        """The current LanceDB version of each table ({'candidates': n, 'runs': m})."""
        return {CANDIDATES: int(self._candidates.version), RUNS: int(self._runs.version)}


__all__ = ["IndexesMixin"]
