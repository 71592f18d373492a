"""Lattice-motif templates for SCIGEN-style inpainting: the eleven Archimedean nets, the Lieb net, user nets
(YAML/JSON) and one 3D net, pyrochlore.

A template is geometry in units of the motif's bond length d (every nearest-neighbour motif bond has length
exactly d), so one template serves any element:

- 2D nets (``dims == 2``): an in-plane cell a, b (in units of d) and gamma (degrees), and fractional
  in-plane sites at z = 0. The crystal stacks the net along c with alpha = beta = 90 deg and c free (the
  inpainting hook chooses it within a range), so the motif atoms form one flat layer per cell.
- 3D nets (``dims == 3``): the whole cell (a, b, c in units of d; alpha, beta, gamma) and full fractional
  sites. Pyrochlore uses the primitive (rhombohedral, 60 deg) cell of the fcc lattice: 4 sites, one
  tetrahedron, every site shared by two corner-sharing tetrahedra.

``coordination[i]`` is site i's number of nearest neighbours within the net (its own periodic images
included). ``vertex_configuration`` names the Archimedean vertex type ("3.6.3.6": triangle, hexagon,
triangle, hexagon around every vertex), from which the bond angles at a vertex follow: polygon p has the
interior angle 180 (p - 2) / p degrees.

Default bond length (``default_bond_length``): 2 x the element's metallic radius from pymatgen's Element data
(SCIGEN's Gaussian option centres its bond length on 2 x metallic radius; its default draws from a KDE of
observed bond lengths), or 2 x the empirical atomic radius where pymatgen has no metallic radius (non-metals).
For Mn this gives 2.54 A, Fe 2.52 A, Co 2.50 A, Ni 2.48 A, Gd 3.61 A.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_SQ3 = math.sqrt(3.0)


@dataclass(frozen=True)
class MotifTemplate:
    """One net. Lengths a, b, c in units of the bond length d; angles in degrees.

    frac: (k, 3) fractional sites (z = 0 for a 2D net). coordination: (k,) neighbours of each site within
    the net. c, alpha, beta: only for a 3D net (a 2D net's c is free and alpha = beta = 90 deg).
    """

    name: str
    vertex_configuration: str
    a: float
    b: float
    gamma: float
    frac: np.ndarray = field(repr=False)
    coordination: tuple[int, ...]
    dims: int = 2
    c: float | None = None
    alpha: float = 90.0
    beta: float = 90.0

    @property
    def num_sites(self) -> int:
        return int(self.frac.shape[0])

    def in_plane_cell(self, bond_length: float) -> tuple[float, float, float]:
        """(a, b, gamma) in A, A, degrees for bond length d (A)."""
        return self.a * bond_length, self.b * bond_length, self.gamma

    def lattice_parameters(self, bond_length: float, c: float | None = None) -> tuple[float, ...]:
        """(a, b, c, alpha, beta, gamma), A and degrees. A 2D net needs c (A, the stacking period); a 3D net
        fixes its own c (passing one is an error)."""
        a, b, gamma = self.in_plane_cell(bond_length)
        if self.dims == 3:
            if c is not None:
                raise ValueError(f"the 3D net {self.name!r} fixes its whole cell; c cannot be chosen")
            assert self.c is not None
            return a, b, self.c * bond_length, self.alpha, self.beta, gamma
        if c is None or not c > 0:
            raise ValueError(f"a 2D net needs a stacking period c > 0 (A), got {c}")
        return a, b, float(c), 90.0, 90.0, gamma

    def metric(self, bond_length: float, c: float | None = None) -> np.ndarray:
        """(3, 3) metric tensor G = L L^T in A^2 (rotation-free description of the cell)."""
        return metric_from_parameters(*self.lattice_parameters(bond_length, c))

    def lattice_matrix(self, bond_length: float, c: float | None = None) -> np.ndarray:
        """(3, 3) lattice (rows a, b, c in A) with a along x and b in the xy plane (c along z for 2D nets)."""
        return matrix_from_parameters(*self.lattice_parameters(bond_length, c))

    def structure(self, element: str | int, bond_length: float | None = None, c: float | None = None):
        """The bare net as a pymatgen Structure (motif atoms only). For a 2D net, c defaults to 3 d (layers
        far enough apart that no bond crosses them)."""
        from pymatgen.core import Lattice, Structure

        d = default_bond_length(element) if bond_length is None else float(bond_length)
        if self.dims == 2 and c is None:
            c = 3.0 * d
        lattice = Lattice(self.lattice_matrix(d, c))
        return Structure(lattice, [element] * self.num_sites, self.frac)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "vertex_configuration": self.vertex_configuration, "a": self.a, "b": self.b,
            "gamma": self.gamma, "frac": self.frac.tolist(), "coordination": list(self.coordination),
            "dims": self.dims, "c": self.c, "alpha": self.alpha, "beta": self.beta,
        }


def metric_from_parameters(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """(3, 3) metric G_ij = a_i . a_j from lengths (A) and angles (degrees)."""
    ca, cb, cg = (math.cos(math.radians(x)) for x in (alpha, beta, gamma))
    return np.array([[a * a, a * b * cg, a * c * cb], [a * b * cg, b * b, b * c * ca], [a * c * cb, b * c * ca, c * c]])


def matrix_from_parameters(a: float, b: float, c: float, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """(3, 3) lattice rows: a along x, b in the xy plane (the Cholesky factor of the metric)."""
    return np.linalg.cholesky(metric_from_parameters(a, b, c, alpha, beta, gamma))


def _from_cartesian(
    name: str, config: str, a1: tuple[float, float], a2: tuple[float, float], sites: np.ndarray,
    coordination: int | tuple[int, ...],
) -> MotifTemplate:
    """A 2D template from in-plane cell vectors and Cartesian sites (bond length 1); sites equal modulo the
    cell are kept once."""
    cell = np.array([a1, a2], dtype=float)
    frac2 = np.asarray(sites, dtype=float) @ np.linalg.inv(cell)
    frac2 = np.round(frac2 % 1.0, 12) % 1.0
    unique: list[np.ndarray] = []
    for f in frac2:
        if not any(np.allclose((f - u + 0.5) % 1.0 - 0.5, 0.0, atol=1e-8) for u in unique):
            unique.append(f)
    frac = np.concatenate([np.array(unique), np.zeros((len(unique), 1))], axis=1)
    a, b = np.linalg.norm(cell, axis=1)
    gamma = math.degrees(math.acos(float(cell[0] @ cell[1]) / (a * b)))
    cn = coordination if isinstance(coordination, tuple) else (coordination,) * len(unique)
    return MotifTemplate(name=name, vertex_configuration=config, a=float(a), b=float(b), gamma=gamma, frac=frac,
                         coordination=cn)


def _ring(radius: float, start_deg: float, n: int) -> np.ndarray:
    """(n, 2) vertices of a regular polygon centred at the origin."""
    ang = np.radians(start_deg + 360.0 / n * np.arange(n))
    return radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)


def _hexagonal(a: float) -> tuple[tuple[float, float], tuple[float, float]]:
    return (a, 0.0), (-a / 2, a * _SQ3 / 2)


def _build_templates() -> dict[str, MotifTemplate]:
    t: dict[str, MotifTemplate] = {}
    # 3^6: one site on a triangular lattice.
    t["triangular"] = _from_cartesian("triangular", "3.3.3.3.3.3", *_hexagonal(1.0), np.zeros((1, 2)), 6)
    t["square"] = _from_cartesian("square", "4.4.4.4", (1.0, 0.0), (0.0, 1.0), np.zeros((1, 2)), 4)
    # 6^3: two sites of a hexagonal cell of side sqrt(3) d.
    t["honeycomb"] = _from_cartesian("honeycomb", "6.6.6", *_hexagonal(_SQ3), _ring(1.0, 30.0, 6), 3)
    # 3.6.3.6: corner-sharing triangles, cell side 2 d.
    t["kagome"] = _from_cartesian("kagome", "3.6.3.6", *_hexagonal(2.0),
                                  np.array([[0.0, 0.0], [1.0, 0.0], [-0.5, _SQ3 / 2]]), 4)
    # 3^3.4^2: rows of triangles alternating with rows of squares.
    t["elongated_triangular"] = _from_cartesian("elongated_triangular", "3.3.3.4.4", (1.0, 0.0), (0.5, 1 + _SQ3 / 2),
                                                np.array([[0.0, 0.0], [0.5, _SQ3 / 2]]), 5)
    # 3^2.4.3.4: squares turned by 30 deg on a square lattice of side sqrt(2 + sqrt(3)) d (solved numerically
    # for five unit bonds per vertex; the p4g arrangement).
    L = math.sqrt(2 + _SQ3)
    t["snub_square"] = _from_cartesian("snub_square", "3.3.4.3.4", (L, 0.0), (0.0, L), _ring(1 / math.sqrt(2), 30.0, 4), 5)
    # 4.8^2: a square (corners on the axes) around each lattice point, octagons between; side 1 + sqrt(2).
    L = 1 + math.sqrt(2)
    t["truncated_square"] = _from_cartesian("truncated_square", "4.8.8", (L, 0.0), (0.0, L),
                                            _ring(1 / math.sqrt(2), 0.0, 4), 3)
    # 3^4.6: the triangular lattice with one site in seven removed (hexagon centres); side sqrt(7) d.
    t["snub_hexagonal"] = _from_cartesian("snub_hexagonal", "3.3.3.3.6", (2.5, _SQ3 / 2), (-2.0, _SQ3),
                                          _ring(1.0, 0.0, 6), 5)
    # 3.12^2: dodecagons on a hexagonal lattice of side (2 + sqrt(3)) d sharing edges, triangles between.
    r12 = 1 / (2 * math.sin(math.pi / 12))
    t["truncated_hexagonal"] = _from_cartesian("truncated_hexagonal", "3.12.12", *_hexagonal(2 + _SQ3),
                                               _ring(r12, 15.0, 12), 3)
    # 3.4.6.4: hexagons on a hexagonal lattice of side (1 + sqrt(3)) d joined by squares, triangles between.
    t["rhombitrihexagonal"] = _from_cartesian("rhombitrihexagonal", "3.4.6.4", *_hexagonal(1 + _SQ3),
                                              _ring(1.0, 30.0, 6), 4)
    # 4.6.12: dodecagons on a hexagonal lattice of side (3 + sqrt(3)) d joined by squares, hexagons between.
    t["truncated_trihexagonal"] = _from_cartesian("truncated_trihexagonal", "4.6.12", *_hexagonal(3 + _SQ3),
                                                  _ring(r12, 15.0, 12), 3)
    # Lieb: a square lattice of side 2 d with the edge centres occupied (corner 4-fold, edge sites 2-fold).
    t["lieb"] = _from_cartesian("lieb", "lieb", (2.0, 0.0), (0.0, 2.0),
                                np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), (4, 2, 2))
    # Pyrochlore: fcc primitive cell (a = b = c = 2 d, 60 deg) with the four corners of one tetrahedron.
    t["pyrochlore"] = MotifTemplate(
        name="pyrochlore", vertex_configuration="pyrochlore", a=2.0, b=2.0, gamma=60.0,
        frac=np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]]),
        coordination=(6, 6, 6, 6), dims=3, c=2.0, alpha=60.0, beta=60.0,
    )
    return t


TEMPLATES: dict[str, MotifTemplate] = _build_templates()
ARCHIMEDEAN: tuple[str, ...] = (
    "triangular", "square", "honeycomb", "kagome", "elongated_triangular", "snub_square", "truncated_square",
    "snub_hexagonal", "truncated_hexagonal", "rhombitrihexagonal", "truncated_trihexagonal",
)


def template_names() -> list[str]:
    return sorted(TEMPLATES)


def get_template(name: str) -> MotifTemplate:
    """The built-in template called ``name`` (lowercase_with_underscores); ValueError listing the valid names."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in TEMPLATES:
        raise ValueError(f"unknown lattice {name!r}; valid: {', '.join(template_names())} (or a custom template file)")
    return TEMPLATES[key]


def default_bond_length(element: str | int) -> float:
    """Default motif bond length in A: 2 x metallic radius (pymatgen), else 2 x empirical atomic radius."""
    from pymatgen.core import Element

    try:
        el = Element.from_Z(element) if isinstance(element, (int, np.integer)) else Element(str(element))
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown element {element!r}") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns when a radius is missing; we fall back below
        radius = el.metallic_radius
        if radius is None or not float(radius) > 0:
            radius = el.atomic_radius
    if radius is None or not float(radius) > 0:
        raise ValueError(f"no radius for {el.symbol} in pymatgen; give the bond length explicitly")
    return 2.0 * float(radius)


# -- custom templates ---------------------------------------------------------------------------------------------
def template_from_dict(d: dict[str, Any]) -> MotifTemplate:
    """A user's 2D net: {"name", "a", "b", "gamma", "sites": [[x, y], ...] (fractional, z = 0)}, optional
    "bond_length" (the length a and b were written for; default: the shortest site-site distance of the net).
    a, b in A (or in any unit, as long as bond_length uses the same); gamma in degrees. The template is
    rescaled to bond length 1 and each site's coordination is counted within 1 % of the shortest bond."""
    if not isinstance(d, dict):
        raise ValueError("a custom template must be a mapping with keys name, a, b, gamma, sites")
    unknown = set(d) - {"name", "a", "b", "gamma", "sites", "bond_length"}
    missing = {"a", "b", "gamma", "sites"} - set(d)
    if unknown or missing:
        raise ValueError(f"custom template: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    try:
        a, b, gamma = float(d["a"]), float(d["b"]), float(d["gamma"])
        sites = np.array(d["sites"], dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"custom template: a, b, gamma must be numbers and sites a list of [x, y]: {exc}") from exc
    if not (a > 0 and b > 0 and 0 < gamma < 180):
        raise ValueError(f"custom template: need a, b > 0 and 0 < gamma < 180, got {a}, {b}, {gamma}")
    if sites.ndim != 2 or sites.shape[0] < 1 or sites.shape[1] not in (2, 3):
        raise ValueError("custom template: sites must be a non-empty list of [x, y] fractional coordinates")
    frac = np.concatenate([sites[:, :2] % 1.0, np.zeros((len(sites), 1))], axis=1)
    name = str(d.get("name", "custom")).strip().lower().replace("-", "_").replace(" ", "_") or "custom"
    wrapped = (frac[:, None, :2] - frac[None, :, :2] + 0.5) % 1.0 - 0.5
    if (np.abs(wrapped).max(-1) + np.eye(len(frac)) < 1e-6).any():
        raise ValueError("custom template: two sites coincide")
    dists = _in_plane_distances(a, b, gamma, frac[:, :2])
    shortest = float(min(x.min() for x in dists))
    bond = float(d.get("bond_length") or shortest)
    if shortest < bond * (1 - 1e-2):
        raise ValueError(f"custom template: sites {shortest:.3f} apart, closer than the bond length {bond:.3f}")
    coordination = tuple(int((x <= bond * 1.01).sum()) for x in dists)
    return MotifTemplate(name=name, vertex_configuration="custom", a=a / bond, b=b / bond, gamma=gamma, frac=frac,
                         coordination=coordination)


def load_custom_template(path: str | Path) -> MotifTemplate:
    """Read a custom template from YAML (.yaml/.yml) or JSON; ValueError for an unreadable or malformed file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read template file {p}: {exc.strerror or exc}") from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise their own parser errors; report one line
        raise ValueError(f"template file {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    return template_from_dict(data)


def resolve_template(spec: str | Path | dict | MotifTemplate) -> MotifTemplate:
    """A template from a built-in name, a custom template file path, a dict or a template."""
    if isinstance(spec, MotifTemplate):
        return spec
    if isinstance(spec, dict):
        return template_from_dict(spec)
    s = str(spec)
    if s.lower().endswith((".yaml", ".yml", ".json")):
        return load_custom_template(s)
    return get_template(s)


def _in_plane_distances(a: float, b: float, gamma: float, frac2: np.ndarray, reach: int = 3) -> list[np.ndarray]:
    """Per site, distances to every other site and image within ``reach`` cells (self excluded)."""
    g = math.radians(gamma)
    cell = np.array([[a, 0.0], [b * math.cos(g), b * math.sin(g)]])
    shifts = np.array([[i, j] for i in range(-reach, reach + 1) for j in range(-reach, reach + 1)], dtype=float)
    out = []
    for f in frac2:
        diff = (frac2[None, :, :] - f[None, None, :] + shifts[:, None, :]).reshape(-1, 2) @ cell
        dist = np.linalg.norm(diff, axis=1)
        out.append(dist[dist > 1e-8])
    return out
