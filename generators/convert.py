"""Conversion of sampled CrystalBatch objects to pymatgen Structures (the type every later stage takes)."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure

from tessera.generators.crystal import CrystalBatch


def to_structures(batch: CrystalBatch, vocab: list[int]) -> list[Structure]:
    """One pymatgen Structure per crystal; ``vocab`` maps type indices to atomic numbers."""
    out = []
    for lattice, frac, types in batch.split():
        out.append(Structure(Lattice(lattice), [int(vocab[int(t)]) for t in types], frac % 1.0))
    return out
