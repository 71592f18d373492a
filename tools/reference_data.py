"""The shipped reference data of the hull: reference entries and elemental references (records and loaders).

Lives below both :mod:`tools.hull` (which builds phase diagrams from it) and :mod:`tools.mp_source` (which
turns Materials Project entries into the same :class:`ReferenceEntry` records), so neither imports the other.

``data/hull_entries.parquet`` holds Materials Project formation energies per atom (MP2020-corrected, eV/atom)
from the sources ``mp20`` (MP-20 materials incl. its train split), ``mpts52`` (MPTS-52, up to 52 atoms) and
``roost2020`` (older MP vintage, one entry per composition). When an id appears in several sources the
first of ``mp20 > mpts52 > roost2020`` wins. ``data/elemental_references.json`` holds the chemical
potentials mu_i (MP GGA ground-state energy per atom, eV/atom).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
from pymatgen.core import Composition

from tessera.tools.errors import DataError
from tessera.tools.paths import ELEMENT_REFS_PATH, HULL_ENTRIES_PATH

SOURCES: tuple[str, ...] = ("mp20", "mpts52", "roost2020")
"""Reference sources in ``hull_entries.parquet``, in priority order."""


@dataclass(frozen=True)
class ReferenceEntry:
    """One reference material: composition (full cell), formation energy per atom (eV/atom, MP2020)."""

    material_id: str
    composition: Composition
    formation_energy_per_atom: float
    source: str

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(sorted(el.symbol for el in self.composition.elements))


EntryProvider = Callable[[tuple[str, ...]], Sequence[ReferenceEntry]]
"""(sorted element symbols of a chemical system) -> extra reference entries within that system."""

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d+(?:\.\d+)?)")


def _parse_formula(formula: str) -> dict[str, float]:
    """``"Na3 Mn1 O6"`` (the parquet's full-formula format) -> {symbol: count}; falls back to pymatgen."""
    parts = formula.split()
    matches = [_TOKEN.fullmatch(p) for p in parts]
    if parts and all(matches):
        out: dict[str, float] = {}
        for m in matches:
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
        return out
    return {el.symbol: float(n) for el, n in Composition(formula).items()}


@lru_cache(maxsize=4)
def load_elemental_references(path: Path = ELEMENT_REFS_PATH) -> dict[str, float]:
    """Element symbol -> MP GGA ground-state energy per atom (eV/atom), the chemical potentials mu_i."""
    if not path.exists():
        raise DataError(f"elemental references missing: {path}")
    raw = json.loads(path.read_text())
    return {el: float(rec["energy_per_atom"]) for el, rec in raw.items()}


RawEntry = tuple[str, tuple[tuple[str, float], ...], float, str]
"""(material id, ((symbol, count), ...), formation energy per atom, source): an entry before parsing."""


@lru_cache(maxsize=4)
def load_raw_entries(path: Path = HULL_ENTRIES_PATH) -> tuple[RawEntry, ...]:
    """All reference entries, one per material id (priority mp20 > mpts52 > roost2020). Cached per process.

    Kept as plain tuples: building ~100k pymatgen Compositions up front costs seconds, and a phase
    diagram needs only the few hundred entries of one chemical system.
    """
    if not path.exists():
        raise DataError(f"hull reference entries missing: {path}")
    df = pd.read_parquet(path, columns=["material_id", "formula", "formation_energy_per_atom", "source"])
    unknown = set(df["source"]) - set(SOURCES)
    if unknown:
        raise DataError(f"{path}: unknown reference source(s) {sorted(unknown)}")
    rank = {s: k for k, s in enumerate(SOURCES)}
    df = df.assign(_rank=df["source"].map(rank)).sort_values(["material_id", "_rank"], kind="stable")
    df = df.drop_duplicates("material_id", keep="first")
    return tuple(
        (str(mid), tuple(sorted(_parse_formula(f).items())), float(e), str(s))
        for mid, f, e, s in zip(df["material_id"], df["formula"], df["formation_energy_per_atom"], df["source"])
        if math.isfinite(float(e))
    )


@lru_cache(maxsize=16)
def entries_by_system(sources: tuple[str, ...], path: Path = HULL_ENTRIES_PATH) -> dict[tuple[str, ...], tuple[RawEntry, ...]]:
    """Entries of the given sources grouped by their own chemical system (sorted element tuple)."""
    groups: dict[tuple[str, ...], list[RawEntry]] = {}
    for raw in load_raw_entries(path):
        if raw[3] in sources:
            groups.setdefault(tuple(el for el, _ in raw[1]), []).append(raw)
    return {k: tuple(v) for k, v in groups.items()}


def to_reference_entry(raw: RawEntry) -> ReferenceEntry:
    """A raw tuple of :func:`load_raw_entries` as a :class:`ReferenceEntry` (parses the composition)."""
    mid, counts, e_form, source = raw
    return ReferenceEntry(mid, Composition(dict(counts)), e_form, source)
