"""The stability model: promotion rule, hull labels by hand, ranking a ground state above a random cell,
save/load, determinism, and one active-learning step. Uses the shipped versions under data/stability/ and
tiny slices of its data; never ../shared."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Composition, Structure

from tessera.tools.candidate import Candidate
from tessera.tools.hull import ReferenceHull
from tessera.tools.pool import load_pool, row_to_structure
from tessera.tools.prescreen import PrescreenParams, StabilityModelStage, build_prescreen
from tessera.tools.stability_model import (
    N_FEATURES,
    STABILITY_DIR,
    LabelledSet,
    Registry,
    StabilityModel,
    TrainParams,
    beats,
    classification_metrics,
    label_from_energy,
    learn_from,
    train,
)

TINY = TrainParams(hidden=16, depth=1, epochs=5, finetune_epochs=3, batch_size=32, seed=3)


@pytest.fixture(scope="module")
def hull() -> ReferenceHull:
    return ReferenceHull.default()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A private copy of the shipped registry: the held-out set, a slice of the base set, the promoted version."""
    shipped = Registry()
    promoted = shipped.promoted()
    assert promoted is not None, "data/stability/ ships no promoted version"
    root = tmp_path / "stability"
    root.mkdir()
    shutil.copy(shipped.heldout_path, root / "heldout.npz")
    base = shipped.base_train()
    keep = np.random.default_rng(0).permutation(len(base))[:200]
    base.subset(np.sort(keep)).save(root / "train.npz")
    shutil.copytree(promoted.path, root / promoted.name)
    return Registry(root)


def tiny_set(n: int = 64, seed: int = 0) -> LabelledSet:
    base = Registry().base_train()
    pick = np.sort(np.random.default_rng(seed).permutation(len(base))[:n])
    return base.subset(pick)


# ---------------------------------------------------------------------------------------------- versions


def test_shipped_version_is_promoted_and_measured() -> None:
    reg = Registry()
    v = reg.promoted()
    assert v is not None and v.promoted
    assert v.record.heldout.n == reg.heldout().finite().y.size
    assert v.lineage.n_train > 0 and v.lineage.data_sources and v.lineage.feature_spec
    assert (v.path / "model.pt").stat().st_size < 1_000_000  # weights stay small


def test_worse_version_is_kept_but_not_promoted(registry: Registry) -> None:
    parent = registry.promoted()
    assert parent is not None
    bad = train(tiny_set(), params=TINY)
    with __import__("torch").no_grad():  # make it call nothing stable: F1 0 on the held-out set
        bad.net.head.bias.fill_(-50.0)
        bad.net.head.weight.zero_()
    v = registry.save_version(bad, parent=parent, train_data=tiny_set())
    assert v.record.heldout.f1 == 0.0 < parent.record.heldout.f1
    assert not v.promoted and v.name in [x.name for x in registry.versions()]
    assert registry.promoted().name == parent.name  # the prescreen keeps the parent
    assert registry.resolve("latest").name == v.name


def test_promotion_rule_breaks_ties_by_mae() -> None:
    truth = np.array([0.0, 0.05, 0.5, 0.9])
    call = np.array([True, True, False, False])
    a = classification_metrics(call, truth, e_pred=truth + 0.01)
    b = classification_metrics(call, truth, e_pred=truth + 0.2)
    assert a.f1 == b.f1 == 1.0
    assert beats(a, b) and not beats(b, a) and beats(a, None)


def test_save_load_round_trip(tmp_path: Path) -> None:
    data = tiny_set()
    model = train(data, params=TINY)
    model.save(tmp_path / "model.pt")
    again = StabilityModel.load(tmp_path / "model.pt")
    e1, p1 = model.predict(data.x)
    e2, p2 = again.predict(data.x)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(p1, p2)
    assert again.params == model.params


def test_training_is_deterministic_under_a_seed() -> None:
    data = tiny_set()
    e1, p1 = train(data, params=TINY).predict(data.x)
    e2, p2 = train(data, params=TINY).predict(data.x)
    e3, _ = train(data, params=TINY.model_copy(update={"seed": 4})).predict(data.x)
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(e1, e3)


def test_nan_features_give_nan_predictions() -> None:
    model = Registry().promoted().model()
    x = np.full((2, N_FEATURES), np.nan, dtype=np.float32)
    x[1] = tiny_set(4).x[0]
    e, p = model.predict(x)
    assert np.isnan(e[0]) and np.isnan(p[0]) and np.isfinite(e[1]) and 0.0 <= p[1] <= 1.0


# ---------------------------------------------------------------------------------------------- labels


def _lower_envelope(points: list[tuple[float, float]], x: float) -> float:
    """By hand: the lowest straight line between two phases (or one phase) of a binary at fraction ``x``."""
    best = min(e for xi, e in points if abs(xi - x) < 1e-9) if any(abs(xi - x) < 1e-9 for xi, _ in points) else np.inf
    for (xa, ea), (xb, eb) in itertools.combinations(points, 2):
        lo, hi = sorted([(xa, ea), (xb, eb)])
        if lo[0] < x < hi[0]:
            best = min(best, lo[1] + (hi[1] - lo[1]) * (x - lo[0]) / (hi[0] - lo[0]))
    return best


