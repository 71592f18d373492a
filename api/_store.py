"""``tessera.Store``: the candidate store, opened when constructed (imports LanceDB: load it only when used)."""

from __future__ import annotations

import os
from typing import Any

from tessera.store.store import Store as _Store


class Store(_Store):
    """The candidate store (LanceDB tables of runs and candidates plus one hash-chained audit log per run),
    opened when constructed.

    ``Store()`` opens ``$TESSERA_STORE``, else ``~/.local/share/tessera/store`` (``$XDG_DATA_HOME/tessera/store``
    when set), creating it on first use; ``Store("path/or/uri")`` opens a folder or an object-storage URI;
    ``create=False`` refuses to make a new one. It is :class:`tessera.store.Store` (every method is that
    class's, and ``Store.open(...)`` works too). The calls a script needs:

    - ``search(formula=, elements=, chemsys=, within=, max_e_hull=, run_id=, review_status=, limit=100)``:
      :class:`tessera.StoredCandidate` rows, most stable (lowest E_hull) first.
    - ``nearest(structure, k=10)``: the stored candidates most similar to a pymatgen Structure.
    - ``get(candidate_id)``: one row with its full record (``.candidate()``, ``.structure()``).
    - ``review(candidate_id, "approved" | "rejected", reviewer=, note=)``: a chemist's decision, also an
      audit event.
    - ``runs()``, ``get_run(run_id)``, ``verify_run(run_id)`` (``.ok``, ``.line()``).

    Raises:
        StoreError: one line, for a store that cannot be opened (missing with ``create=False``, a file, a
        folder that is not a Tessera store, unreadable tables).
    """

    def __new__(cls, location: str | os.PathLike[str] | None = None, *, create: bool = True,
                audit_dir: str | os.PathLike[str] | None = None, **internal: Any) -> "Store":
        if internal:  # Store.open building the instance from its opened tables (db=, candidates=, ...)
            return super().__new__(cls)
        return cls.open(location, create=create, audit_dir=audit_dir)

    def __init__(self, location: str | os.PathLike[str] | None = None, *, create: bool = True,
                 audit_dir: str | os.PathLike[str] | None = None, **internal: Any) -> None:
        if internal:  # from Store.open; a public call arrives here with the instance already opened
            super().__init__(location=str(location), audit_dir=audit_dir, **internal)

    def __repr__(self) -> str:
        return f"tessera.Store({self.location!r})"
