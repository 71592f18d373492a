"""The structure fingerprint: fixed shape, invariances, continuity, and that it separates structures."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp

from tessera.tools.errors import InputError
from tessera.tools.fingerprint import (
    FINGERPRINT_DIM,
    fingerprint_distance,
    fingerprint_from_arrays,
    structure_fingerprint,
    structure_fingerprints,
)


def _rocksalt(a: float = 4.2) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _perovskite() -> Structure:
    return Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(3.9), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]
    )


def test_shape_dtype_norm() -> None:
    f = structure_fingerprint(_perovskite())
    assert f.shape == (FINGERPRINT_DIM,) and f.dtype == np.float32
    assert np.linalg.norm(f) == pytest.approx(1.0, abs=1e-5)


def test_rotation_translation_permutation_invariance() -> None:
    s = _perovskite()
    f = structure_fingerprint(s)
    moved = s.copy()
    moved.apply_operation(SymmOp.from_axis_angle_and_translation([1, 2, 3], 37.0, translation_vec=[0.3, 0.1, 0.2]))
    assert fingerprint_distance(f, structure_fingerprint(moved)) < 1e-5
    order = np.random.default_rng(0).permutation(len(s))
    permuted = Structure(s.lattice, [s[i].specie for i in order], s.frac_coords[order])
    assert fingerprint_distance(f, structure_fingerprint(permuted)) < 1e-5


def test_supercell_invariance() -> None:
    s = _perovskite()
    big = s.copy()
    big.make_supercell([[2, 1, 0], [0, 1, 0], [0, 0, 3]])  # a non-diagonal supercell, 6x the atoms
    assert len(big) == 6 * len(s)
    assert fingerprint_distance(structure_fingerprint(s), structure_fingerprint(big)) < 1e-5


def test_continuous_in_a_rattle_and_separates_polymorphs() -> None:
    s = _rocksalt()
    f = structure_fingerprint(s)
    rattled = s.copy()
    rattled.perturb(0.01)
    d_rattle = float(fingerprint_distance(f, structure_fingerprint(rattled)))
    assert 0 < d_rattle < 5e-3
    # Same composition, different geometry (zinc blende MgO) is far away; a sheared rocksalt in between.
    zb = Structure.from_spacegroup("F-43m", Lattice.cubic(4.6), ["Mg", "O"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    sheared = s.copy()
    sheared.apply_strain([0.04, -0.02, 0.0])
    d_strain = float(fingerprint_distance(f, structure_fingerprint(sheared)))
    d_poly = float(fingerprint_distance(f, structure_fingerprint(zb)))
    assert d_rattle < d_strain < d_poly


def test_isotropic_scaling_invariance() -> None:
    """A few per cent of volume (CHGNet vs DFT) must not look like a different structure."""
    s = _perovskite()
    big = s.copy()
    big.scale_lattice(s.volume * 1.08)
    assert fingerprint_distance(structure_fingerprint(s), structure_fingerprint(big)) < 1e-5


def test_composition_separates_isostructural() -> None:
    mgo = structure_fingerprint(_rocksalt())
    cao = structure_fingerprint(
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Ca", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    )
    assert fingerprint_distance(mgo, cao) > 0.5  # the composition block differs in two slots


def test_bad_input_one_line_and_batch_survives() -> None:
    with pytest.raises(InputError):
        fingerprint_from_arrays(np.zeros((3, 3)), np.zeros((1, 3)), np.array([8]))
    isolated = Structure(Lattice.cubic(20.0), ["Xe"], [[0, 0, 0]])  # no neighbour within the cutoff
    good = structure_fingerprint(isolated)
    assert np.isfinite(good).all() and np.linalg.norm(good) == pytest.approx(1.0, abs=1e-5)
    disordered = Structure(Lattice.cubic(4.0), [{"Fe": 0.5, "Co": 0.5}], [[0, 0, 0]])
    batch = structure_fingerprints([_rocksalt(), disordered, isolated])
    assert np.isfinite(batch[0]).all() and np.isnan(batch[1]).all() and np.isfinite(batch[2]).all()
    with pytest.raises(InputError):
        structure_fingerprints([disordered], on_error="raise")