def test_label_agrees_with_a_hand_computed_hull(hull: ReferenceHull) -> None:
    # Li-O: Li2O, Li2O2 and LiO2-like phases compete; place a LiO (x_O = 0.5) cell with a chosen energy.
    refs = hull.reference_entries(("Li", "O"))
    points = [(0.0, 0.0), (1.0, 0.0)]  # the elemental end points, E_form = 0
    points += [(e.composition.get_atomic_fraction("O"), e.formation_energy_per_atom) for e in refs]
    x = 0.5
    hull_here = _lower_envelope(points, x)
    e_form = hull_here + 0.123  # 0.123 eV/atom above the hull, by construction
    s = Structure.from_spacegroup("Fm-3m", [[4.3, 0, 0], [0, 4.3, 0], [0, 0, 4.3]], ["Li", "O"],
                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    comp = Composition("LiO")
    energy = e_form + 0.5 * hull.mu["Li"] + 0.5 * hull.mu["O"]  # eV/atom, as CHGNet would report it (scheme as_is)
    assert comp.get_atomic_fraction("O") == x
    assert label_from_energy(s, energy, hull=hull) == pytest.approx(0.123, abs=1e-6)
    # and a cell sitting exactly on the envelope labels 0
    assert label_from_energy(s, energy - 0.123, hull=hull) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- the stage


def _ground_state_and_random_cell() -> tuple[Structure, Structure]:
    from pyxtal import pyxtal

    pool = load_pool()
    row = pool[pool["material_id"] == "mp-22862"]  # rock-salt NaCl, an MP ground state (E_hull 0)
    assert len(row) == 1 and row.iloc[0]["e_above_hull_mp"] == 0
    gs = row_to_structure(row.iloc[0]).get_primitive_structure()
    comp = gs.composition
    crystal = pyxtal()
    crystal.from_random(3, 1, [el.symbol for el in comp.elements], [int(comp[el]) * 2 for el in comp.elements],
                        random_state=7)
    gs2 = gs.copy()
    gs2.make_supercell([2, 1, 1])  # same atom count as the random cell
    return gs2, crystal.to_pymatgen()


def test_stage_ranks_a_ground_state_above_a_random_cell(hull: ReferenceHull) -> None:
    gs, rnd = _ground_state_and_random_cell()
    assert gs.composition.reduced_formula == rnd.composition.reduced_formula
    stage = StabilityModelStage(ehull_fn=hull.ehull_fn(), min_probability=0.5)
    good, bad = stage.check_many([gs, rnd])
    assert good.value is not None and bad.value is not None
    assert good.value < bad.value  # value ranks: lower predicted E_hull first
    assert good.passed and "P(stable)" in (good.reason or "")
    assert stage.model_name == Registry().promoted().name


def test_stage_is_off_by_default_and_wired_when_enabled(hull: ReferenceHull) -> None:
    assert not PrescreenParams().stability_model.enabled
    assert "stability_model" not in build_prescreen(ehull_fn=hull.ehull_fn()).stage_names
    on = PrescreenParams.model_validate({"stability_model": {"enabled": True, "min_probability": 0.3}})
    names = build_prescreen(on, ehull_fn=hull.ehull_fn()).stage_names
    assert names[-2:] == ["ehull", "stability_model"]


def test_stage_gates_by_probability_or_ceiling() -> None:
    def fake(structures):
        return [0.05, 0.6, float("nan")], [0.9, 0.2, float("nan")], [None, None, "CHGNet could not evaluate"]

    s = Structure.from_spacegroup("Fm-3m", [[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]], ["Na", "Cl"],
                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    by_p = StabilityModelStage(predict_fn=fake, min_probability=0.5).check_many([s, s, s])
    assert [o.passed for o in by_p] == [True, False, False]
    assert by_p[1].value == 0.6 and "stability model" in (by_p[2].reason or "")
    by_ceiling = StabilityModelStage(predict_fn=fake, min_probability=None, ceiling=0.5).check_many([s, s, s])
    assert [o.passed for o in by_ceiling] == [True, False, False]


# ---------------------------------------------------------------------------------------------- learning


def test_learn_from_adds_labels_and_versions(registry: Registry, hull: ReferenceHull) -> None:
    pool = load_pool("val")
    rows = pool[pool["n_atoms"] <= 6].head(4)
    cands = []
    for _, row in rows.iterrows():
        c = Candidate.from_structure(row_to_structure(row))
        c.relaxed, c.e_hull = True, 0.02
        cands.append(c)
    cands.append(Candidate.from_structure(row_to_structure(rows.iloc[0])))  # not relaxed: no label
    parent = registry.promoted()
    params = parent.model().params.model_copy(update={"finetune_epochs": 3})
    v = learn_from(cands, root=registry.root, ehull_fn=hull.ehull_fn(), params=params)
    assert v is not None and v.lineage.parent == parent.name and v.lineage.n_added == 4
    assert (v.path / "added.npz").exists() and v.record.parent_heldout is not None and v.lineage.fine_tuned
    assert len(registry.added_along(v)) == 4  # the memory a later round replays
    assert v.promoted == beats(v.record.heldout, v.record.parent_heldout)
    # the same crystals again teach nothing new along the promoted lineage (if promoted) -> None
    if v.promoted:
        assert learn_from(cands, root=registry.root, ehull_fn=hull.ehull_fn(), params=params) is None
    assert learn_from([], root=registry.root, ehull_fn=hull.ehull_fn()) is None
