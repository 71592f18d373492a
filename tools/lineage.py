"""One id per candidate from sampling to review: reading a sample's output back with its lineage.

``tessera sample`` writes ``candidates.jsonl`` beside its CIFs; each record holds the crystal (CIF), its id,
seed, index, checkpoint (path and sha256) and the sample run. When ``tessera evaluate`` is given that file,
or the folder that holds it, it reads the records rather than the CIFs, so every judged candidate keeps the
id it was born with and the store can trace a reviewed hit back to the model, seed and run that made it.
A candidates.jsonl written by ``tessera evaluate`` reads the same way (its input structure, its id and
provenance), so a batch can be judged again under other settings without losing its ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from pymatgen.core import Structure

from tessera.tools.candidate import Candidate
from tessera.tools.io import physical_problem, sanity_problem
from tessera.tools.isolation import attempt

CANDIDATES_FILE: str = "candidates.jsonl"
LINEAGE_KEYS: tuple[str, ...] = ("seed", "index", "checkpoint", "checkpoint_hash", "sample_run", "spec_hash",
                                 "constraints")
"""Record fields carried into a candidate's provenance (the store files seed, checkpoint_hash, spec_hash and
the constraint record: the motif and whether it was exact at the end of sampling)."""


def candidates_file(path: Path) -> Path | None:
    """The candidates.jsonl that ``path`` names or holds directly, else None."""
    if path.is_file() and path.name.endswith(".jsonl"):
        return path
    if path.is_dir() and (path / CANDIDATES_FILE).is_file():
        return path / CANDIDATES_FILE
    return None


def _candidate_from_record(record: Any, source: str) -> Candidate:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    cif = record.get("initial_cif") or record.get("cif")
    if not isinstance(cif, str) or not cif.strip():
        raise ValueError("record has no CIF")
    structure = Structure.from_str(cif, fmt="cif")
    problem = sanity_problem(structure) or physical_problem(structure)
    if problem is not None:
        raise ValueError(problem)
    provenance = {k: record[k] for k in LINEAGE_KEYS if record.get(k) is not None}
    provenance.update({k: v for k, v in (record.get("provenance") or {}).items() if v is not None})
    fields: dict[str, Any] = {"provenance": provenance}
    if isinstance(record.get("id"), str) and record["id"]:
        fields["id"] = record["id"]
    return Candidate.from_structure(structure, source=source, **fields)


def read_candidates_file(path: Path) -> list[Candidate]:
    """One candidate per line of a candidates.jsonl; a bad line becomes that line's error record."""
    out: list[Candidate] = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path}#{n}"
        parsed = attempt(json.loads, line)
        if not parsed.ok:
            out.append(Candidate(source=source, error=f"{source}: not JSON ({parsed.error})"))
            continue
        made = attempt(_candidate_from_record, parsed.value, source)
        out.append(made.value if made.ok and made.value is not None
                   else Candidate(source=source, error=f"{source}: {made.error}"))
    return out


def split_candidate_files(paths: Iterable[Path]) -> tuple[list[Candidate], list[Path]]:
    """(candidates read from candidates.jsonl files and sample folders, the other paths to read as structures)."""
    read: list[Candidate] = []
    rest: list[Path] = []
    for p in paths:
        jsonl = candidates_file(Path(p))
        if jsonl is None:
            rest.append(Path(p))
        else:
            read.extend(read_candidates_file(jsonl))
    return read, rest
