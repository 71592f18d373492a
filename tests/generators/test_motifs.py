"""Motif templates: every net's geometry is what its vertex configuration says (neighbour counts, unit bonds,
the angles of the polygons around each vertex, in order), and the custom/default-bond-length rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tessera.generators.motifs import (
    ARCHIMEDEAN, TEMPLATES, default_bond_length, get_template, load_custom_template, resolve_template,
    template_from_dict,
)

BOND = 2.3  # any bond length: templates scale with it


def _neighbours(template, bond: float, reach: int = 2) -> list[list[np.ndarray]]:
    """Per site, Cartesian vectors (A) to every site image within 1.0001 bond (self excluded)."""
    lat = template.lattice_matrix(bond, None if template.dims == 3 else 4.0 * bond)
    r3 = range(-reach, reach + 1)
    shifts = np.array([[i, j, k] for i in r3 for j in r3 for k in (r3 if template.dims == 3 else [0])], float)
    out = []
    for f in template.frac:
        vecs = ((template.frac[None] - f + shifts[:, None]).reshape(-1, 3)) @ lat
        d = np.linalg.norm(vecs, axis=1)
        out.append([v for v, x in zip(vecs, d) if 1e-6 < x < bond * 1.0001])
    return out


def _second_shell(template, bond: float) -> float:
    lat = template.lattice_matrix(bond, None if template.dims == 3 else 4.0 * bond)
    r = range(-3, 4)
    shifts = np.array([[i, j, k] for i in r for j in r for k in (r if template.dims == 3 else [0])], float)
    d = np.linalg.norm(((template.frac[None, :, None] - template.frac[:, None, None] + shifts).reshape(-1, 3)) @ lat, axis=1)
    return float(d[d > bond * 1.0001].min())


def _cyclic(vectors: list[np.ndarray]) -> list[float]:
    phi = np.sort([math.degrees(math.atan2(v[1], v[0])) % 360 for v in vectors])
    return list(np.diff(np.concatenate([phi, [phi[0] + 360]])))


def _same_cycle(seq: list[float], ref: list[float], tol: float = 1e-6) -> bool:
    n = len(ref)
    return len(seq) == n and any(
        all(abs(a - b) < tol for a, b in zip(s[r:] + s[:r], ref)) for s in (seq, seq[::-1]) for r in range(n))


def _vertex_angles(config: str) -> list[float]:
    """Archimedean vertex configuration "3.6.3.6" -> angles of the polygons around the vertex, in order."""
    return [180.0 * (p - 2) / p for p in map(int, config.split("."))]


def test_there_are_thirteen_named_nets_and_eleven_archimedean() -> None:
    assert len(ARCHIMEDEAN) == 11 and set(ARCHIMEDEAN) < set(TEMPLATES)
    assert set(TEMPLATES) - set(ARCHIMEDEAN) == {"lieb", "pyrochlore"}
    assert all(name == name.lower() and " " not in name for name in TEMPLATES)


@pytest.mark.parametrize("name", ARCHIMEDEAN)
def test_archimedean_vertex_geometry(name: str) -> None:
    """Each vertex: as many unit bonds as the configuration has polygons, the polygon angles in cyclic order
    (so 3^3.4^2 and 3^2.4.3.4 differ), flat, and no other site closer than sqrt(2) bonds."""
    t = get_template(name)
    ref = _vertex_angles(t.vertex_configuration)
    assert sum(ref) == pytest.approx(360.0)
    for i, vecs in enumerate(_neighbours(t, BOND)):
        assert len(vecs) == t.coordination[i] == len(ref), (name, i)
        assert np.allclose(np.linalg.norm(vecs, axis=1), BOND)
        assert np.allclose(np.array(vecs)[:, 2], 0.0)
        assert _same_cycle(_cyclic(vecs), ref), (name, i, _cyclic(vecs), ref)
    assert _second_shell(t, BOND) >= math.sqrt(2) * BOND - 1e-6
    assert np.allclose(t.frac[:, 2], 0.0)


@pytest.mark.parametrize("name,sites,cell", [
    ("triangular", 1, (1, 1, 120)), ("square", 1, (1, 1, 90)), ("honeycomb", 2, (math.sqrt(3), math.sqrt(3), 120)),
    ("kagome", 3, (2, 2, 120)), ("snub_hexagonal", 6, (math.sqrt(7), math.sqrt(7), 120)),
    ("truncated_square", 4, (1 + math.sqrt(2), 1 + math.sqrt(2), 90)),
    ("snub_square", 4, (math.sqrt(2 + math.sqrt(3)),) * 2 + (90,)),
    ("truncated_hexagonal", 6, (2 + math.sqrt(3), 2 + math.sqrt(3), 120)),
    ("rhombitrihexagonal", 6, (1 + math.sqrt(3), 1 + math.sqrt(3), 120)),
    ("truncated_trihexagonal", 12, (3 + math.sqrt(3), 3 + math.sqrt(3), 120)),
    ("elongated_triangular", 2, (1, math.sqrt(2 + math.sqrt(3)), 75)), ("lieb", 3, (2, 2, 90)),
])
def test_cells_and_site_counts(name: str, sites: int, cell: tuple[float, float, float]) -> None:
    t = get_template(name)
    assert t.num_sites == sites
    assert t.in_plane_cell(BOND) == pytest.approx((cell[0] * BOND, cell[1] * BOND, cell[2]))


def test_lieb_has_four_fold_corners_and_straight_two_fold_edges() -> None:
    t = get_template("lieb")
    nb = _neighbours(t, BOND)
    assert [len(v) for v in nb] == [4, 2, 2] == list(t.coordination)
    assert _same_cycle(_cyclic(nb[0]), [90.0] * 4)
    assert all(_same_cycle(_cyclic(v), [180.0, 180.0]) for v in nb[1:])
    assert _second_shell(t, BOND) == pytest.approx(math.sqrt(2) * BOND)


def test_pyrochlore_is_corner_sharing_tetrahedra() -> None:
    """Six unit bonds per site: two regular tetrahedra sharing the site (angles 60 x 6, 120 x 6, 180 x 3),
    spanning three dimensions; the cell is the fcc primitive one (a quarter of the cubic cell of side 2 sqrt(2) d)."""
    t = get_template("pyrochlore")
    assert t.dims == 3 and t.num_sites == 4
    for vecs in _neighbours(t, BOND):
        v = np.array(vecs)
        assert len(v) == 6 and np.allclose(np.linalg.norm(v, axis=1), BOND)
        u = v / BOND
        ang = sorted(np.degrees(np.arccos(np.clip(u @ u.T, -1, 1)))[np.triu_indices(6, 1)])
        assert np.allclose(ang, [60] * 6 + [120] * 6 + [180] * 3, atol=1e-6)
        assert np.linalg.matrix_rank(v, tol=1e-6) == 3
    lat = t.lattice_matrix(BOND)
    assert abs(np.linalg.det(lat)) == pytest.approx((2 * math.sqrt(2) * BOND) ** 3 / 4)  # a quarter of the cubic cell
    with pytest.raises(ValueError, match="fixes its whole cell"):
        t.lattice_parameters(BOND, c=5.0)


def test_metric_and_matrix_agree_and_the_2d_stacking_is_orthogonal() -> None:
    t = get_template("kagome")
    lat = t.lattice_matrix(2.5, 6.0)
    assert np.allclose(lat @ lat.T, t.metric(2.5, 6.0))
    assert np.allclose(lat[2], [0, 0, 6.0]) and np.allclose(lat[:2, 2], 0.0)
    s = t.structure("Mn", 2.5, c=6.0)
    assert s.lattice.abc == pytest.approx((5.0, 5.0, 6.0)) and s.lattice.angles == pytest.approx((90, 90, 120))


def test_default_bond_length_is_twice_the_metallic_radius_else_the_atomic_radius() -> None:
    from pymatgen.core import Element

    assert default_bond_length("Mn") == pytest.approx(2 * float(Element("Mn").metallic_radius))
    assert default_bond_length(26) == pytest.approx(2 * float(Element("Fe").metallic_radius))
    assert default_bond_length("O") == pytest.approx(2 * float(Element("O").atomic_radius))
    assert 2.4 < default_bond_length("Mn") < 2.7
    with pytest.raises(ValueError, match="unknown element"):
        default_bond_length("Xx")


def test_unknown_lattice_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        get_template("kagomé")
    msg = str(err.value)
    assert "kagomé" in msg and all(name in msg for name in TEMPLATES) and "\n" not in msg
    assert get_template("Snub-Square") is TEMPLATES["snub_square"]


def test_custom_template_from_yaml_and_json(tmp_path: Path) -> None:
    """A user's kagome, written in A, equals the built-in one scaled to bond length 1."""
    spec = {"name": "My Kagome", "a": 5.0, "b": 5.0, "gamma": 120, "sites": [[0, 0], [0.5, 0], [0, 0.5]]}
    (tmp_path / "k.json").write_text(json.dumps(spec))
    (tmp_path / "k.yaml").write_text("name: My Kagome\na: 5.0\nb: 5.0\ngamma: 120\nsites:\n  - [0, 0]\n  - [0.5, 0]\n  - [0, 0.5]\n")
    builtin = get_template("kagome")
    for path in (tmp_path / "k.json", tmp_path / "k.yaml"):
        t = load_custom_template(path)
        assert t.name == "my_kagome" and t.coordination == (4, 4, 4)
        assert (t.a, t.b, t.gamma) == pytest.approx((builtin.a, builtin.b, builtin.gamma))
        assert np.allclose(t.frac, builtin.frac)
        assert resolve_template(str(path)).coordination == (4, 4, 4)
    # An explicit bond length longer than the shortest distance is refused; a longer one rescales.
    assert template_from_dict({**spec, "bond_length": 2.5}).a == pytest.approx(2.0)
    with pytest.raises(ValueError, match="closer than the bond length"):
        template_from_dict({**spec, "bond_length": 3.0})


@pytest.mark.parametrize("bad,match", [
    ({"a": 5, "b": 5, "gamma": 120}, "missing keys"),
    ({"a": 5, "b": 5, "gamma": 120, "sites": [[0, 0]], "colour": 1}, "unknown keys"),
    ({"a": -5, "b": 5, "gamma": 120, "sites": [[0, 0]]}, "a, b > 0"),
    ({"a": 5, "b": 5, "gamma": 120, "sites": [[0, 0], [0, 0]]}, "coincide"),
    ({"a": "x", "b": 5, "gamma": 120, "sites": [[0, 0]]}, "must be numbers"),
    ([1, 2], "mapping"),
])
def test_malformed_custom_templates_give_one_clear_error(bad, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        template_from_dict(bad)


def test_unreadable_template_files(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match="not valid yaml"):
        load_custom_template(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="cannot read"):
        load_custom_template(tmp_path / "missing.json")
