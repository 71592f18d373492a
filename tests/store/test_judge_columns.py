"""Stability and novelty levels as store columns; a store written before they existed opens and gains them."""

from __future__ import annotations

from pathlib import Path

import lancedb

from tests.store.conftest import make_candidates
from tessera.store import Store
from tessera.store.layout import CANDIDATES
from tessera.store.schema import ADDED_COLUMNS


def test_levels_are_columns(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    cands = make_candidates(4)
    c = cands[0]
    c.e_hull, c.stable, c.e_hull_confirm, c.confirmed, c.novel_prototype, c.plausible = -0.01, True, 0.03, True, False, True
    with store.start_run("evaluate", {}) as run:
        run.add_candidates(cands)
    got = store.get(c.id)
    assert (got.on_hull, got.e_hull_confirm, got.confirmed, got.novel_prototype, got.plausible) == (True, 0.03, True, False, True)
    assert got.candidate().confirmed is True
    assert store.get(cands[3].id).confirmed is None  # not judged by the second potential: null, not False


def test_an_older_store_opens_and_gains_the_new_columns(tmp_path: Path) -> None:
    root = tmp_path / "old"
    with Store.open(root).start_run("evaluate", {}) as run:
        run.add_candidates(make_candidates(3))
    rows = [{"id": c.id, "formula": c.formula} for c in make_candidates(3)]
    # What a store written before the levels existed looks like: the same table without those columns.
    lancedb.connect(str(root)).open_table(CANDIDATES).drop_columns(sorted(ADDED_COLUMNS))
    assert not ADDED_COLUMNS & set(lancedb.connect(str(root)).open_table(CANDIDATES).schema.names)

    store = Store.open(root)
    old = store.get(rows[0]["id"])
    assert old.formula == rows[0]["formula"] and old.confirmed is None and old.novel_prototype is None
    new = make_candidates(1, prefix="n")[0]
    new.e_hull_confirm, new.confirmed = 0.01, True
    with store.start_run("evaluate", {}) as run:
        run.add_candidates([new])
    assert store.get(new.id).confirmed is True
    assert Store.open(root).count() == 4  # reopening (columns present now) changes nothing
