"""The staged prescreen: known SMACT cases, geometry rules, invariance, gating and batching."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from tests.conftest import rattled
from tessera.tools.io import read_structures
from tessera.tools.measures import smact_check
from tessera.tools.prescreen import (
    ChargeNeutralityStage,
    EhullStage,
    GeometryStage,
    Prescreen,
    PrescreenParams,
    PrescreenStage,
    build_prescreen,
    load_prescreen_params,
    space_occupation_ratio,
)
from tessera.tools.relax import static_energies


@pytest.mark.parametrize(
    ("formula", "valid"),
    [("NaCl", True), ("NaCl2", False), ("Fe2O3", True), ("Si", True), ("Cu3Au", True), ("MgCu2", True),
     ("LiPF6", True), ("Na2O2", True), ("KO4", False), ("KF2", False), ("LiF3", False)],
)
def test_smact_rule_on_known_compositions(formula: str, valid: bool) -> None:
    ok, reason = smact_check(formula)
    assert ok is valid, reason


def test_smact_reasons_name_the_rule() -> None:
    assert smact_check("Si")[1] == "elemental"
    assert smact_check("Cu3Au")[1] == "all-metal alloy"
    assert "Na+1" in smact_check("NaCl")[1] and "Cl-1" in smact_check("NaCl")[1]
    assert "no charge-neutral" in smact_check("NaCl2")[1]
    # the reduced composition is judged: a supercell's counts do not change the answer
    assert smact_check("Na4Cl4") == smact_check("NaCl")


def test_geometry_rules(nacl: Structure) -> None:
    stage = GeometryStage()
    ok = stage.check(nacl)
    assert ok.passed and ok.value is not None and 0.5 < ok.value <= 1.0

    close = Structure(nacl.lattice, ["Na", "Cl"], [[0, 0, 0], [0.12, 0.12, 0.12]])  # ~0.85 A apart
    out = stage.check(close)
    assert not out.passed and "atoms too close" in (out.reason or "") and "(r_i + r_j)" in (out.reason or "")

    very_close = Structure(nacl.lattice, ["Na", "Cl"], [[0, 0, 0], [0.05, 0.05, 0.05]])  # ~0.35 A
    assert "< 0.5 A" in (stage.check(very_close).reason or "")

    # Uniform compression keeps the distance ratios scale-free only down to the covalent sum; compress
    # past the packing limit with a lenient distance rule to isolate SCIGEN's occupation ratio.
    dense = nacl.copy()
    dense.scale_lattice(nacl.volume * 0.2)
    assert space_occupation_ratio(dense) == pytest.approx(space_occupation_ratio(nacl) / 0.2)
    lenient = GeometryStage(radius_scale=0.1, min_distance=0.1)
    out = lenient.check(dense)
    assert space_occupation_ratio(dense) > 1.7
    assert not out.passed and "space occupation ratio" in (out.reason or "")


def _ehull_fn(structure: Structure, energy_per_atom: float) -> float:
    """A stand-in hull: distance from a fixed line, enough to exercise the stage (the real hull is injected by the lead)."""
    return energy_per_atom + 4.0


def _moved_copy(s: Structure, seed: int) -> Structure:
    """Rotated (arbitrary axis), translated, and site-permuted copy."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    op = SymmOp.from_axis_angle_and_translation(axis, float(rng.uniform(10, 170)))
    # rotate every lattice vector (rows) by R; fractional coordinates ride along
    rotated = Structure(Lattice(s.lattice.matrix @ op.rotation_matrix.T), s.species, s.frac_coords)
    rotated.translate_sites(list(range(len(rotated))), rng.uniform(0, 1, 3))
    perm = rng.permutation(len(rotated))
    return Structure(rotated.lattice, [rotated.species[i] for i in perm], rotated.frac_coords[perm])


