"""The shipped structure pool: distinct Materials Project structures (<= 20 atoms) with a fixed split.

Columns of ``data/pool.parquet`` (one row per material):
material_id, formula (reduced), n_atoms, elements (sorted symbols), chemsys ("A-B"),
lattice (9 floats, row-major 3x3 in A), frac_coords (3*n_atoms floats in [0, 1)),
atomic_numbers (n_atoms ints), spacegroup, formation_energy_per_atom (eV/atom, MP2020-corrected),
e_above_hull_mp (eV/atom, Materials Project's value), split ("train" | "val" | "test"), source_file.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Iterator, Literal

import numpy as np
import pandas as pd
from pymatgen.core import Lattice, Structure

from tessera.tools.errors import DataError
from tessera.tools.paths import POOL_PATH

Split = Literal["train", "val", "test"]


@lru_cache(maxsize=1)
def _load_all() -> pd.DataFrame:
    if not POOL_PATH.exists():
        raise DataError(f"structure pool missing: {POOL_PATH} (run `make data` in a developer checkout)")
    return pd.read_parquet(POOL_PATH)


def load_pool(split: Split | None = None) -> pd.DataFrame:
    """The pool as a DataFrame (a copy), optionally one split only."""
    df = _load_all()
    if split is not None:
        df = df[df["split"] == split]
    return df.reset_index(drop=True).copy()


def pool_hash() -> str:
    """SHA-256 of the pool file: names the exact data (and split) a model was trained on."""
    return hashlib.sha256(POOL_PATH.read_bytes()).hexdigest()


def row_arrays(row: pd.Series | dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice (3, 3) A, frac_coords (n, 3), atomic_numbers (n,)) of one pool row."""
    lattice = np.asarray(row["lattice"], dtype=np.float64).reshape(3, 3)
    frac = np.asarray(row["frac_coords"], dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(row["atomic_numbers"], dtype=np.int64)
    return lattice, frac, numbers


def row_to_structure(row: pd.Series | dict) -> Structure:
    """A pymatgen Structure from one pool row."""
    lattice, frac, numbers = row_arrays(row)
    return Structure(Lattice(lattice), [int(z) for z in numbers], frac)


def iter_structures(split: Split | None = None) -> Iterator[tuple[str, Structure]]:
    """Yield (material_id, Structure) over a split."""
    for _, row in load_pool(split).iterrows():
        yield row["material_id"], row_to_structure(row)
