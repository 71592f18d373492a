"""The motif detector: finds each net in a crystal built from it (with other atoms around, rattled within
tolerance, re-celled, in another lattice plane), and rejects other nets, other elements and broken nets."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from tessera.generators.motifs import TEMPLATES, get_template
from tessera.tools.errors import InputError
from tessera.tools.motif import ANGLE_TOL_DEG, BOND_LENGTH_WINDOW, BOND_REL_TOL, PLANARITY_TOL, MotifMatch, detect_motif

# Pyrochlore's {111} planes alternate kagome and triangular layers, so those two 2D nets are (correctly)
# found inside it; every other pair of nets is told apart.
CONTAINS = {("pyrochlore", "kagome"), ("pyrochlore", "triangular")}


def decorated(name: str, element: str = "Mn", seed: int = 0) -> Structure:
    """The net of ``element`` plus a layer of O and Li atoms between the motif layers (2D nets) or two O atoms
    in the cell (pyrochlore), as a generated crystal would have."""
    t = get_template(name)
    s = t.structure(element, 2.5, c=None if t.dims == 3 else 5.0)
    rng = np.random.default_rng(seed)
    if t.dims == 2:
        for sp in ("O", "Li"):
            s.append(sp, [*rng.random(2), 0.5])
    else:
        s.append("O", [0.625, 0.625, 0.625])  # the tetrahedron centres of pyrochlore's fcc cell
        s.append("O", [0.875, 0.875, 0.875])
    return s


def rattled(s: Structure, amplitude: float, seed: int) -> Structure:
    """Every site moved by a random Cartesian vector of length <= amplitude (A)."""
    rng = np.random.default_rng(seed)
    out = s.copy()
    for i in range(len(out)):
        v = rng.normal(size=3)
        out.translate_sites([i], v / np.linalg.norm(v) * amplitude * rng.random(), frac_coords=False)
    return out


def test_tolerances_are_stated() -> None:
    assert (BOND_REL_TOL, ANGLE_TOL_DEG, PLANARITY_TOL, BOND_LENGTH_WINDOW) == (0.10, 10.0, 0.30, 0.25)
    r = detect_motif(decorated("kagome"), "kagome", "Mn")
    assert isinstance(r, MotifMatch) and r.bond_rel_tol == BOND_REL_TOL and r.angle_tol_deg == ANGLE_TOL_DEG


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_net_is_found_where_it_was_built_and_nowhere_else(name: str) -> None:
    s = decorated(name)
    r = detect_motif(s, name, "Mn")
    k = get_template(name).num_sites
    assert r.found, r.reason
    assert r.lattice == name and r.element == "Mn" and sorted(r.matched_sites) == list(range(k))
    assert r.bond_length == pytest.approx(2.5) and r.max_bond_deviation < 1e-6 and r.max_angle_deviation < 1e-4
    assert r.plane == ("3d" if name == "pyrochlore" else "ab")
    for other in TEMPLATES:
        if other != name and (name, other) not in CONTAINS:
            assert not detect_motif(s, other, "Mn").found, (name, other)
    wrong_element = detect_motif(s, name, "Fe")
    assert not wrong_element.found and "no Fe" in wrong_element.reason


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_a_rattled_net_within_tolerance_is_still_found(name: str) -> None:
    """Displacements up to 0.05 A (bond 2.5 A: bonds within 4 %, angles within ~5 deg) and a 3 % in-plane
    strain, as a relaxation leaves them; 0.5 A displacements break the net."""
    s = decorated(name) * (2, 2, 1)  # one-site cells would move rigidly
    s.apply_strain([0.03, 0.0, 0.0])
    for seed in range(3):
        r = detect_motif(rattled(s, 0.05, seed), name, "Mn")
        assert r.found, (seed, r.reason)
        assert 0 < r.max_angle_deviation < ANGLE_TOL_DEG and r.max_bond_deviation < BOND_REL_TOL
    broken = [detect_motif(rattled(s, 0.5, seed), name, "Mn").found for seed in range(3)]
    assert not any(broken)


@pytest.mark.parametrize("name", ["kagome", "honeycomb", "lieb", "snub_square", "pyrochlore"])
def test_found_in_a_supercell_a_rotated_frame_and_another_lattice_plane(name: str) -> None:
    s = decorated(name)
    assert detect_motif(s * (2, 2, 1), name, "Mn").found
    rot = Structure(Lattice(s.lattice.matrix @ _rotation()), s.species, s.frac_coords)
    assert detect_motif(rot, name, "Mn").found
    # Cell vectors relabelled (a, b, c) -> (c, a, b): the 2D net now lies in the b-c plane.
    m = s.lattice.matrix
    perm = Structure(Lattice([m[2], m[0], m[1]]), s.species, s.frac_coords[:, [2, 0, 1]])
    r = detect_motif(perm, name, "Mn")
    assert r.found and r.plane == ("3d" if name == "pyrochlore" else "bc")


def _rotation() -> np.ndarray:
    a, b = 0.7, 1.9
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def test_a_buckled_or_decorated_net_is_rejected() -> None:
    """A kagome site lifted 0.6 A off the plane, or an extra Mn in the hexagon centre (kagome + centres is the
    triangular net), is no kagome net."""
    s = decorated("kagome")
    lifted = s.copy()
    lifted.translate_sites([1], [0, 0, 0.6], frac_coords=False)
    assert not detect_motif(lifted, "kagome", "Mn").found
    filled = s.copy()
    filled.append("Mn", [0.5, 0.5, 0.0])
    assert not detect_motif(filled, "kagome", "Mn").found
    assert detect_motif(filled, "triangular", "Mn").found
    # A stray Mn far from the net (in the O/Li layer) leaves the net intact.
    stray = s.copy()
    stray.append("Mn", [0.5, 0.5, 0.5])
    assert detect_motif(stray, "kagome", "Mn").found


def test_the_net_bond_must_be_near_the_expected_bond_length() -> None:
    """Mn's default bond (2 x metallic radius, 2.54 A) accepts the 2.5 A net; asked for 3.5 A bonds it does not,
    and a net scaled to 3.5 A is found when that is the bond length asked for."""
    s = decorated("honeycomb")
    assert detect_motif(s, "honeycomb", "Mn").expected_bond_length == pytest.approx(2.54)
    far = detect_motif(s, "honeycomb", "Mn", bond_length=3.5)
    assert not far.found and "expected 3.50 A" in far.reason
    big = get_template("honeycomb").structure("Mn", 3.5, c=7.0)
    assert detect_motif(big, "honeycomb", "Mn", bond_length=3.5).found


def test_bad_inputs_are_input_errors() -> None:
    s = decorated("kagome")
    with pytest.raises(InputError, match="unknown lattice"):
        detect_motif(s, "kagomee", "Mn")
    with pytest.raises(InputError, match="unknown element"):
        detect_motif(s, "kagome", "Qq")


def test_custom_template_is_detected() -> None:
    """A user's rectangular net (Lieb-like edges only: a 2 x 1 cell of side d with one site) is found."""
    custom = {"name": "rect", "a": 2.5, "b": 4.0, "gamma": 90, "sites": [[0, 0]]}
    s = Structure(Lattice.from_parameters(2.5, 4.0, 6.0, 90, 90, 90), ["Ni"], [[0, 0, 0]])
    assert detect_motif(s, custom, "Ni").found
    assert not detect_motif(s, "square", "Ni").found
