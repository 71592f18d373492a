"""Geometric measures of a cell from covalent radii: how full it is and how close its closest atoms are.

Shared by the prescreen's geometry stage and the stability model's features, so neither imports the other.
Radii: Cordero et al. 2008 covalent radii, via ASE.
"""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii
from pymatgen.core import Structure


def _radii(structure: Structure) -> np.ndarray:
    """Covalent radii (A, Cordero 2008 via ASE) of every site, shape (n,)."""
    return np.array([covalent_radii[site.specie.Z] for site in structure], dtype=np.float64)


def space_occupation_ratio(structure: Structure) -> float:
    """SCIGEN's space-occupation ratio: sum of covalent-radius sphere volumes / cell volume (dimensionless)."""
    r = _radii(structure)
    return float(np.sum(4.0 / 3.0 * np.pi * r**3) / (abs(structure.volume) + 1e-12))


def min_distance_ratio(structure: Structure) -> tuple[float, float, int, int]:
    """Smallest d_ij / (r_i + r_j) over periodic pairs (covalent radii), with that pair's distance in A.

    Returns (ratio, distance, i, j); (inf, inf, -1, -1) when no pair lies within r_i + r_j (a ratio of 1).
    """
    r = _radii(structure)
    cutoff = 2.0 * float(r.max())
    centers, points, _, distances = structure.get_neighbor_list(r=cutoff, exclude_self=True)
    if len(distances) == 0:
        return float("inf"), float("inf"), -1, -1
    ratios = distances / (r[centers] + r[points])
    k = int(np.argmin(ratios))
    return float(ratios[k]), float(distances[k]), int(centers[k]), int(points[k])
