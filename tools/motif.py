"""Motif detection: does a structure contain a given net (kagome, honeycomb, ..., pyrochlore) of a given element?

Used for ``motif_exact`` (end of sampling) and ``motif_retained`` (after relaxation). Detection reads the
net's geometry, not the template's coordinates, so a relaxed, shifted, rotated or re-celled structure is still
recognised:

2D nets: for each lattice plane spanned by two cell vectors (a-b first, the plane the inpainting writes, then
b-c and c-a), take the element's sites and bond each one to the element's sites (periodic images included)
that lie within ``PLANARITY_TOL`` A of its plane and within (1 + 2 ``BOND_REL_TOL``) times the shortest such
distance. Every connected group of bonded sites is a candidate layer. A layer is the net when every one of
its sites has a vertex signature of the template (number of net neighbours and the cyclic sequence of
in-plane angles between them, up to rotation and reflection, within ``ANGLE_TOL_DEG``), its sites are split
among the template's vertex kinds in the template's proportions (Lieb: one 4-fold per two 2-fold), and all
its bonds are within ``BOND_REL_TOL`` of their mean. The second-neighbour shell of every built-in net is at
least sqrt(2) d, well beyond the 1.2 d cutoff.

3D nets (pyrochlore): the same, without the plane: each site needs the template's neighbour count and the
sorted multiset of angles between its neighbour bonds (60 x 6, 120 x 6, 180 x 3: two corner-sharing
tetrahedra), and the bonds must span three dimensions (a triangular layer has the same angle multiset).
A 2D net is reported wherever such a layer exists, even inside a 3D arrangement (pyrochlore's {111} planes
alternate kagome and triangular layers, and the detector finds both).

The template signatures are computed from the template itself with the same code, so a custom net is
detected the same way.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict

from tessera.generators.motifs import MotifTemplate, default_bond_length, resolve_template
from tessera.tools.errors import InputError

# Each net bond within this fraction of the layer's mean net bond.
BOND_REL_TOL = 0.10
# Each angle between neighbouring net bonds within this many degrees of the template's.
ANGLE_TOL_DEG = 10.0
# Net sites of one layer within this many A of a site's plane (2D nets; buckling allowed after relaxation).
PLANARITY_TOL = 0.30
# The net's mean bond within this fraction of the expected bond length (the one sampled with, default
# motifs.default_bond_length): a relaxation may stretch bonds a little, but a "net" of twice the bond length
# (e.g. one kagome site and its images in a side plane) is no motif.
BOND_LENGTH_WINDOW = 0.25
# Neighbours are searched up to this distance (A) before the per-layer cutoff is set.
SEARCH_RADIUS = 6.0


class MotifMatch(BaseModel):
    """Result of ``detect_motif``; echoes its inputs.

    found: the net is present. matched_sites: indices (into the structure) of the sites of the best layer
    (empty if none was bonded). plane: the lattice plane of that layer ("ab", "bc", "ca"; "3d" for a 3D net).
    bond_length: mean net bond (A). max_bond_deviation: largest |d - mean| / mean. max_angle_deviation: largest
    angle difference to the template (degrees). max_out_of_plane: largest height of a layer site off its
    neighbours' plane (A). reason: why not found (empty when found).
    """

    model_config = ConfigDict(extra="forbid")

    lattice: str
    element: str
    found: bool
    matched_sites: list[int] = []
    plane: str = ""
    bond_length: float | None = None
    max_bond_deviation: float | None = None
    max_angle_deviation: float | None = None
    max_out_of_plane: float | None = None
    reason: str = ""
    expected_bond_length: float | None = None
    bond_length_window: float = BOND_LENGTH_WINDOW
    bond_rel_tol: float = BOND_REL_TOL
    angle_tol_deg: float = ANGLE_TOL_DEG
    planarity_tol: float = PLANARITY_TOL


# -- signatures --------------------------------------------------------------------------------------------------
def _cyclic_angles(vectors: np.ndarray, normal: np.ndarray) -> list[float]:
    """Angles (degrees) between consecutive bond directions around a vertex, projected on the plane."""
    u = vectors - np.outer(vectors @ normal, normal)
    e1 = u[0] / np.linalg.norm(u[0])
    e2 = np.cross(normal, e1)
    phi = np.sort(np.degrees(np.arctan2(u @ e2, u @ e1)) % 360.0)
    return list(np.diff(np.concatenate([phi, [phi[0] + 360.0]])))


def _cyclic_distance(seq: list[float], ref: list[float]) -> float:
    """Smallest max |difference| between seq and ref over rotations and reflections (equal lengths)."""
    n = len(ref)
    best = math.inf
    for s in (seq, seq[::-1]):
        for r in range(n):
            rot = s[r:] + s[:r]
            best = min(best, max(abs(x - y) for x, y in zip(rot, ref)))
    return best


def _pair_angles(vectors: np.ndarray) -> list[float]:
    """Sorted angles (degrees) between every pair of bond vectors."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    iu = np.triu_indices(len(vectors), 1)
    return sorted(np.degrees(np.arccos(cos[iu])).tolist())


