"""The candidate store API on a real LanceDB directory: recording, queries, similarity, review, verify."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pytest

from tessera.store import AuditObserver, Store
from tessera.store.schema import candidate_row, rows_to_table
from tests.store.conftest import make_candidates, rocksalt
from tessera.tools.candidate import Candidate
from tessera.tools.errors import InputError, StoreError
from tessera.tools.fingerprint import FINGERPRINT_DIM, fingerprint_from_arrays
from tessera.tools.pool import load_pool, row_arrays, row_to_structure


def test_record_and_query(store: Store) -> None:
    cands = make_candidates(20)
    with store.start_run("evaluate", {"n": 20}, seed=7, spec_hash="abc") as run:
        ids = run.add_candidates(cands, round=1, provenance={"checkpoint_hash": "ckpt"})
    assert ids == [c.id for c in cands]
    assert store.count() == 20 and store.count(run_id=run.run_id) == 20
    rec = store.get_run(run.run_id)
    assert rec.status == "finished" and rec.n_candidates == 20 and rec.seed == 7

    got = store.get("c0001")
    assert got.candidate() == cands[1]  # the full record round-trips exactly
    assert got.round == 1 and got.checkpoint_hash == "ckpt" and got.spec_hash == "abc" and got.seed == 7
    assert got.code_version and got.review_status == "pending" and got.spacegroup == "Fm-3m"
    assert got.elements == ["Mg", "O"] and got.chemsys == "Mg-O" and got.n_atoms == 8

    assert {c.formula for c in store.search(formula="ClNa", limit=None)} == {"NaCl"}
    assert len(store.search(formula="NaCl", limit=None)) == 4
    assert all("O" in c.elements for c in store.search(elements="O", limit=None))
    assert {c.chemsys for c in store.search(within="Mg-O-Na-Cl", limit=None)} == {"Mg-O", "Cl-Na"}
    assert store.count(chemsys="O-Mg") == 4
    low = store.search(max_e_hull=0.05, limit=None)
    assert low and all(c.e_hull is not None and c.e_hull <= 0.05 for c in low)
    expected = sorted(c.e_hull for c in cands if c.e_hull is not None)[:3]
    assert [c.e_hull for c in store.top_stable(run.run_id, 3)] == pytest.approx(expected)
    failed = store.get("c0003")
    assert failed.prescreen_passed is False and failed.prescreen_failed_stage == "geometry" and failed.e_hull is None
    with pytest.raises(InputError):
        store.search(formula="Xx2")
    with pytest.raises(InputError):
        store.search(review_status="maybe")


def test_rattled_copy_is_the_top_hit_among_10k(tmp_path: Path) -> None:
    """A 0.01 A rattle of a stored structure finds it first among 10k others."""
    store = Store.open(tmp_path / "s")
    pool = load_pool()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(pool), size=10_001, replace=False)
    target_row, others = pool.iloc[pick[0]], pool.iloc[pick[1:]]
    template = candidate_row(make_candidates(1)[0], run_id="bulk", round=0, run_provenance={},
                             recorded_at=dt.datetime.now(dt.timezone.utc))
    rows = []
    for _, row in others.iterrows():
        r = dict(template, id=row["material_id"], formula=row["formula"], cif=None, initial_cif=None,
                 candidate_json=None, vector=fingerprint_from_arrays(*row_arrays(row)))
        rows.append(r)
    store.add_rows(rows_to_table(rows))
    with store.start_run("evaluate", {}) as run:
        target = Candidate.from_structure(row_to_structure(target_row), source=target_row["material_id"])
        run.add_candidates([target])
    assert store.count() == 10_001

    rattled = row_to_structure(target_row)
    rattled.perturb(0.01)
    hits = store.nearest(rattled, k=5)
    assert hits[0].id == target.id and hits[0].run_id == run.run_id
    assert hits[0].distance < 0.01 < hits[1].distance
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    # Filters combine with similarity: excluding the target's run leaves only the pool rows.
    assert store.nearest(rattled, k=1, run_id="bulk")[0].id != target.id


def test_review_is_an_audit_event_and_verify_checks_rows(store: Store) -> None:
    with store.start_run("evaluate", {}) as run:
        run.add_candidates(make_candidates(6))
    out = store.review("c0002", "approved", reviewer="marie", note="synthesise first")
    assert (out.review_status, out.reviewer, out.review_note) == ("approved", "marie", "synthesise first")
    store.review("c0004", "rejected", reviewer="marie", note="toxic")
    events = store.audit_log(run.run_id).events()
    decisions = [e for e in events if e.kind == "human_decision"]
    assert [(d.payload["candidate_id"], d.payload["decision"], d.actor) for d in decisions] == [
        ("c0002", "approved", "marie"), ("c0004", "rejected", "marie"),
    ]
    assert store.count(review_status="approved") == 1 and store.count(review_status="pending") == 4
    assert store.verify_run(run.run_id).ok

    # A number changed in the table behind the log's back is caught ...
    original = store.get("c0001")
    store._candidates.update(where="id = 'c0001'", values={"e_hull": -1.0})
    res = store.verify_run(run.run_id)
    assert not res.ok and "c0001" in res.problem and "column e_hull" in res.problem
    # ... and so is an edit of the stored record itself.
    store._candidates.update(where="id = 'c0001'", values={"e_hull": original.e_hull})
    assert store.verify_run(run.run_id).ok
    forged = original.candidate_json.replace('"novel":false', '"novel":true')
    store._candidates.update(where="id = 'c0001'", values={"candidate_json": forged})
    res = store.verify_run(run.run_id)
    assert not res.ok and "c0001" in res.problem and "stored record differs" in res.problem


def test_review_changed_in_table_is_caught(store: Store) -> None:
    with store.start_run("evaluate", {}) as run:
        run.add_candidates(make_candidates(3))
    store._candidates.update(where="id = 'c0000'", values={"review_status": "approved"})
    res = store.verify_run(run.run_id)
    assert not res.ok and "no decision in the log" in res.problem


def test_rerecord_updates_and_same_id_in_two_runs(store: Store) -> None:
    cands = make_candidates(3)
    run1 = store.start_run("evaluate", {})
    run1.add_candidates(cands)
    cands[0].e_hull = -0.5
    run1.add_candidates(cands[:1])  # the same id again in the same run: an update, not a duplicate
    run1.finish()
    assert store.count(run_id=run1.run_id) == 3 and store.get("c0000").e_hull == -0.5
    assert store.verify_run(run1.run_id).ok
    with store.start_run("evaluate", {}) as run2:
        run2.add_candidates(cands[:1])
    with pytest.raises(InputError, match="several runs"):
        store.get("c0000")
    assert store.get("c0000", run_id=run2.run_id).run_id == run2.run_id


def test_failed_run_and_observer(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.start_run("campaign", {"api_key": "sk-thisisasecretkey1234"}) as run:
            obs = AuditObserver(run, kind="round", every=2)
            for step in obs.watch([{"round": i, "ids": list(range(100))} for i in range(5)]):
                pass
            with obs.tool_call("relax", {"n": 2}) as call:
                call.result = {"converged": 2}
            with obs.tool_call("hull", {"n": 2}):
                raise RuntimeError("boom")
    rec = store.get_run(run.run_id)
    assert rec.status == "failed" and "boom" in rec.summary["error"]
    events = store.audit_log(run.run_id).events()
    kinds = [e.kind for e in events]
    assert kinds == ["run_started", "round", "round", "round", "tool_call", "tool_call", "error", "run_finished"]
    assert events[1].payload["ids"] == {"len": 100, "head": [0, 1, 2, 3, 4]}
    assert events[4].payload["result"] == {"converged": 2} and events[4].payload["seconds"] >= 0
    assert "boom" in events[5].payload["error"]
    assert events[0].payload["params"]["api_key"] == "[REDACTED]"
    assert rec.params["api_key"] == "[REDACTED]"  # nor in the runs table
    assert "thisisasecret" not in store.audit_log(run.run_id).path.read_text()
    assert store.verify_run(run.run_id).ok


def test_bad_structures_do_not_sink_the_batch(store: Store) -> None:
    good = make_candidates(2)
    no_structure = Candidate(id="empty", formula="NaCl", error="generator produced nothing")
    broken = Candidate(id="broken", formula="MgO", cif="data_x\n_this is not a cif")
    with store.start_run("evaluate", {}) as run:
        run.add_candidates([*good, no_structure, broken])
    assert store.count() == 4
    e = store.get("empty")
    assert e.error and e.elements == ["Cl", "Na"]
    hits = store.nearest(rocksalt(4.0), k=10)
    assert {h.id for h in hits} == {"c0000", "c0001"}  # rows without a fingerprint are not searched


def test_open_refuses_foreign_and_corrupt(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="not a Tessera store"):
        Store.open(foreign)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store.open(a_file)
    with pytest.raises(StoreError, match="no Tessera store"):
        Store.open(tmp_path / "missing", create=False)

    good = Store.open(tmp_path / "good")
    with good.start_run("evaluate", {}) as run:
        run.add_candidates(make_candidates(3))
    marker = tmp_path / "good" / "tessera-store.json"
    original = marker.read_text()
    marker.write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        Store.open(tmp_path / "good")
    marker.write_text(original)
    for manifest in (tmp_path / "good" / "candidates.lance" / "_versions").iterdir():
        manifest.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt") as info:
        Store.open(tmp_path / "good")
    assert "\n" not in str(info.value) and ".rs:" not in str(info.value)


def test_a_reviewed_hit_keeps_its_numbers_provenance_and_review(store: Store) -> None:
    """Every column a chemist needs to trace a hit back to the model and settings is filled in the row."""
    cand = make_candidates(1)[0]
    with store.start_run("evaluate", {}, seed=3, spec_hash="spec", checkpoint_hash="ckpt") as run:
        run.add_candidates([cand], round=2, provenance={"constraints_satisfied": True})
    store.review(cand.id, "approved", reviewer="ada", note="make it")
    needed = ["id", "run_id", "round", "formula", "elements", "chemsys", "n_atoms", "spacegroup", "cif",
              "prescreen_json", "relaxed", "energy_per_atom", "e_hull", "unique", "novel", "constraints_satisfied",
              "vector", "checkpoint_hash", "spec_hash", "seed", "code_version", "review_status", "reviewer",
              "review_note"]
    (row,) = store._query(None, needed, None)
    assert [c for c in needed if row[c] is None] == []
    assert (row["run_id"], row["round"], row["seed"], row["spec_hash"], row["checkpoint_hash"]) == (
        run.run_id, 2, 3, "spec", "ckpt"
    )
    assert (row["review_status"], row["reviewer"], row["review_note"]) == ("approved", "ada", "make it")
    assert row["constraints_satisfied"] is True and len(row["vector"]) == FINGERPRINT_DIM
    assert store.nearest(cand.structure(), k=1)[0].distance == pytest.approx(0.0, abs=1e-6)


def test_structure_edited_in_table_is_caught(store: Store) -> None:
    with store.start_run("evaluate", {}) as run:
        run.add_candidates(make_candidates(3))
    moved = rocksalt(4.9, ("Mg", "O")).to(fmt="cif")
    store._candidates.update(where="id = 'c0001'", values={"cif": moved})
    res = store.verify_run(run.run_id)
    assert not res.ok and "c0001" in res.problem


def test_uri_store_keeps_audit_logs_locally(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="TESSERA_AUDIT_DIR"):
        Store.open("memory://tessera-test")
    store = Store.open("memory://tessera-test", audit_dir=tmp_path / "audit")
    with store.start_run("sample", {}) as run:
        run.add_candidates(make_candidates(4))
    assert store.count() == 4 and store.verify_run(run.run_id).ok
    assert (tmp_path / "audit" / f"{run.run_id}.jsonl").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG data directory rule is Linux's")
def test_default_location_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tessera.store.settings import default_store_location, resolve_store_location

    monkeypatch.delenv("TESSERA_STORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_store_location() == str(tmp_path / "xdg" / "tessera" / "store") == default_store_location()
    monkeypatch.setenv("TESSERA_STORE", str(tmp_path / "env"))
    assert resolve_store_location() == str(tmp_path / "env")
    assert resolve_store_location(tmp_path / "explicit") == str(tmp_path / "explicit")
    assert Store.open().location == str((tmp_path / "env").resolve())


def test_optimize_and_indexes_keep_answers(store: Store) -> None:
    with store.start_run("evaluate", {}) as run:
        for k in range(4):
            run.add_candidates(make_candidates(40, seed=k, prefix=f"b{k}-"))
    before = [c.id for c in store.search(formula="MgO", max_e_hull=0.2, limit=None)]
    q = rocksalt(4.3, ("Ca", "S"))
    near_before = [c.distance for c in store.nearest(q, k=5)]
    assert store.optimize() == {"vector_index": False, "scalar_indexes": False}  # 160 rows: no index yet
    assert store.optimize(index=True)["vector_index"] and store.has_vector_index()
    assert [c.id for c in store.search(formula="MgO", max_e_hull=0.2, limit=None)] == before
    near_after = store.nearest(q, k=5)  # rock-salt CaS cells tie (volume is scaled out): compare distances
    assert [c.distance for c in near_after] == pytest.approx(near_before, abs=1e-4)
    assert {c.formula for c in near_after} == {"CaS"}
    store.review("b0-0001", "approved", note="after indexing")
    assert store.count(review_status="approved") == 1 and store.verify_run(run.run_id).ok
