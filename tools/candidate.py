"""The Candidate record: one crystal's journey through the pipeline, accumulated stage by stage.

Every stage writes its own field and, when it stops a candidate, says why (``error`` or a failed
prescreen stage with its ``reason``). The record is what lands in ``candidates.jsonl``, the store and
the audit log, so it holds plain JSON-able values; the structure travels as CIF text.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure


class StageOutcome(BaseModel):
    """Result of one prescreen stage."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    reason: str | None = Field(None, description="why it failed (or a note when it passed)")
    value: float | None = Field(None, description="the number the stage judged, in the stage's unit")


class RelaxOutcome(BaseModel):
    """Result of one relaxation (CHGNet, FIRE with a cell filter)."""

    model_config = ConfigDict(extra="forbid")

    converged: bool
    steps: int
    energy_per_atom: float | None = Field(None, description="eV/atom, final, as the model predicts (uncorrected)")
    initial_energy_per_atom: float | None = None
    max_force: float | None = Field(None, description="eV/A at the final step")
    seconds: float
    cif: str | None = Field(None, description="final structure")
    error: str | None = None


class Candidate(BaseModel):
    """One crystal and what every stage found about it.

    Fields stay ``None`` until their stage runs, so a reader can tell "not reached" from "failed".
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    source: str = Field("", description="input file, or 'sample:<checkpoint>' for generated ones")
    formula: str | None = None
    n_atoms: int | None = None
    initial_cif: str | None = None
    prescreen: dict[str, StageOutcome] = Field(default_factory=dict)
    relaxed: bool = False
    converged: bool | None = None
    relax_steps: int | None = None
    relax_seconds: float | None = None
    energy_per_atom: float | None = Field(None, description="eV/atom, CHGNet, after relaxation (uncorrected)")
    corrected_energy_per_atom: float | None = Field(None, description="eV/atom on the hull's energy scale")
    formation_energy_per_atom: float | None = None
    e_hull: float | None = Field(None, description="eV/atom above the reference hull; negative = below it")
    stable: bool | None = Field(None, description="e_hull <= the stable threshold (0.1 eV/atom), first judge (CHGNet)")
    e_hull_confirm: float | None = Field(
        None, description="eV/atom above the hull by the second judge (SevenNet relaxed from the CHGNet structure, "
        "MP2020-corrected); set only for candidates the first judge calls stable"
    )
    energy_per_atom_confirm: float | None = Field(None, description="eV/atom, the second judge's raw final energy")
    confirm_seconds: float | None = Field(None, description="s, the second judge's relaxation")
    confirm_judge: str | None = Field(None, description="the second judge, e.g. 'sevennet:7net-0'")
    confirmed: bool | None = Field(
        None, description="both judges within the stable threshold; None when not asked (no --confirm) or not stable"
    )
    spacegroup: str | None = None
    spacegroup_number: int | None = None
    unique: bool | None = None
    novel: bool | None = None
    matched_id: str | None = Field(None, description="reference pool material this one matches, if any")
    novel_prototype: bool | None = Field(
        None, description="no pool match even with species ignored (not an element substitution); judged for "
        "stable candidates, False whenever novel is False"
    )
    prototype_matched_id: str | None = Field(None, description="pool material of the same structure type, if any")
    plausible: bool | None = Field(None, description="tools.measures.plausibility: False flags e.g. CdI10")
    plausibility_note: str | None = None
    error: str | None = None
    cif: str | None = Field(None, description="final structure: relaxed if relaxation ran, else the input")
    provenance: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_structure(cls, structure: Structure, *, source: str = "", **fields: Any) -> "Candidate":
        """A fresh candidate for a structure (the CIF is written once, here)."""
        cif = structure.to(fmt="cif")
        return cls(
            source=source,
            formula=structure.composition.reduced_formula,
            n_atoms=len(structure),
            initial_cif=cif,
            cif=cif,
            **fields,
        )

    def structure(self) -> Structure:
        """The current structure (relaxed if relaxation ran)."""
        if self.cif is None:
            raise ValueError(f"candidate {self.id} has no structure")
        with warnings.catch_warnings():
            # Our own CIFs: pymatgen's note that it rounded coordinates to ideal values is noise here.
            warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF", category=UserWarning)
            return Structure.from_str(self.cif, fmt="cif")

    def stopped(self) -> bool:
        """True when an error or a gating stage stopped this candidate."""
        return self.error is not None
