"""Shared fixtures: small, real crystals and the mixed good/bad input folder. Keep this file small."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a model hub at test time

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_default_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands run without --store record into a throwaway store, never the user's data directory."""
    os.environ["TESSERA_STORE"] = str(tmp_path_factory.mktemp("default_store"))


def rattled(structure: Structure, *, amplitude: float = 0.05, seed: int = 0) -> Structure:
    """A copy with every atom displaced by a seeded Gaussian of ``amplitude`` A per Cartesian component."""
    rng = np.random.default_rng(seed)
    out = structure.copy()
    for i, delta in enumerate(rng.normal(0.0, amplitude, size=(len(out), 3))):
        out.translate_sites([i], delta, frac_coords=False, to_unit_cell=True)
    return out


@pytest.fixture
def mixed_batch_dir() -> Path:
    """tests/data/mixed_batch: 3 good files (CIF, POSCAR, extxyz) + empty.cif, malformed.cif, overlapping.cif."""
    return DATA / "mixed_batch"


@pytest.fixture
def nacl() -> Structure:
    """Rock-salt NaCl, primitive 2-atom cell, a = 5.69 A (near CHGNet's minimum)."""
    return Structure(Lattice.from_parameters(4.02, 4.02, 4.02, 60, 60, 60), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture
def si() -> Structure:
    """Diamond Si, conventional 8-atom cell, a = 5.43 A."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


@pytest.fixture
def cu_fcc() -> Structure:
    """fcc Cu, conventional 4-atom cell, a = 3.70 A (EMT's minimum is near 3.59 A)."""
    return Structure(Lattice.cubic(3.70), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
