"""The candidate store: LanceDB tables (runs, candidates) plus one audit log per run.

``Store`` is the one class a user opens; each concern lives in its own module and is mixed in here:

    store.layout    opening, directory layout and marker file, retried LanceDB calls (StoreBase)
    store.filters   candidate_filter and the formula / element normalisers
    store.queries   search, get, top_stable, nearest
    store.runs      start_run, resume_run, get_run, runs, and the RunHandle that records a run
    store.review    review decisions and verify_run
    store.indexes   vector and scalar indexes, optimize, table_versions
"""

from __future__ import annotations

import os

from tessera.store.filters import candidate_filter, normalise_elements, normalise_formula
from tessera.store.indexes import IndexesMixin
from tessera.store.review import ReviewMixin
from tessera.store.runs import RunHandle, RunsMixin


class Store(ReviewMixin, RunsMixin, IndexesMixin):
    """A Tessera candidate store. Open with ``Store.open(path_or_uri)``."""


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
