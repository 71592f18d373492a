"""The reference hull: physics invariants, edge cases (below the hull, unary, unknown elements), schemes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from tessera.tools.energy_scale import mp_run_parameters, to_hull_scale
from tessera.tools.errors import InputError
from tessera.tools.hull import (
    DEFAULT_SOURCES,
    HullParams,
    ReferenceHull,
    load_elemental_references,
    load_hull_params,
)
from tessera.tools.pool import load_pool, row_to_structure


def _pool_row(material_id: str):
    df = load_pool()
    rows = df[df["material_id"] == material_id]
    assert len(rows) == 1, material_id
    return rows.iloc[0]


def _dft_energy_per_atom(structure: Structure, formation_energy_per_atom: float) -> float:
    """MP2020-corrected total energy per atom = E_form + sum_i x_i mu_i (mu: shipped elemental references)."""
    mu = load_elemental_references()
    frac = structure.composition.fractional_composition
    return formation_energy_per_atom + sum(frac[el] * mu[el.symbol] for el in frac.elements)


@pytest.fixture(scope="module")
def hull() -> ReferenceHull:
    return ReferenceHull()


@pytest.fixture(scope="module")
def nacl() -> tuple[Structure, float]:
    """Rock-salt NaCl (mp-22862, MP e_above_hull 0) with its MP2020-corrected DFT energy per atom."""
    row = _pool_row("mp-22862")
    assert row["e_above_hull_mp"] == 0.0
    s = row_to_structure(row)
    return s, _dft_energy_per_atom(s, float(row["formation_energy_per_atom"]))


def test_reference_hull_vertex_is_at_zero(hull: ReferenceHull, nacl) -> None:
    s, e = nacl
    res = hull.e_hull(s, e)
    assert res.e_hull == pytest.approx(0.0, abs=1e-9)
    assert res.stable and res.on_or_below_hull
    assert res.decomposition == {"NaCl": pytest.approx(1.0)}
    assert "mp-22862" in res.decomposition_ids
    assert res.chemical_system == "Cl-Na"
    assert res.scheme == "as_is" and res.correction_per_atom == 0.0
    assert res.sources == list(DEFAULT_SOURCES)
    assert res.formation_energy_per_atom == pytest.approx(float(_pool_row("mp-22862")["formation_energy_per_atom"]))


def test_energy_shift_moves_e_hull_one_to_one(hull: ReferenceHull, nacl) -> None:
    s, e = nacl
    assert hull.e_hull(s, e + 0.137).e_hull == pytest.approx(0.137, abs=1e-9)
    assert not hull.e_hull(s, e + 0.137).stable


def test_below_the_hull_is_negative_not_an_exception(hull: ReferenceHull, nacl) -> None:
    s, e = nacl
    res = hull.e_hull(s, e - 0.2)
    assert res.e_hull == pytest.approx(-0.2, abs=1e-9)
    assert res.on_or_below_hull and res.stable


def test_leave_one_out_puts_a_stable_material_on_or_below_the_hull(nacl) -> None:
    s, e = nacl
    held_out = ReferenceHull(exclude_ids=["mp-22862"])
    res = held_out.e_hull(s, e)
    assert res.e_hull <= 1e-9  # its own entry no longer defines the hull: it is a (new) ground state
    assert "mp-22862" not in res.decomposition_ids
    assert res.n_excluded_ids == 1
    assert all(not math.isnan(v) for v in res.decomposition.values())


def test_supercell_has_the_same_e_hull(hull: ReferenceHull, nacl) -> None:
    s, e = nacl
    big = s.copy()
    big.make_supercell([[2, 1, 0], [0, 1, 0], [0, 0, 3]])
    assert len(big) == 6 * len(s)
    assert hull.e_hull(big, e + 0.05).e_hull == pytest.approx(hull.e_hull(s, e + 0.05).e_hull, abs=1e-9)


def test_rotated_translated_permuted_copy_has_the_same_e_hull(hull: ReferenceHull) -> None:
    row = _pool_row("mp-22526")  # LiCoO2
    s = row_to_structure(row)
    e = _dft_energy_per_atom(s, float(row["formation_energy_per_atom"])) + 0.03
    op = SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0, translation_vec=(0.3, -1.1, 2.0))
    # rotate the lattice rows, shift every fractional coordinate, reverse the site order
    moved = Structure(Lattice(s.lattice.matrix @ op.rotation_matrix.T),
                      list(reversed(s.species)), list(reversed((s.frac_coords + 0.37) % 1.0)))
    assert moved.volume == pytest.approx(s.volume)
    assert hull.e_hull(moved, e).e_hull == pytest.approx(hull.e_hull(s, e).e_hull, abs=1e-9)


def test_unary_systems(hull: ReferenceHull) -> None:
    # An element with no pool structure: the elemental reference is the whole hull.
    mu = load_elemental_references()
    pt = Structure(Lattice.cubic(3.92), ["Pt"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    assert hull.e_hull(pt, mu["Pt"]).e_hull == pytest.approx(0.0, abs=1e-9)
    res = hull.e_hull(pt, mu["Pt"] + 0.25)
    assert res.e_hull == pytest.approx(0.25, abs=1e-9)
    assert res.chemical_system == "Pt" and res.decomposition == {"Pt": pytest.approx(1.0)}
    # A Si polymorph from the pool at its DFT energy reproduces MP's e_above_hull.
    row = _pool_row("mp-1095269")
    s = row_to_structure(row)
    res = hull.e_hull(s, _dft_energy_per_atom(s, float(row["formation_energy_per_atom"])))
    assert res.e_hull == pytest.approx(float(row["e_above_hull_mp"]), abs=1e-6)


def test_point_on_a_facet_is_at_zero_with_a_two_phase_decomposition(hull: ReferenceHull) -> None:
    # Na2Cl2 + Na: a composition on the tie line between NaCl and Na decomposes into those two.
    s = Structure(Lattice.cubic(8.0), ["Na", "Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    diagram = hull.phase_diagram(("Na", "Cl"))
    e_form_hull = diagram.get_hull_energy_per_atom(s.composition)
    mu = hull.mu
    e = e_form_hull + (2 * mu["Na"] + mu["Cl"]) / 3
    res = hull.e_hull(s, e)
    assert res.e_hull == pytest.approx(0.0, abs=1e-9)
    assert set(res.decomposition) == {"Na", "NaCl"}
    assert sum(res.decomposition.values()) == pytest.approx(1.0)


def test_unknown_element_is_a_clear_input_error(hull: ReferenceHull) -> None:
    po = Structure(Lattice.cubic(3.35), ["Po"], [[0, 0, 0]])  # polonium: no elemental reference shipped
    with pytest.raises(InputError, match="Po"):
        hull.e_hull(po, -3.0)
    # In a batch the bad item gets its reason and the others go on.
    nacl = Structure(Lattice.cubic(5.69), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    outcomes = hull.e_hull_many([po, nacl], [-3.0, -3.4])
    assert outcomes[0].result is None and "Po" in (outcomes[0].error or "")
    assert outcomes[1].result is not None and outcomes[1].error is None


def test_bad_energies_and_options_are_input_errors(hull: ReferenceHull, nacl) -> None:
    s, _ = nacl
    with pytest.raises(InputError, match="not finite"):
        hull.e_hull(s, float("nan"))
    with pytest.raises(InputError, match="source"):
        ReferenceHull(sources=["icsd"])
    with pytest.raises(InputError, match="scheme"):
        ReferenceHull(scheme="mp2077")  # type: ignore[arg-type]


def test_subsystem_entries_are_included(hull: ReferenceHull) -> None:
    binary = {e.material_id for e in hull.reference_entries(("Li", "O"))}
    ternary = {e.material_id for e in hull.reference_entries(("Co", "Li", "O"))}
    assert binary and binary < ternary
    assert hull.phase_diagram(("O", "Li", "Co")) is hull.phase_diagram(("Co", "Li", "O"))  # cached


def test_roost_source_adds_entries() -> None:
    base = ReferenceHull(sources=("mp20", "mpts52"))
    more = ReferenceHull(sources=("mp20", "mpts52", "roost2020"))
    n_base = len(base.reference_entries(("Fe", "Li", "O")))
    n_more = len(more.reference_entries(("Fe", "Li", "O")))
    assert n_more > n_base
    assert {e.source for e in more.reference_entries(("Fe", "Li", "O"))} >= {"mp20", "roost2020"}


def test_mp2020_scheme_corrects_a_u_oxide_and_as_is_does_not() -> None:
    row = _pool_row("mp-19770")  # Fe2O3: GGA+U in MP, O anion and Fe U corrections
    s = row_to_structure(row)
    assert mp_run_parameters(s.composition) == ("GGA+U", {"Fe": 5.3})
    raw = to_hull_scale(s, -6.5, scheme="mp2020")
    assert raw.run_type == "GGA+U" and raw.correction_per_atom < -0.5  # -0.687 eV/O + U shift for Fe
    assert to_hull_scale(s, -6.5, scheme="as_is").correction_per_atom == 0.0
    e_as_is = ReferenceHull(scheme="as_is").e_hull(s, -6.5)
    e_mp = ReferenceHull(scheme="mp2020").e_hull(s, -6.5)
    assert e_mp.e_hull == pytest.approx(e_as_is.e_hull + raw.correction_per_atom, abs=1e-9)
    assert e_mp.scheme == "mp2020"
    # no anion, no correction: metallic Pt is GGA and uncorrected in both schemes
    pt = Structure(Lattice.cubic(2.8), ["Pt"], [[0, 0, 0]])
    assert to_hull_scale(pt, -6.0, scheme="mp2020").correction_per_atom == 0.0


def test_config_file_is_the_default() -> None:
    params = load_hull_params()
    assert params == HullParams.model_validate(params.model_dump())
    hull = ReferenceHull.default(exclude_ids=["mp-1"])
    assert hull.sources == tuple(params.sources)
    assert hull.scheme == params.scheme == ReferenceHull.scheme_name()
    assert "mp-1" in hull.exclude_ids
    assert hull.ehull_fn()(Structure(Lattice.cubic(3.92), ["Pt"], [[0, 0, 0]]), load_elemental_references()["Pt"]) == pytest.approx(0.0, abs=1e-9)


def test_real_chgnet_energy_gives_invariant_e_hull(hull: ReferenceHull, nacl) -> None:
    """CHGNet 0.3.0 on a 2-atom cell: NaCl near its DFT energy, and the same E_hull after a rigid motion."""
    from chgnet.model import CHGNet

    s, e_dft = nacl
    model = CHGNet.load(verbose=False)
    e = float(model.predict_structure(s, task="e")["e"])
    res = hull.e_hull(s, e)
    # CHGNet is trained on MP2020-corrected energies: within its error of MP's, so NaCl is "stable"
    assert abs(e - e_dft) < 0.1 and res.stable
    op = SymmOp.from_axis_angle_and_translation([0, 1, 1], 23.0)
    moved = Structure(Lattice(s.lattice.matrix @ op.rotation_matrix.T), s.species, (s.frac_coords + 0.21) % 1.0)
    e2 = float(model.predict_structure(moved, task="e")["e"])
    assert e2 == pytest.approx(e, abs=2e-4)
    assert hull.e_hull(moved, e2).e_hull == pytest.approx(res.e_hull, abs=2e-4)
    assert np.isfinite(res.formation_energy_per_atom)
