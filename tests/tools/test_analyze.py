"""Analysis: symmetry, dedup, novelty (with the fingerprint pre-filter's safety), and the measures.

Pre-filter calibration (recorded 2026-11-22, scratch script, pool of 19,952 structures): fingerprint
distances (on copies rescaled to 20 A^3/atom) of pairs StructureMatcher matches were at most 0.32 for
244 strained (+-8%), rattled (0.15 A) and rescaled (0.85-1.2x volume) pool copies, at most 0.19 for 90
CHGNet-relaxed vs DFT structures, and at most 0.65 for 369 pairs of distinct pool materials that
match each other; the cutoff 0.8 missed none of them. The test below re-checks a seeded sample.
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from tessera.tools.analyze import (
    FINGERPRINT_CUTOFF,
    MatchParams,
    NoveltyIndex,
    analyze_batch,
    assess_batch,
    deduplicate,
    match_fingerprint,
    structures_match,
    symmetry,
)
from tessera.tools.candidate import Candidate
from tessera.tools.fingerprint import fingerprint_distance
from tessera.tools.measures import (
    batch_measures,
    compositional_validity,
    is_on_hull,
    is_stable,
    property_distances,
    structural_validity,
    two_proportion_z_test,
)
from tessera.tools.pool import load_pool, row_to_structure


def _rock_salt(a: float = 5.64, species: tuple[str, str] = ("Na", "Cl")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def _moved(s: Structure, angle: float = 41.0, shift: float = 0.29) -> Structure:
    """Rotated lattice, shifted coordinates, reversed site order: the same crystal."""
    op = SymmOp.from_axis_angle_and_translation([1, -2, 0.5], angle)
    return Structure(Lattice(s.lattice.matrix @ op.rotation_matrix.T), list(reversed(s.species)),
                     list(reversed((s.frac_coords + shift) % 1.0)))


@pytest.fixture(scope="module")
def pool_unique_formula_row():
    """A pool material whose reduced formula occurs once in the pool (so excluding it makes it novel)."""
    df = load_pool()
    counts = df["formula"].value_counts()
    single = df[df["formula"].map(counts) == 1]
    return single.sort_values("material_id").iloc[0]


# ---------------------------------------------------------------------------------------------- symmetry


def test_symmetry_of_rock_salt_is_invariant() -> None:
    s = _rock_salt()
    ref = symmetry(s)
    assert (ref.spacegroup_number, ref.spacegroup_symbol, ref.crystal_system) == (225, "Fm-3m", "cubic")
    assert ref.symprec == 0.1 and ref.angle_tolerance == 5.0
    assert symmetry(_moved(s)).spacegroup_number == 225
    big = s.copy()
    big.make_supercell([2, 1, 1])
    assert symmetry(big).spacegroup_number == 225
    rattled = s.copy()
    rattled.perturb(0.01)  # well inside symprec = 0.1 A
    assert symmetry(rattled).spacegroup_number == 225


def test_pool_spacegroups_are_reproduced() -> None:
    df = load_pool("test").sample(25, random_state=3)
    agree = [symmetry(row_to_structure(r)).spacegroup_number == int(r["spacegroup"]) for _, r in df.iterrows()]
    assert np.mean(agree) >= 0.9  # MP's own tolerance differs slightly from ours (0.1 A)


# ---------------------------------------------------------------------------------------------- dedup


def test_dedup_finds_moved_scaled_and_supercell_copies() -> None:
    a = _rock_salt()
    b = _rock_salt(4.2, ("Mg", "O"))
    sup = a.copy()
    sup.make_supercell([1, 2, 1])
    scaled = a.copy()
    scaled.scale_lattice(a.volume * 1.07)
    cscl = Structure(Lattice.cubic(3.4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # NaCl, different structure
    res = deduplicate([a, _moved(a), b, sup, scaled, cscl])
    assert res.unique == [True, False, True, False, False, True]
    assert res.duplicate_of == [None, 0, None, 0, 0, None]
    assert res.n_unique == 3
    # same batch, same answer; a different order makes the first copy the unique one
    assert deduplicate([sup, a]).unique == [True, False]


def test_fingerprint_prefilter_keeps_true_matches() -> None:
    rng = np.random.default_rng(7)
    df = load_pool().sample(40, random_state=11)
    checked = 0
    for _, row in df.iterrows():
        s = row_to_structure(row)
        t = s.copy()
        t.apply_strain(rng.uniform(-0.06, 0.06, size=3))
        t.perturb(0.1)
        t.scale_lattice(t.volume * rng.uniform(0.9, 1.15))
        if structures_match(s, t):
            checked += 1
            assert float(fingerprint_distance(match_fingerprint(s), match_fingerprint(t))) < FINGERPRINT_CUTOFF
    assert checked >= 30


def test_disabling_the_prefilter_gives_the_same_answer() -> None:
    df = load_pool("val").head(12)
    batch = [row_to_structure(r) for _, r in df.iterrows()]
    batch += [_moved(batch[0]), _moved(batch[5], 12.0, 0.5)]
    with_filter = deduplicate(batch)
    without = deduplicate(batch, params=MatchParams(fingerprint_cutoff=0.0))
    assert with_filter.unique == without.unique
    assert with_filter.unique[-2:] == [False, False]


# ---------------------------------------------------------------------------------------------- novelty


def test_pool_material_is_not_novel_until_excluded(pool_unique_formula_row) -> None:
    row = pool_unique_formula_row
    s = _moved(row_to_structure(row))
    res = NoveltyIndex().check(s)
    assert not res.novel and res.matched_id == row["material_id"]
    held_out = NoveltyIndex(exclude_ids=[row["material_id"]]).check(s)
    assert held_out.novel and held_out.matched_id is None and held_out.n_same_formula == 0
    other_split = {"train", "val", "test"} - {row["split"]}
    assert NoveltyIndex(splits=sorted(other_split)).check(s).novel  # type: ignore[arg-type]


def test_unseen_composition_is_novel() -> None:
    s = Structure(Lattice.cubic(4.1), ["Cs", "Au", "Xe"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    res = NoveltyIndex().check(s)
    assert res.novel and res.n_same_formula == 0 and res.n_matcher_calls == 0


# ---------------------------------------------------------------------------------------------- measures


def test_structural_validity() -> None:
    assert structural_validity(_rock_salt())[0]
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.06, 0, 0]])  # 0.3 A apart
    ok, reason = structural_validity(close)
    assert not ok and "0.300" in reason
    tiny = Structure(Lattice.cubic(0.4), ["H"], [[0, 0, 0]])  # 0.064 A^3 and 0.4 A to its own image
    assert not structural_validity(tiny)[0]
    # rotation/translation/permutation invariant
    assert structural_validity(_moved(close))[0] is False


def test_compositional_validity() -> None:
    assert compositional_validity("NaCl")[0]
    assert compositional_validity("Fe2O3")[0]
    assert not compositional_validity("NaCl2")[0]
    assert compositional_validity("Cu3Au")[0]  # all-metal alloys pass (CDVAE)


def test_stability_thresholds() -> None:
    assert is_stable(0.1) and is_stable(0.1 + 1e-9) and not is_stable(0.1001)
    assert is_stable(-0.3) and is_on_hull(-0.3) and is_on_hull(0.0) and not is_on_hull(0.01)
    assert not is_stable(None) and not is_stable(float("nan"))


def test_batch_measures_count_over_all_candidates() -> None:
    m = batch_measures(
        struct_valid=[True, True, False, True],
        comp_valid=[True, False, True, True],
        e_hull=[0.05, -0.01, None, 0.2],
        unique=[True, True, True, False],
        novel=[True, False, True, True],
    )
    assert (m.stable.k, m.on_hull.k, m.unique.k, m.novel.k, m.sun.k) == (2, 1, 3, 3, 1)
    assert m.sun.rate == pytest.approx(0.25) and m.n_total == 4
    empty = batch_measures(struct_valid=[], comp_valid=[], e_hull=[], unique=[], novel=[])
    assert empty.sun.rate is None


def test_two_proportion_z_test() -> None:
    t = two_proportion_z_test(60, 100, 40, 100)
    assert t.z == pytest.approx(2.8284, abs=1e-3)
    assert t.p_value == pytest.approx(0.002339, abs=1e-5)
    assert two_proportion_z_test(40, 100, 60, 100).p_value > 0.99  # one-sided
    assert two_proportion_z_test(0, 10, 0, 10).p_value is None


def test_property_distances() -> None:
    a = [_rock_salt(), _rock_salt(4.2, ("Mg", "O"))]
    same = property_distances(a, a)
    assert same.wdist_density == pytest.approx(0.0) and same.wdist_n_elements == pytest.approx(0.0)
    denser = [s.copy() for s in a]
    for s in denser:
        s.scale_lattice(s.volume / 1.1)
    d = property_distances(denser, a)
    assert d.wdist_density == pytest.approx(0.1 * np.mean([s.density for s in a]), rel=1e-6)


# ---------------------------------------------------------------------------------------------- one call


def test_analyze_batch_end_to_end(pool_unique_formula_row) -> None:
    known = row_to_structure(pool_unique_formula_row)
    new = Structure(Lattice.cubic(4.1), ["Cs", "Au", "Xe"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    batch = [known, new, _moved(new)]
    res = analyze_batch(batch, [0.0, 0.05, 0.05])
    assert [it.novel for it in res.items] == [False, True, True]
    assert [it.unique for it in res.items] == [True, True, False]
    assert res.items[0].matched_id == pool_unique_formula_row["material_id"]
    assert res.measures.sun.k == 1 and res.measures.stable.k == 3
    assert res.items[1].symmetry is not None and res.items[1].symmetry.spacegroup_number == 123  # P4/mmm: Xe on one face centre
    assert res.match_params.ltol == 0.2 and res.symprec == 0.1


def test_assess_batch_fills_candidates(pool_unique_formula_row) -> None:
    known = row_to_structure(pool_unique_formula_row)
    cands = [Candidate.from_structure(known), Candidate.from_structure(_moved(known)),
             Candidate.from_structure(_rock_salt(), error="failed geometry prescreen: test")]
    done = list(assess_batch(cands, exclude_ids=[pool_unique_formula_row["material_id"]]))
    assert done == [0, 1, 2]
    assert cands[0].unique is True and cands[1].unique is False
    assert cands[1].provenance["duplicate_of"] == cands[0].id
    assert cands[0].novel is True and cands[0].matched_id is None  # its own pool entry is excluded
    assert cands[0].spacegroup_number == cands[1].spacegroup_number is not None
    assert cands[2].unique is None and cands[2].novel is None  # errored candidates are not judged
