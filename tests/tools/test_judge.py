"""The second judge (SevenNet), confirmation, prototype novelty and the plausibility flag (real models, small cells)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from tests.conftest import DATA, rattled
from tessera.tools.candidate import Candidate
from tessera.tools.energy_scale import to_hull_scale
from tessera.tools.evaluate import EvaluateParams, JudgeParams, evaluate, load_judge_params, summarize
from tessera.tools.measures import is_confirmed, plausibility
from tessera.tools.pool import load_pool, row_to_structure
from tessera.tools.reference_data import load_elemental_references
from tessera.tools.relax import RelaxParams, SevenNetRelaxer, load_sevennet, relax_many, sevennet_static_energies


def _pool_structure(material_id: str) -> Structure:
    pool = load_pool()
    return row_to_structure(pool[pool.material_id == material_id].iloc[0])


# ---------------------------------------------------------------------------------------------- SevenNet


def test_sevennet_relaxation_lowers_energy_and_ends_below_fmax(monkeypatch: pytest.MonkeyPatch, nacl: Structure) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert load_sevennet() is load_sevennet()  # weights from the wheel, built once per process
    start = rattled(nacl, amplitude=0.1, seed=0)
    start.scale_lattice(start.volume * 1.08)
    params = RelaxParams(fmax=0.05, steps=300, max_seconds=90)
    out = SevenNetRelaxer(params=params).relax(start)
    assert out.error is None and out.converged, out
    assert out.energy_per_atom < out.initial_energy_per_atom - 1e-3
    assert out.max_force <= params.fmax
    final = Structure.from_str(out.cif, fmt="cif")
    assert final.volume < start.volume
    assert sevennet_static_energies([final])[0] == pytest.approx(out.energy_per_atom, abs=2e-3)


def test_sevennet_runs_through_the_dask_fan_out(nacl: Structure, si: Structure) -> None:
    relaxer = SevenNetRelaxer(params=RelaxParams(steps=50, max_seconds=60))
    got = dict(relax_many([rattled(nacl, seed=1), rattled(si, seed=2)], workers=1, relaxer=relaxer))
    assert sorted(got) == [0, 1]
    assert all(o.error is None and o.energy_per_atom is not None for o in got.values()), got


def test_unknown_sevennet_model_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown SevenNet model"):
        SevenNetRelaxer(model="7net-huge")


# ---------------------------------------------------------------------------------------------- energy scale


@pytest.mark.parametrize("material_id, corrected", [
    ("mp-1182867", True),   # AlWO4: GGA+U oxide (W), O anion correction
    ("mp-1206822", True),   # Pr3SnN: N anion correction
    ("mp-1002107", False),  # LaRh: intermetallic, no correction
])
def test_sevennet_energies_need_mp2020_on_top(material_id: str, corrected: bool) -> None:
    """At the DFT geometry, SevenNet + MP2020 equals the MP2020-corrected DFT energy; as_is misses the correction."""
    s = _pool_structure(material_id)
    pool = load_pool()
    e_form = float(pool[pool.material_id == material_id].iloc[0]["formation_energy_per_atom"])
    mu = load_elemental_references()
    comp = s.composition.fractional_composition
    e_dft = e_form + sum(comp[el] * mu[el.symbol] for el in comp)
    e_raw = sevennet_static_energies([s])[0]
    mp2020 = to_hull_scale(s, e_raw, scheme="mp2020").corrected_energy_per_atom
    assert mp2020 == pytest.approx(e_dft, abs=0.06)
    if corrected:  # the as_is scheme would be off by the whole correction
        assert abs(mp2020 - e_dft) < abs(e_raw - e_dft) - 0.02


def test_judge_config_file_equals_the_defaults() -> None:
    assert load_judge_params() == JudgeParams()
    assert JudgeParams().sevennet_scheme == "mp2020"


# ---------------------------------------------------------------------------------------------- confirmation


def test_known_ground_state_is_confirmed_and_a_random_cell_chgnet_passes_is_recorded_with_both_energies() -> None:
    """LiCu3: MP's L1_2 ground state (held out of hull and pool) and a pyxtal cell of the same composition that
    CHGNet calls stable (tests/data/judge; CHGNet-relaxed, E_hull 0.094 by CHGNet). SevenNet confirms the first."""
    known = _pool_structure("mp-862658")
    rnd = Structure.from_file(DATA / "judge" / "LiCu3_random_pyxtal_chgnet_relaxed.cif")
    cands = [Candidate.from_structure(known, source="mp-862658"), Candidate.from_structure(rnd, source="pyxtal")]
    summary = evaluate(cands, EvaluateParams(confirm="sevennet", workers=0, exclude_ids=["mp-862658"]))
    good, doubtful = cands
    assert good.stable and good.confirmed, good
    assert good.e_hull_confirm is not None and good.e_hull_confirm <= 0.1
    assert doubtful.stable, doubtful  # the first judge passes it ...
    # ... and the record keeps both judges' numbers, whichever way the second one goes.
    assert doubtful.e_hull is not None and doubtful.e_hull_confirm is not None
    assert doubtful.energy_per_atom is not None and doubtful.energy_per_atom_confirm is not None
    assert doubtful.confirmed is is_confirmed(doubtful.e_hull, doubtful.e_hull_confirm)
    assert doubtful.confirm_judge == "sevennet:7net-0"
    assert summary.n_confirm_tried == 2
    assert summary.n_confirmed == sum(bool(c.confirmed) for c in cands)
    assert summary.confirm_seconds_per_hit is not None and summary.confirm_seconds_per_hit > 0


def test_without_confirm_nothing_is_confirmed(cu_fcc: Structure) -> None:
    c = Candidate.from_structure(cu_fcc)
    c.stable, c.e_hull, c.unique, c.novel = True, 0.05, True, True
    s = summarize([c], EvaluateParams(confirm=None), 1.0, "as_is")
    assert c.confirmed is None and s.n_confirmed == 0 and s.n_sun == 1 and s.n_sun_confirmed == 0
    c.confirmed, c.e_hull_confirm, c.novel_prototype = True, 0.02, False
    s = summarize([c], EvaluateParams(confirm=None), 1.0, "as_is")
    assert (s.n_confirmed, s.n_sun_confirmed, s.n_sun_prototype, s.n_sun_confirmed_prototype) == (1, 1, 0, 0)


# ---------------------------------------------------------------------------------------------- novelty levels


def test_element_swap_of_a_known_structure_is_novel_but_not_prototype_novel() -> None:
    from tessera.tools.analyze import NoveltyIndex

    known = _pool_structure("mp-862658")  # LiCu3, L1_2
    swapped = known.copy()
    swapped.replace_species({"Li": "Mg"})  # MgCu3 is not in the pool
    assert "MgCu3" not in set(load_pool()["formula"])
    index = NoveltyIndex()
    assert not index.check(known).novel
    assert index.check(swapped).novel
    proto = index.check_prototype(swapped)
    assert not proto.novel and proto.matched_id is not None
    # A structure type the pool does not hold at this stoichiometry stays prototype-novel.
    odd = Structure(Lattice.orthorhombic(3.1, 4.7, 9.3), ["Mg", "Cu", "Cu", "Cu"],
                    [[0, 0, 0], [0.5, 0.21, 0.13], [0.1, 0.6, 0.41], [0.4, 0.1, 0.77]])
    assert index.check_prototype(odd).novel


# ---------------------------------------------------------------------------------------------- plausibility


@pytest.mark.parametrize("formula", ["CdI10", "SbCl11"])
def test_polyhalides_no_chemist_would_compute_are_flagged(formula: str) -> None:
    ok, why = plausibility(formula)
    assert not ok and "charge-neutral" in why


# CsI3 and KO2 left this list with issue 20: as bare compositions they need I-I or O-O bonds to balance, so they
# are plausible only as structures that show them (tests/tools/test_charge_check.py).
@pytest.mark.parametrize("formula", ["NaCl", "CdI2", "LiCoO2", "Fe3Al", "I2"])
def test_ordinary_compositions_are_plausible(formula: str) -> None:
    assert plausibility(formula)[0]


def test_the_flag_is_stored_beside_the_hit(tmp_path: Path) -> None:
    from tessera.tools.analyze import assess_batch

    cdi = Structure(Lattice.cubic(9.0), ["Cd"] + ["I"] * 10,
                    [[0, 0, 0]] + [[0.1 * k + 0.05, 0.5, (0.37 * k) % 1] for k in range(10)])
    c = Candidate.from_structure(cdi)
    list(assess_batch([c], novelty=False))
    assert c.plausible is False and "pool" in (c.plausibility_note or "")
