"""Putting a model's energy on the reference hull's energy scale (the correction scheme, stated once).

The reference hull holds Materials Project formation energies with the MP2020 corrections applied
(anion corrections for O, S, F, Cl, N, H, ...; the GGA/GGA+U mixing shift for oxides and fluorides
of Co, Cr, Fe, Mn, Mo, Ni, V, W). A candidate energy must be on that same scale before it meets the
hull. Two schemes:

``as_is`` (default): the energy is already MP2020-compatible and is used unchanged. This is right for
  CHGNet 0.3.0: its training labels (MPtrj) are the MP2020-corrected GGA/GGA+U energies. Measured here
  on 60 held-out MP structures at their DFT geometry: CHGNet minus the MP2020-corrected DFT energy has
  a median |difference| of 0.023 eV/atom for the 26 entries that carry a correction, against 0.281
  eV/atom when MP2020 is applied on top (a double correction; oxides of U-elements off by ~1 eV/atom).
  After CHGNet relaxation (90 held-out test-split MP structures, <= 12 atoms, MP e_above_hull <= 0.02,
  20 of them oxides/fluorides of U elements; own entry left out of the hull), E_hull vs MP's
  e_above_hull: median |difference| 0.029 eV/atom and 98.9% labelled stable with ``as_is``, against
  0.345 eV/atom with ``mp2020`` on top (0.770 for the U-oxides). ``benchmarks/bench_hull.py`` repeats
  this on 150 structures <= 20 atoms plus random pyxtal structures of the same compositions.
``mp2020``: the energy is a raw GGA/GGA+U number (a model trained on uncorrected energies, or DFT):
  wrap it in a ComputedStructureEntry with MP's run type and Hubbard U values (GGA+U for oxides and
  fluorides containing a U element, U from pymatgen's MPRelaxSet) and apply
  ``MaterialsProject2020Compatibility(check_potcar=False)``, as Matbench Discovery does for such models.

  This is right for SevenNet-0 and SevenNet-l3i5 (the second judge, ``configs/judge.yaml``): measured at
  the DFT geometry of 8 held-out MP ground states, SevenNet minus the MP2020-corrected DFT energy equals
  the MP2020 correction itself (Dy2MnNiO6 +0.85, Ba2YIrO6 +0.42, GeCl4 +0.51, Ca(BeN)2 +0.14 eV/atom;
  intermetallic LaCrGe3 +0.02): its energies are uncorrected, so ``mp2020`` puts them on the hull's scale
  (tests/tools/test_judge.py checks this on an oxide, a nitride and an intermetallic).

Both schemes are applied identically to references and candidates: the references are already
MP2020-corrected, so only the candidate side needs the transform.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Composition, Structure
from pymatgen.entries.compatibility import CompatibilityError, MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry

from tessera.tools.errors import InputError, ToolFailed

Scheme = Literal["as_is", "mp2020"]
SCHEMES: tuple[str, ...] = ("as_is", "mp2020")

# MP's GGA+U rule: U is applied only when the structure contains O or F (F takes precedence in
# MPRelaxSet's LDAUU table order, the values are identical for both anions).
_U_ANIONS: tuple[str, ...] = ("F", "O")


class ScaledEnergy(BaseModel):
    """A model energy moved onto the hull's scale. Energies in eV/atom."""

    model_config = ConfigDict(extra="forbid")

    scheme: str
    energy_per_atom: float = Field(description="eV/atom, the model's energy as given")
    corrected_energy_per_atom: float = Field(description="eV/atom, on the MP2020-corrected scale")
    correction_per_atom: float = Field(description="eV/atom added by the scheme (0 for as_is)")
    run_type: str | None = Field(None, description="GGA or GGA+U as assumed by the mp2020 scheme")
    hubbards: dict[str, float] = Field(default_factory=dict, description="U values (eV) assumed by mp2020")


@lru_cache(maxsize=1)
def _hubbard_table() -> dict[str, dict[str, float]]:
    from pymatgen.io.vasp.sets import MPRelaxSet

    return {anion: dict(values) for anion, values in MPRelaxSet.CONFIG["INCAR"]["LDAUU"].items()}


@lru_cache(maxsize=1)
def _compat() -> MaterialsProject2020Compatibility:
    return MaterialsProject2020Compatibility(check_potcar=False)


def mp_run_parameters(composition: Composition) -> tuple[str, dict[str, float]]:
    """(run_type, hubbards) that Materials Project would have used for this composition."""
    symbols = {el.symbol for el in composition.elements}
    table = _hubbard_table()
    for anion in _U_ANIONS:
        if anion in symbols:
            hubbards = {s: float(table[anion][s]) for s in sorted(symbols) if s in table[anion]}
            if hubbards:
                return "GGA+U", hubbards
    return "GGA", {}


def mp2020_correction_per_atom(structure: Structure, energy_per_atom: float) -> tuple[float, str, dict[str, float]]:
    """MP2020 correction (eV/atom) for a raw GGA/GGA+U energy of ``structure``, with the run type and U used.

    Raises:
        ToolFailed: MaterialsProject2020Compatibility refuses the entry (e.g. an unsupported anion state).
    """
    run_type, hubbards = mp_run_parameters(structure.composition)
    n = len(structure)
    entry = ComputedStructureEntry(
        structure,
        energy_per_atom * n,
        parameters={"run_type": run_type, "is_hubbard": bool(hubbards), "hubbards": hubbards},
    )
    with warnings.catch_warnings():
        # Oxidation-state guessing in the anion correction warns on exotic compositions; the result
        # (or the refusal below) is what matters.
        warnings.simplefilter("ignore")
        try:
            processed = _compat().process_entry(entry, clean=True)
        except CompatibilityError as exc:
            raise ToolFailed(f"MP2020 correction refused {structure.composition.reduced_formula}: {exc}") from exc
    if processed is None:
        raise ToolFailed(f"MP2020 correction refused {structure.composition.reduced_formula}")
    return float(processed.correction) / n, run_type, hubbards


def to_hull_scale(structure: Structure, energy_per_atom: float, *, scheme: Scheme = "as_is") -> ScaledEnergy:
    """Move a model energy (eV/atom) onto the MP2020-corrected scale of the reference hull.

    Args:
        structure: the (relaxed) structure the energy belongs to; the mp2020 scheme reads its
            composition and, for oxides and sulfides, its bonding (peroxide/superoxide detection).
        energy_per_atom: eV/atom as the model predicts it.
        scheme: ``as_is`` or ``mp2020`` (see the module docstring).
    """
    if not math.isfinite(energy_per_atom):
        raise InputError(f"energy per atom is not finite ({energy_per_atom})")
    if scheme == "as_is":
        return ScaledEnergy(scheme=scheme, energy_per_atom=energy_per_atom,
                            corrected_energy_per_atom=energy_per_atom, correction_per_atom=0.0)
    if scheme == "mp2020":
        corr, run_type, hubbards = mp2020_correction_per_atom(structure, energy_per_atom)
        return ScaledEnergy(scheme=scheme, energy_per_atom=energy_per_atom,
                            corrected_energy_per_atom=energy_per_atom + corr, correction_per_atom=corr,
                            run_type=run_type, hubbards=hubbards)
    raise InputError(f"unknown energy correction scheme '{scheme}' (choose from {', '.join(SCHEMES)})")
