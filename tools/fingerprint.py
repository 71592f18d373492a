"""The structure fingerprint: a fixed-length vector for similarity search, dedup and novelty pre-filters.

Layout (``FINGERPRINT_DIM`` = 768 float32 values, unit L2 norm):

- ``[0, 96)`` composition block: atomic fraction of each element, slot ``Z - 1`` for Z = 1..95 and
  slot 95 for anything heavier. L2-normalised, then scaled by ``COMPOSITION_WEIGHT``.
- ``[96, 768)`` geometry block: for each unordered pair of the ``N_GROUPS`` = 7 element groups (28 pairs)
  a radial distribution histogram of ``N_BINS`` = 24 bins, centres 0.5..6.0 A, Gaussian smearing
  ``SIGMA`` = 0.2 A. Each pair distance r contributes ``exp(-(r_k - r)^2 / 2 sigma^2) * f_cut(r)`` to bin k,
  summed over both ordered directions of the pair, divided by the number of atoms in the cell (per-atom
  counts) and by ``r_k^2`` (so distant shells do not swamp the first ones). L2-normalised, then scaled by
  ``GEOMETRY_WEIGHT``.

Because both blocks are normalised and ``COMPOSITION_WEIGHT^2 + GEOMETRY_WEIGHT^2 = 1``, every
fingerprint has unit norm, so squared L2 distance = 2 - 2 cos: L2 and cosine search rank the same way.

Distances are measured after rescaling the cell isotropically to ``VOLUME_PER_ATOM`` = 20 A^3/atom (the
pool's median is 19), as StructureMatcher does with ``scale=True``: a CHGNet-relaxed structure and its
DFT original, a few per cent apart in volume, stay near-duplicates (unscaled, a 1 % change of the
lattice constants already moved the fingerprint by 0.09, about half the median distance between
different polymorphs of one formula). Absolute density is therefore not part of the fingerprint.

Invariances: rotation and translation (only interatomic distances enter), permutation of sites (sums
over sites), supercells (per-atom counts, then normalisation), isotropic scaling (see above). Continuity: Gaussian smearing plus a
smooth cosine taper ``f_cut`` between ``R_TAPER`` and ``R_CUT`` means no pair enters or leaves the
histogram abruptly, so a small rattle gives a small change.

Element groups keep the geometry block compact (exact elements are in the composition block):
s-block (H, alkali, alkaline earth), early d (groups 3-7, lanthanides, actinides), late d (groups 8-12),
p-block metals and metalloids (B, Al, Si, Ga, Ge, As, In, Sn, Sb, Tl, Pb, Bi, Po), light pnictogens and
carbon (C, N, P), chalcogens (O, S, Se, Te), halogens and noble gases.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pymatgen.core import Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from tessera.tools.errors import InputError

N_ELEMENT_SLOTS: int = 96
N_GROUPS: int = 7
N_PAIRS: int = N_GROUPS * (N_GROUPS + 1) // 2
N_BINS: int = 24
R_MIN: float = 0.5  # A, first bin centre
R_MAX: float = 6.0  # A, last bin centre
SIGMA: float = 0.2  # A, Gaussian smearing width
R_TAPER: float = R_MAX  # A, the taper starts here ...
R_CUT: float = R_MAX + 3.0 * SIGMA  # ... and reaches zero here
COMPOSITION_WEIGHT: float = 0.6
GEOMETRY_WEIGHT: float = 0.8
FINGERPRINT_DIM: int = N_ELEMENT_SLOTS + N_PAIRS * N_BINS  # 768
VOLUME_PER_ATOM: float = 20.0  # A^3/atom, every cell is rescaled to this before distances are taken
FINGERPRINT_VERSION: str = "rdf7x24-comp96-vol20-v2"

BIN_CENTRES: np.ndarray = np.linspace(R_MIN, R_MAX, N_BINS)

_S_BLOCK = {1, 3, 4, 11, 12, 19, 20, 37, 38, 55, 56, 87, 88}
_LATE_D = {26, 27, 28, 29, 30, 44, 45, 46, 47, 48, 76, 77, 78, 79, 80, 108, 109, 110, 111, 112}
_P_METALS = {5, 13, 14, 31, 32, 33, 49, 50, 51, 81, 82, 83, 84, 113, 114, 115, 116}
_C_N_P = {6, 7, 15}
_CHALCOGENS = {8, 16, 34, 52}
_HALOGENS_NOBLE = {2, 9, 10, 17, 18, 35, 36, 53, 54, 85, 86, 117, 118}


def _group_of(z: int) -> int:
    if z in _S_BLOCK:
        return 0
    if z in _LATE_D:
        return 2
    if z in _P_METALS:
        return 3
    if z in _C_N_P:
        return 4
    if z in _CHALCOGENS:
        return 5
    if z in _HALOGENS_NOBLE:
        return 6
    return 1  # early d block, lanthanides, actinides


# Lookup tables indexed by Z (0 unused).
_GROUP_OF_Z: np.ndarray = np.array([0] + [_group_of(z) for z in range(1, 119)], dtype=np.int64)
_PAIR_INDEX: np.ndarray = np.zeros((N_GROUPS, N_GROUPS), dtype=np.int64)
_k = 0
for _a in range(N_GROUPS):
    for _b in range(_a, N_GROUPS):
        _PAIR_INDEX[_a, _b] = _PAIR_INDEX[_b, _a] = _k
        _k += 1
del _k, _a, _b


def _taper(r: np.ndarray) -> np.ndarray:
    """Smooth cutoff: 1 below R_TAPER, cosine down to 0 at R_CUT (continuous value and slope)."""
    x = np.clip((r - R_TAPER) / (R_CUT - R_TAPER), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * x))


def fingerprint_from_arrays(lattice: np.ndarray, frac_coords: np.ndarray, atomic_numbers: np.ndarray) -> np.ndarray:
    """Fingerprint of a periodic cell given as arrays.

    Args:
        lattice: (3, 3) lattice vectors as rows, A (rescaled internally to VOLUME_PER_ATOM).
        frac_coords: (n, 3) fractional coordinates.
        atomic_numbers: (n,) integers 1..118.

    Returns:
        (FINGERPRINT_DIM,) float32, unit L2 norm.

    Raises:
        InputError: empty cell, non-finite or degenerate lattice, unknown atomic number.
    """
    lattice = np.ascontiguousarray(lattice, dtype=np.float64).reshape(3, 3)
    frac = np.ascontiguousarray(frac_coords, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    n = len(numbers)
    if n == 0 or len(frac) != n:
        raise InputError(f"fingerprint: need matching non-empty sites, got {len(frac)} coords and {n} numbers")
    if not (np.isfinite(lattice).all() and np.isfinite(frac).all()):
        raise InputError("fingerprint: lattice or coordinates are not finite")
    volume = abs(float(np.linalg.det(lattice)))
    if volume < 1e-3:
        raise InputError(f"fingerprint: degenerate lattice (volume {volume:.3g} A^3)")
    if numbers.min() < 1 or numbers.max() > 118:
        raise InputError("fingerprint: atomic numbers must lie in 1..118")

    # Isotropic rescale to a fixed volume per atom (StructureMatcher's scale=True semantics).
    lattice = lattice * (VOLUME_PER_ATOM * n / volume) ** (1.0 / 3.0)

    comp = np.bincount(np.minimum(numbers, N_ELEMENT_SLOTS) - 1, minlength=N_ELEMENT_SLOTS).astype(np.float64)
    comp /= np.linalg.norm(comp)

    cart = frac @ lattice
    i_idx, j_idx, _, dist = find_points_in_spheres(
        cart, cart, R_CUT, np.array([1, 1, 1], dtype=np.int64), lattice, tol=1e-8
    )
    keep = dist > 1e-8  # drop each site's zero-distance self image
    i_idx, j_idx, dist = i_idx[keep], j_idx[keep], dist[keep]

    geom = np.zeros((N_PAIRS, N_BINS), dtype=np.float64)
    if len(dist):
        groups = _GROUP_OF_Z[numbers]
        pair = _PAIR_INDEX[groups[i_idx], groups[j_idx]]
        weights = np.exp(-0.5 * ((BIN_CENTRES[None, :] - dist[:, None]) / SIGMA) ** 2) * _taper(dist)[:, None]
        np.add.at(geom, pair, weights)
        geom /= n * BIN_CENTRES[None, :] ** 2
    norm = np.linalg.norm(geom)
    if norm > 0:  # an isolated atom in a huge cell has no neighbours: composition alone then
        geom /= norm

    out = np.concatenate([COMPOSITION_WEIGHT * comp, GEOMETRY_WEIGHT * geom.ravel()])
    if norm == 0:
        out /= np.linalg.norm(out)
    return out.astype(np.float32)


def structure_fingerprint(structure: Structure) -> np.ndarray:
    """Fingerprint of one pymatgen Structure: (FINGERPRINT_DIM,) float32, unit norm.

    Disordered sites are not supported (a fingerprint of ordered crystals); they raise InputError.
    """
    if not structure.is_ordered:
        raise InputError("fingerprint: disordered structures are not supported")
    return fingerprint_from_arrays(
        structure.lattice.matrix, structure.frac_coords, np.array([site.specie.Z for site in structure])
    )


def structure_fingerprints(
    structures: Sequence[Structure], *, on_error: Literal["raise", "nan"] = "nan"
) -> np.ndarray:
    """Fingerprints of many structures: (len(structures), FINGERPRINT_DIM) float32.

    With ``on_error="nan"`` (default) a structure that cannot be fingerprinted gives a row of NaN, so one
    bad item never sinks the batch; check with ``np.isnan(out).any(axis=1)``.
    """
    out = np.empty((len(structures), FINGERPRINT_DIM), dtype=np.float32)
    for k, s in enumerate(structures):
        try:
            out[k] = structure_fingerprint(s)
        except InputError:
            if on_error == "raise":
                raise
            out[k] = np.nan
    return out


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between fingerprints (broadcasting over leading axes); 0 = identical, max 2."""
    return np.linalg.norm(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32), axis=-1)
