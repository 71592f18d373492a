"""Shared fixtures for the store tests: real LanceDB stores in temporary directories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from tessera.store import Store
from tessera.tools.candidate import Candidate, StageOutcome


_FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def rocksalt(a: float, el: tuple[str, str] = ("Na", "Cl")) -> Structure:
    """Conventional rock-salt cell, 8 atoms (built directly: from_spacegroup costs ~0.5 s a call)."""
    return Structure(Lattice.cubic(a), [el[0]] * 4 + [el[1]] * 4, np.vstack([_FCC, _FCC + 0.5]) % 1.0)


def make_candidates(n: int, *, seed: int = 0, prefix: str = "c") -> list[Candidate]:
    """n real small crystals with plausible stage results (deterministic under the seed)."""
    rng = np.random.default_rng(seed)
    pairs = [("Na", "Cl"), ("Mg", "O"), ("Li", "F"), ("Ca", "S"), ("K", "Br")]
    out = []
    for k in range(n):
        el = pairs[k % len(pairs)]
        s = rocksalt(float(rng.uniform(3.5, 6.0)), el)
        c = Candidate.from_structure(s, source="test")
        c.id = f"{prefix}{k:04d}"
        c.prescreen = {"charge": StageOutcome(passed=True), "geometry": StageOutcome(passed=k % 4 != 3, reason="short")}
        c.relaxed = k % 4 != 3
        c.energy_per_atom = float(rng.normal(-4.0, 0.5))
        c.e_hull = float(rng.normal(0.1, 0.15)) if c.relaxed else None
        c.stable = None if c.e_hull is None else c.e_hull <= 0.1
        c.unique, c.novel = True, k % 2 == 0
        out.append(c)
    return out


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")