def _bonds(structure, sites: list[int], normal: np.ndarray | None) -> dict[int, list] | None:
    """Per site (index into ``sites``), its net bonds as (j, vector A). A pair is bonded when it lies within
    PLANARITY_TOL of the plane (2D) and within (1 + 2 BOND_REL_TOL) x the shorter of the two sites' nearest
    in-plane distances (so a far, stray atom of the element never joins a net). None if no pair qualifies."""
    from pymatgen.core import Structure

    sub = Structure.from_sites([structure[i] for i in sites])
    centres, points, images, dists = sub.get_neighbor_list(SEARCH_RADIUS)
    if len(dists) == 0:
        return None
    coords = sub.cart_coords
    vec = coords[points] + images @ sub.lattice.matrix - coords[centres]
    keep = np.ones(len(dists), dtype=bool) if normal is None else np.abs(vec @ normal) <= PLANARITY_TOL
    if not keep.any():
        return None
    nearest = np.full(len(sites), np.inf)
    np.minimum.at(nearest, centres[keep], dists[keep])
    cutoff = (1.0 + 2.0 * BOND_REL_TOL) * np.minimum(nearest[centres], nearest[points])
    keep &= dists <= cutoff
    bonds: dict[int, list] = {k: [] for k in range(len(sites))}
    for c, p, v in zip(centres[keep], points[keep], vec[keep]):
        bonds[int(c)].append((int(p), v))
    return bonds


def _components(bonds: dict[int, list]) -> list[list[int]]:
    seen: set[int] = set()
    out = []
    for start in bonds:
        if start in seen or not bonds[start]:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            i = stack.pop()
            comp.append(i)
            for j, _ in bonds[i]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        out.append(sorted(comp))
    return out


@lru_cache(maxsize=64)
def _template_signatures_cached(key: str, template_json: str) -> tuple:
    import json

    d = json.loads(template_json)
    t = MotifTemplate(name=d["name"], vertex_configuration=d["vertex_configuration"], a=d["a"], b=d["b"],
                      gamma=d["gamma"], frac=np.array(d["frac"]), coordination=tuple(d["coordination"]), dims=d["dims"],
                      c=d["c"], alpha=d["alpha"], beta=d["beta"])
    s = t.structure("Mn", 1.0 * 2.5, c=None if t.dims == 3 else 3.0 * 2.5)
    normal = None if t.dims == 3 else _plane_normal(s.lattice.matrix, "ab")
    sites = list(range(len(s)))
    bonds = _bonds(s, sites, normal)
    assert bonds is not None
    sigs = []
    for i in sites:
        vecs = np.array([v for _, v in bonds[i]])
        sigs.append((len(vecs), tuple(_cyclic_angles(vecs, normal) if normal is not None else _pair_angles(vecs))))
    return tuple(sigs)


def template_signatures(template: MotifTemplate) -> list[tuple[int, tuple[float, ...]]]:
    """Per template site: (coordination, angles) as the detector measures them on the ideal net."""
    import json

    return list(_template_signatures_cached(template.name, json.dumps(template.to_dict())))


def _plane_normal(matrix: np.ndarray, plane: str) -> np.ndarray:
    i, j = {"ab": (0, 1), "bc": (1, 2), "ca": (2, 0)}[plane]
    n = np.cross(matrix[i], matrix[j])
    return n / np.linalg.norm(n)


def _angle_deviation(seq: list[float], ref: list[float], planar: bool) -> float:
    """Largest angle difference (degrees): cyclic sequences up to rotation and reflection (2D), sorted
    multisets (3D)."""
    if planar:
        return _cyclic_distance(seq, ref)
    return max((abs(x - y) for x, y in zip(seq, ref)), default=0.0)


def _vertex_kinds(template: MotifTemplate) -> tuple[list[tuple[int, tuple[float, ...]]], dict[int, float]]:
    """The template's distinct vertex signatures and the share of sites of each."""
    kinds: list[tuple[int, tuple[float, ...]]] = []
    counts: Counter = Counter()
    sigs = template_signatures(template)
    for cn, angles in sigs:
        for k, (kcn, kang) in enumerate(kinds):
            if kcn == cn and _angle_deviation(list(angles), list(kang), template.dims == 2) < 1e-3:
                counts[k] += 1
                break
        else:
            kinds.append((cn, angles))
            counts[len(kinds) - 1] += 1
    return kinds, {k: n / len(sigs) for k, n in counts.items()}


