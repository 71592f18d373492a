"""The candidate store (LanceDB) and the tamper-evident audit log.

Public API::

    from tessera.store import Store, AuditObserver
    store = Store.open(path_or_uri)            # None: $TESSERA_STORE or ~/.local/share/tessera/store
    run = store.start_run("evaluate", params, goal=..., spec_hash=..., checkpoint_hash=..., seed=...)
    run.log_event(kind, payload)               # or log_goal / log_plan / log_llm_call / log_tool_call
    run.add_candidates(candidates, round=0, provenance={...})
    run.finish(summary)
    store.search(formula=..., elements=..., chemsys=..., max_e_hull=..., run_id=..., review_status=...)
    store.nearest(structure, k=10); store.top_stable(run_id, k=10)
    store.review(candidate_id, "approved", reviewer=..., note=...)
    store.verify_run(run_id)
"""

from tessera.store.audit import AuditEvent, AuditLog, EventKind, VerifyResult, redact
from tessera.store.observer import AuditObserver
from tessera.store.schema import RunRecord, StoredCandidate
from tessera.store.settings import StoreSettings, default_store_location, resolve_store_location
from tessera.store.store import RunHandle, Store, candidate_filter, open_store

__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditObserver",
    "EventKind",
    "RunHandle",
    "RunRecord",
    "Store",
    "StoreSettings",
    "StoredCandidate",
    "VerifyResult",
    "candidate_filter",
    "default_store_location",
    "open_store",
    "redact",
    "resolve_store_location",
]