def test_outcome_identical_for_rotated_translated_permuted_copy(mixed_batch_dir) -> None:
    structures = read_structures([mixed_batch_dir]).structures
    structures.append(rattled(structures[0], amplitude=0.4, seed=3))
    pre = build_prescreen(PrescreenParams(gate=False), ehull_fn=_ehull_fn)
    assert pre.stage_names == ["charge", "geometry", "ehull"]
    original = pre.run(structures)
    moved = pre.run([_moved_copy(s, k) for k, s in enumerate(structures)])
    for a, b in zip(original, moved):
        assert a.passed == b.passed and a.failed_stage == b.failed_stage
        assert a.outcomes.keys() == b.outcomes.keys()
        for name in a.outcomes:
            oa, ob = a.outcomes[name], b.outcomes[name]
            assert oa.passed == ob.passed
            if oa.value is not None:
                assert ob.value == pytest.approx(oa.value, abs=1e-4)
    assert all(r.outcomes["ehull"].value is not None for r in original)


class _CountingEnergy:
    """The real CHGNet energy function, recording how many structures it was asked about."""

    def __init__(self) -> None:
        self.seen = 0

    def __call__(self, structures: Sequence[Structure]) -> list[float]:
        self.seen += len(structures)
        return static_energies(structures)


def test_gate_keeps_failures_away_from_chgnet(nacl: Structure) -> None:
    bad_charge = Structure(nacl.lattice, ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    too_close = Structure(nacl.lattice, ["Na", "Cl"], [[0, 0, 0], [0.05, 0.05, 0.05]])
    batch = [nacl, bad_charge, too_close]

    counting = _CountingEnergy()
    gated = build_prescreen(PrescreenParams(gate=True), ehull_fn=_ehull_fn, energy_fn=counting).run(batch)
    assert counting.seen == 1  # only the survivor of the cheap stages reached CHGNet
    assert [r.passed for r in gated] == [True, False, False]
    assert [r.failed_stage for r in gated] == [None, "charge", "geometry"]
    assert list(gated[1].outcomes) == ["charge"]

    counting = _CountingEnergy()
    full = build_prescreen(PrescreenParams(gate=False), ehull_fn=_ehull_fn, energy_fn=counting).run(batch)
    assert counting.seen == 3
    assert all(list(r.outcomes) == ["charge", "geometry", "ehull"] for r in full)
    assert full[1].failed_stage == "charge" and full[1].outcomes["geometry"].passed


def test_ehull_stage_failures_stay_per_item(nacl: Structure) -> None:
    def energies(structures: Sequence[Structure]) -> list[float]:
        return [float("nan") if len(s) == 4 else -3.0 for s in structures]

    def ehull(structure: Structure, e: float) -> float:
        if "K" in structure.composition:
            raise KeyError("no reference for K")
        return e + 3.2

    k = nacl.copy()
    k.replace_species({"Na": "K"})
    supercell = nacl * (2, 1, 1)
    stage = EhullStage(ehull_fn=ehull, ceiling=0.1, energy_fn=energies)
    a, b, c = stage.check_many([nacl, k, supercell])
    assert not a.passed and a.value == pytest.approx(0.2) and "ceiling" in (a.reason or "")
    assert not b.passed and "no reference for K" in (b.reason or "")
    assert not c.passed and "could not evaluate" in (c.reason or "")
    assert EhullStage(ehull_fn=ehull, ceiling=0.3, energy_fn=energies).check(nacl).passed


def test_stages_follow_the_protocol_and_config_loads() -> None:
    for stage in (ChargeNeutralityStage(), GeometryStage(), EhullStage(ehull_fn=_ehull_fn)):
        assert isinstance(stage, PrescreenStage)
    params = load_prescreen_params()
    assert params.geometry.max_occupation == pytest.approx(1.7)
    assert params.charge.oxidation_states_set == "smact14"
    pre = build_prescreen(params)  # no hull function: the CHGNet stage is left out, not faked
    assert pre.stage_names == ["charge", "geometry"]
    assert isinstance(pre, Prescreen) and math.isfinite(params.ehull.ceiling)