# -- detection ---------------------------------------------------------------------------------------------------
def _check_layer(comp, bonds, normal, kinds, proportions) -> tuple[bool, dict]:
    """Match one connected layer against the template's vertex kinds."""
    lengths = np.array([np.linalg.norm(v) for i in comp for _, v in bonds[i]])
    mean = float(lengths.mean())
    bond_dev = float(np.abs(lengths - mean).max() / mean)
    out_of_plane = 0.0
    if normal is not None:
        out_of_plane = float(max(abs(float(v @ normal)) for i in comp for _, v in bonds[i]))
    angle_dev, counts, ok, why = 0.0, Counter(), True, ""
    for i in comp:
        vecs = np.array([v for _, v in bonds[i]])
        best_kind, best = None, math.inf
        for k, (cn, ref) in enumerate(kinds):
            if cn != len(vecs):
                continue
            seq = _cyclic_angles(vecs, normal) if normal is not None else _pair_angles(vecs)
            dev = _angle_deviation(seq, list(ref), normal is not None)
            if dev < best:
                best_kind, best = k, dev
        if best_kind is None:
            ok, why = False, f"a site has {len(vecs)} net neighbours; the net has {sorted({c for c, _ in kinds})}"
            continue
        angle_dev = max(angle_dev, best)
        counts[best_kind] += 1
        if best > ANGLE_TOL_DEG:
            ok, why = False, why or f"bond angles off by {best:.1f} deg (tolerance {ANGLE_TOL_DEG})"
    if ok and normal is None:
        # A 3D net must extend in three directions: the planar triangular net has pyrochlore's angle multiset.
        vectors = np.array([v for i in comp for _, v in bonds[i]])
        sv = np.linalg.svd(vectors, compute_uv=False)
        if sv[-1] < 0.3 * sv[0]:
            ok, why = False, "the bonded sites do not extend in three dimensions"
    if ok and bond_dev > BOND_REL_TOL:
        ok, why = False, f"bond lengths vary by {bond_dev:.1%} (tolerance {BOND_REL_TOL:.0%})"
    if ok:
        total = sum(counts.values())
        for k, share in proportions.items():
            if abs(counts.get(k, 0) / total - share) > 1e-6:
                ok, why = False, "vertex kinds not in the net's proportions"
                break
    return ok, {"bond_length": mean, "max_bond_deviation": bond_dev, "max_angle_deviation": angle_dev,
                "max_out_of_plane": out_of_plane, "reason": why}


def detect_motif(structure, lattice: str | MotifTemplate, element: str, *, bond_length: float | None = None) -> MotifMatch:
    """Whether ``structure`` (pymatgen Structure) holds the net ``lattice`` (a built-in name, a custom template
    file, or a template) made of ``element`` (symbol), with a mean bond within BOND_LENGTH_WINDOW of
    ``bond_length`` (A; default: the element's default bond length). InputError for an unknown lattice or
    element."""
    from pymatgen.core import Element

    try:
        template = resolve_template(lattice)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    try:
        symbol = Element(str(element)).symbol
    except (ValueError, KeyError) as exc:
        raise InputError(f"unknown element {element!r}") from exc
    try:
        expected = default_bond_length(symbol) if bond_length is None else float(bond_length)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if not expected > 0:
        raise InputError(f"bond_length must be > 0 A, got {bond_length}")
    base = {"lattice": template.name, "element": symbol, "expected_bond_length": expected}
    sites = [i for i, site in enumerate(structure) if site.specie.symbol == symbol]
    if not sites:
        return MotifMatch(**base, found=False, reason=f"no {symbol} in the structure")
    kinds, proportions = _vertex_kinds(template)
    planes = ["3d"] if template.dims == 3 else ["ab", "bc", "ca"]
    best: MotifMatch | None = None
    for plane in planes:
        normal = None if plane == "3d" else _plane_normal(structure.lattice.matrix, plane)
        bonds = _bonds(structure, sites, normal)
        if bonds is None:
            continue
        for comp in _components(bonds):
            ok, info = _check_layer(comp, bonds, normal, kinds, proportions)
            if ok and abs(info["bond_length"] / expected - 1.0) > BOND_LENGTH_WINDOW:
                ok, info["reason"] = False, (f"net bond {info['bond_length']:.2f} A, expected {expected:.2f} A "
                                             f"+/- {BOND_LENGTH_WINDOW:.0%}")
            match = MotifMatch(**base, found=ok, matched_sites=[sites[i] for i in comp], plane=plane, **info)
            if ok:
                return match
            if best is None or len(match.matched_sites) > len(best.matched_sites):
                best = match
    if best is None:
        return MotifMatch(**base, found=False, reason=f"no two {symbol} sites within {SEARCH_RADIUS} A in a plane")
    return best
