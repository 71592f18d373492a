"""Table schemas and the conversion of a Candidate (plus run context) into a candidate row.

Tables (LanceDB, one directory each inside the store):

- ``runs``: one row per run (an evaluation, a sampling job, a campaign, a design session).
- ``candidates``: one row per (run_id, id). The same Candidate id may appear in several runs (a batch
  evaluated twice); within one run, recording it again updates the row.

A candidate row keeps the searchable numbers as columns and the whole Candidate as canonical JSON
(``candidate_json``, without the two CIF strings, which have their own columns and are not stored
twice), so it round-trips exactly and new Candidate fields need no schema change. ``content_hash`` is
the SHA-256 of the canonical JSON of the complete record (CIFs included; see ``record_hash``); it is
also written to the audit log when the row is recorded, and ``tessera audit verify`` recomputes it from
the row, so a number or a structure edited in the table afterwards shows.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Composition, Structure

from tessera.store.audit import canonical_json, sha256_hex, to_jsonable
from tessera.tools.candidate import Candidate
from tessera.tools.errors import InputError
from tessera.tools.fingerprint import FINGERPRINT_DIM, structure_fingerprint
from tessera.tools.measures import is_on_hull

ReviewStatus = Literal["pending", "approved", "rejected"]
REVIEW_STATUSES: tuple[str, ...] = ("pending", "approved", "rejected")

_TS = pa.timestamp("us", tz="UTC")
VECTOR_TYPE = pa.list_(pa.float32(), FINGERPRINT_DIM)

CANDIDATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("round", pa.int32()),
        pa.field("recorded_at", _TS),
        pa.field("source", pa.string()),
        pa.field("formula", pa.string()),
        pa.field("elements", pa.list_(pa.string())),
        pa.field("chemsys", pa.string()),
        pa.field("n_elements", pa.int32()),
        pa.field("n_atoms", pa.int32()),
        pa.field("spacegroup", pa.string()),
        pa.field("spacegroup_number", pa.int32()),
        pa.field("cif", pa.string()),
        pa.field("initial_cif", pa.string()),
        pa.field("prescreen_json", pa.string()),
        pa.field("prescreen_passed", pa.bool_()),
        pa.field("prescreen_failed_stage", pa.string()),
        pa.field("relaxed", pa.bool_()),
        pa.field("converged", pa.bool_()),
        pa.field("relax_steps", pa.int32()),
        pa.field("relax_seconds", pa.float64()),
        pa.field("energy_per_atom", pa.float64()),
        pa.field("corrected_energy_per_atom", pa.float64()),
        pa.field("formation_energy_per_atom", pa.float64()),
        pa.field("e_hull", pa.float64()),
        pa.field("stable", pa.bool_()),
        pa.field("unique", pa.bool_()),
        pa.field("novel", pa.bool_()),
        pa.field("matched_id", pa.string()),
        # Stability levels and novelty levels (issue 16); added to older stores on open (ADDED_COLUMNS).
        pa.field("on_hull", pa.bool_()),
        pa.field("e_hull_confirm", pa.float64()),
        pa.field("confirmed", pa.bool_()),
        pa.field("novel_prototype", pa.bool_()),
        pa.field("plausible", pa.bool_()),
        pa.field("constraints_satisfied", pa.bool_()),
        pa.field("constraints_json", pa.string()),
        pa.field("error", pa.string()),
        pa.field("checkpoint_hash", pa.string()),
        pa.field("spec_hash", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("code_version", pa.string()),
        pa.field("provenance_json", pa.string()),
        pa.field("candidate_json", pa.string()),
        pa.field("content_hash", pa.string()),
        pa.field("has_vector", pa.bool_()),
        pa.field("vector", VECTOR_TYPE),
        pa.field("review_status", pa.string()),
        pa.field("reviewer", pa.string()),
        pa.field("review_note", pa.string()),
        pa.field("reviewed_at", _TS),
    ]
)

ADDED_COLUMNS: frozenset[str] = frozenset({"on_hull", "e_hull_confirm", "confirmed", "novel_prototype", "plausible"})
"""Nullable columns newer than the first stores: opening an older store adds them (all null), nothing else
changes; the full records in ``candidate_json`` already hold the values when they were known."""

RUN_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("kind", pa.string()),
        pa.field("status", pa.string()),
        pa.field("created_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("goal", pa.string()),
        pa.field("params_json", pa.string()),
        pa.field("summary_json", pa.string()),
        pa.field("spec_hash", pa.string()),
        pa.field("checkpoint_hash", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("code_version", pa.string()),
        pa.field("user", pa.string()),
        pa.field("host", pa.string()),
        pa.field("pid", pa.int64()),
        pa.field("audit_head_seq", pa.int64()),
        pa.field("audit_head_hash", pa.string()),
    ]
)

# Columns a listing needs (everything but the heavy text and the vector).
LIGHT_COLUMNS: list[str] = [
    f.name for f in CANDIDATE_SCHEMA if f.name not in ("cif", "initial_cif", "candidate_json", "vector")
]


class StoredCandidate(BaseModel):
    """A candidate as the store holds it: one row of ``Store.search``, ``Store.nearest``, ``Store.get``.

    Identity and lineage: ``id`` (the same from sampling to review), ``run_id`` (the run that recorded this
    row; one id can be in several runs), ``round``, ``recorded_at`` (UTC), ``checkpoint_hash`` (SHA-256 of
    the generator weights), ``seed``, ``spec_hash`` (the DesignSpec), ``code_version``, ``content_hash``
    (SHA-256 of the full record, checked by ``Store.verify_run``).

    Chemistry: ``formula`` (reduced), ``elements``, ``chemsys`` (e.g. "Co-Li-O"), ``n_atoms`` (in the cell),
    ``spacegroup`` / ``spacegroup_number`` (spglib, symprec 0.1 A).

    Judgement (None = the stage did not run): ``prescreen_passed`` / ``prescreen_failed_stage``,
    ``relaxed``, ``converged``, ``energy_per_atom`` (eV/atom, CHGNet, raw), ``e_hull`` (eV/atom above the
    shipped reference hull, CHGNet; negative = below it), ``stable`` (E_hull <= 0.1 eV/atom), ``on_hull``
    (E_hull <= 0), ``e_hull_confirm`` and ``confirmed`` (the second judge, SevenNet, agrees within 0.1),
    ``unique`` (in its run), ``novel`` (no match in the reference pool), ``novel_prototype`` (no match even
    with species ignored), ``plausible`` (False flags compositions such as CdI10),
    ``constraints_satisfied`` (meets the DesignSpec), ``error`` (why it stopped, one line).

    Review: ``review_status`` ("pending", "approved", "rejected"), ``reviewer``, ``review_note``,
    ``reviewed_at``. ``distance``: fingerprint distance to the query, from ``Store.nearest`` only.

    Fetched with ``with_record=True`` (``Store.get`` always is): ``.candidate()`` gives the full
    :class:`tessera.tools.candidate.Candidate` (every stage's values and reasons), ``.structure()`` the
    final pymatgen Structure (relaxed when relaxation ran).
    """

    model_config = ConfigDict(extra="ignore")

    id: str
    run_id: str
    round: int | None = None
    recorded_at: dt.datetime | None = None
    formula: str | None = None
    elements: list[str] = Field(default_factory=list)
    chemsys: str | None = None
    n_atoms: int | None = None
    spacegroup: str | None = None
    spacegroup_number: int | None = None
    prescreen_passed: bool | None = None
    prescreen_failed_stage: str | None = None
    relaxed: bool | None = None
    converged: bool | None = None
    energy_per_atom: float | None = None
    e_hull: float | None = None
    stable: bool | None = None
    unique: bool | None = None
    novel: bool | None = None
    on_hull: bool | None = None
    e_hull_confirm: float | None = None
    confirmed: bool | None = None
    novel_prototype: bool | None = None
    plausible: bool | None = None
    constraints_satisfied: bool | None = None
    error: str | None = None
    checkpoint_hash: str | None = None
    spec_hash: str | None = None
    seed: int | None = None
    code_version: str | None = None
    content_hash: str | None = None
    review_status: str = "pending"
    reviewer: str | None = None
    review_note: str | None = None
    reviewed_at: dt.datetime | None = None
    distance: float | None = Field(None, description="fingerprint distance to the query (nearest-neighbour search)")
    candidate_json: str | None = Field(None, exclude=True)
    cif: str | None = Field(None, exclude=True)
    initial_cif: str | None = Field(None, exclude=True)

    def candidate(self) -> Candidate:
        """The full Candidate record (needs a query with ``with_record=True``)."""
        if self.candidate_json is None:
            raise InputError(f"candidate {self.id}: fetched without its record")
        return Candidate.model_validate(full_record(self.candidate_json, self.cif, self.initial_cif))

    def structure(self) -> Structure:
        """The stored final structure (InputError when the candidate has none or it does not parse)."""
        s = structure_of(self.candidate())
        if s is None:
            raise InputError(f"candidate {self.id} has no readable structure")
        return s


class RunRecord(BaseModel):
    """A row of the runs table."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    kind: str
    status: str
    created_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    goal: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    spec_hash: str | None = None
    checkpoint_hash: str | None = None
    seed: int | None = None
    code_version: str | None = None
    user: str | None = None
    host: str | None = None
    audit_head_seq: int | None = None
    audit_head_hash: str | None = None
    n_candidates: int | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "RunRecord":
        row = dict(row)
        row["params"] = json.loads(row.pop("params_json") or "{}")
        row["summary"] = json.loads(row.pop("summary_json") or "{}")
        return cls(**row)


RECORD_COLUMNS: list[str] = ["candidate_json", "cif", "initial_cif"]


def full_record(candidate_json: str, cif: str | None, initial_cif: str | None) -> dict[str, Any]:
    """The complete Candidate dict from a row's JSON (stored without CIFs) and its CIF columns."""
    record = json.loads(candidate_json)
    record["cif"] = cif
    record["initial_cif"] = initial_cif
    return record


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of a complete Candidate dict's canonical JSON: the content hash the audit log keeps."""
    return sha256_hex(canonical_json(record))


def _opt_int(x: Any) -> int | None:
    if x is None:
        return None
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _opt_bool(x: Any) -> bool | None:
    return None if x is None else bool(x)


def structure_of(c: Candidate) -> Structure | None:
    """The candidate's current structure, or None when it has none or its CIF does not parse."""
    cif = c.cif or c.initial_cif
    if not cif:
        return None
    try:
        with warnings.catch_warnings():
            # pymatgen warns about rounded occupancies/coordinates in CIFs; the row records the
            # parsed structure either way, and the CIF text itself is stored unchanged.
            warnings.simplefilter("ignore")
            return Structure.from_str(cif, fmt="cif")
    except (ValueError, KeyError, IndexError, AssertionError):
        return None


def candidate_row(
    c: Candidate,
    *,
    run_id: str,
    round: int,
    run_provenance: dict[str, Any],
    recorded_at: dt.datetime,
) -> dict[str, Any]:
    """One candidates-table row. Never raises for a bad structure: the row then has no vector."""
    structure = structure_of(c)
    elements: list[str] = []
    if structure is not None:
        elements = sorted({el.symbol for el in structure.composition.elements})
    elif c.formula:
        try:
            elements = sorted({el.symbol for el in Composition(c.formula).elements})
        except (ValueError, KeyError):
            elements = []
    formula = c.formula or (structure.composition.reduced_formula if structure is not None else None)

    vector = np.zeros(FINGERPRINT_DIM, dtype=np.float32)
    has_vector = False
    if structure is not None:
        try:
            vector = structure_fingerprint(structure)
            has_vector = True
        except InputError:
            has_vector = False  # disordered or degenerate: stored, but not in similarity search

    spacegroup, sg_number = c.spacegroup, c.spacegroup_number
    if spacegroup is None and structure is not None and structure.is_ordered:
        try:
            spacegroup, sg_number = structure.get_space_group_info(symprec=0.1)
        except (ValueError, TypeError):  # spglib could not classify it; the analyze stage may later
            spacegroup, sg_number = None, None

    dumped = c.model_dump(mode="json")
    prov = {**run_provenance, **dict(c.provenance)}
    constraints = dumped.get("constraints") or prov.get("constraints")
    satisfied = dumped.get("constraints_satisfied", prov.get("constraints_satisfied"))
    failed_stage = next((name for name, o in c.prescreen.items() if not o.passed), None)
    record = to_jsonable(dumped)
    content_hash = record_hash(record)
    candidate_json = canonical_json({k: v for k, v in record.items() if k not in ("cif", "initial_cif")})

    return {
        "id": c.id,
        "run_id": run_id,
        "round": int(round),
        "recorded_at": recorded_at,
        "source": c.source,
        "formula": formula,
        "elements": elements,
        "chemsys": "-".join(elements) if elements else None,
        "n_elements": len(elements) if elements else None,
        "n_atoms": c.n_atoms if c.n_atoms is not None else (len(structure) if structure is not None else None),
        "spacegroup": spacegroup,
        "spacegroup_number": _opt_int(sg_number),
        "cif": c.cif,
        "initial_cif": c.initial_cif,
        "prescreen_json": canonical_json(to_jsonable({k: v for k, v in c.prescreen.items()})),
        "prescreen_passed": (failed_stage is None) if c.prescreen else None,
        "prescreen_failed_stage": failed_stage,
        "relaxed": c.relaxed,
        "converged": c.converged,
        "relax_steps": c.relax_steps,
        "relax_seconds": c.relax_seconds,
        "energy_per_atom": c.energy_per_atom,
        "corrected_energy_per_atom": c.corrected_energy_per_atom,
        "formation_energy_per_atom": c.formation_energy_per_atom,
        "e_hull": c.e_hull,
        "stable": c.stable,
        "unique": c.unique,
        "novel": c.novel,
        "matched_id": c.matched_id,
        "on_hull": None if c.e_hull is None else is_on_hull(c.e_hull),
        "e_hull_confirm": c.e_hull_confirm,
        "confirmed": c.confirmed,
        "novel_prototype": c.novel_prototype,
        "plausible": c.plausible,
        "constraints_satisfied": _opt_bool(satisfied),
        "constraints_json": canonical_json(to_jsonable(constraints)) if constraints is not None else None,
        "error": c.error,
        "checkpoint_hash": _opt_str(prov.get("checkpoint_hash")),
        "spec_hash": _opt_str(prov.get("spec_hash") or prov.get("design_spec_hash")),
        "seed": _opt_int(prov.get("seed")),
        "code_version": _opt_str(prov.get("code_version")),
        "provenance_json": canonical_json(to_jsonable(prov)),
        "candidate_json": candidate_json,
        "content_hash": content_hash,
        "has_vector": has_vector,
        "vector": vector,
        "review_status": "pending",
        "reviewer": None,
        "review_note": None,
        "reviewed_at": None,
    }


def _opt_str(x: Any) -> str | None:
    return None if x is None else str(x)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """An Arrow table in CANDIDATE_SCHEMA from row dicts."""
    cols: dict[str, Any] = {}
    for f in CANDIDATE_SCHEMA:
        if f.name == "vector":
            flat = np.concatenate([np.asarray(r["vector"], dtype=np.float32) for r in rows]) if rows else np.zeros(0, np.float32)
            cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), FINGERPRINT_DIM)
        else:
            cols[f.name] = pa.array([r[f.name] for r in rows], type=f.type)
    return pa.Table.from_pydict(cols, schema=CANDIDATE_SCHEMA)
