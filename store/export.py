"""Export stored candidates: CIF, extended XYZ, CSV, JSON, and DFT-ready VASP inputs.

VASP: inputs come from pymatgen's ``MPRelaxSet`` (Materials Project relaxation settings: INCAR, KPOINTS,
POSCAR). A POTCAR cannot be written here: POTCAR files are licensed by VASP and not shipped, so each
candidate folder gets ``POTCAR.spec`` listing the PBE POTCAR symbols MPRelaxSet asks for, one per line
in POSCAR order. Assemble the POTCAR from your own VASP distribution (e.g. ``cat`` the files named).
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tessera.store.schema import StoredCandidate
from tessera.tools.errors import InputError

ExportFormat = Literal["cif", "extxyz", "csv", "json", "vasp"]
EXPORT_FORMATS: tuple[str, ...] = ("cif", "extxyz", "csv", "json", "vasp")

_CSV_COLUMNS = [
    "id", "run_id", "round", "formula", "chemsys", "n_atoms", "spacegroup", "spacegroup_number",
    "prescreen_passed", "prescreen_failed_stage", "relaxed", "converged", "energy_per_atom", "e_hull", "stable",
    "unique", "novel", "on_hull", "e_hull_confirm", "confirmed", "novel_prototype", "plausible",
    "constraints_satisfied", "error", "checkpoint_hash", "spec_hash", "seed", "code_version",
    "content_hash", "review_status", "reviewer", "review_note", "reviewed_at", "recorded_at",
]


class ExportResult(BaseModel):
    """What an export wrote."""

    format: str
    out: str
    n_written: int
    paths: list[str]
    skipped: list[str] = []
    note: str | None = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)


def _stem(c: StoredCandidate) -> str:
    return _safe(f"{c.id}_{c.formula or 'unknown'}")


def export_candidates(candidates: list[StoredCandidate], *, fmt: str, out: Path) -> ExportResult:
    """Write candidates (fetched ``with_record=True``) to ``out``.

    cif: a directory with ``<id>_<formula>.cif`` per candidate (the stored final structure, unchanged).
    extxyz: one multi-frame file; numbers and ids in each frame's info. csv: one table of numbers (no
    structures). json: one file, a list of {stored fields..., "candidate": full record}. vasp: a
    directory per candidate with INCAR, KPOINTS, POSCAR and POTCAR.spec (see module docstring).
    A candidate without a structure is skipped (and named in ``skipped``) for structure formats.
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    paths: list[str] = []
    skipped: list[str] = []
    note = None
    if fmt in ("csv", "json", "extxyz"):
        if out.exists() and out.is_dir():
            raise InputError(f"--out {out} is a directory; {fmt} export writes one file")
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out} is a file; {fmt} export writes a directory")
        out.mkdir(parents=True, exist_ok=True)

    if fmt == "csv":
        with out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=_CSV_COLUMNS + ["elements"])
            writer.writeheader()
            for c in candidates:
                row = c.model_dump(mode="json", include=set(_CSV_COLUMNS))
                row["elements"] = " ".join(c.elements)
                writer.writerow(row)
        paths.append(str(out))
        return ExportResult(format=fmt, out=str(out), n_written=len(candidates), paths=paths)

    if fmt == "json":
        payload = [
            {**c.model_dump(mode="json"), "candidate": c.candidate().model_dump(mode="json") if c.candidate_json else None}
            for c in candidates
        ]
        out.write_text(json.dumps(payload, indent=1) + "\n")
        return ExportResult(format=fmt, out=str(out), n_written=len(candidates), paths=[str(out)])

    if fmt == "extxyz":
        from ase.io import write as ase_write
        from pymatgen.io.ase import AseAtomsAdaptor

        frames = []
        for c in candidates:
            try:
                atoms = AseAtomsAdaptor.get_atoms(c.structure())
            except (InputError, ValueError) as exc:
                skipped.append(f"{c.id}: {exc}")
                continue
            atoms.info = {
                k: v for k, v in c.model_dump(mode="json", include=set(_CSV_COLUMNS)).items() if v is not None
            }
            frames.append(atoms)
        ase_write(str(out), frames, format="extxyz")
        return ExportResult(format=fmt, out=str(out), n_written=len(frames), paths=[str(out)], skipped=skipped)

    if fmt == "cif":
        for c in candidates:
            cif = None
            if c.candidate_json is not None:
                rec = c.candidate()
                cif = rec.cif or rec.initial_cif
            if not cif:
                skipped.append(f"{c.id}: no structure")
                continue
            path = out / f"{_stem(c)}.cif"
            path.write_text(cif)
            paths.append(str(path))
        return ExportResult(format=fmt, out=str(out), n_written=len(paths), paths=paths, skipped=skipped)

    # vasp
    from pymatgen.io.vasp.sets import MPRelaxSet

    for c in candidates:
        try:
            structure = c.structure()
        except (InputError, ValueError) as exc:
            skipped.append(f"{c.id}: {exc}")
            continue
        folder = out / _stem(c)
        folder.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # MPRelaxSet warns that POTCARs are unavailable; that is exactly why POTCAR.spec is written.
            warnings.simplefilter("ignore")
            vis = MPRelaxSet(structure)
            vis.incar.write_file(folder / "INCAR")
            vis.kpoints.write_file(folder / "KPOINTS")
            vis.poscar.write_file(folder / "POSCAR")
            symbols = list(vis.potcar_symbols)
        (folder / "POTCAR.spec").write_text("\n".join(symbols) + "\n")
        paths.append(str(folder))
    note = (
        "POTCAR not written (VASP-licensed, not shipped): each folder has POTCAR.spec naming the PBE POTCARs "
        "MPRelaxSet uses, in POSCAR order"
    )
    return ExportResult(format=fmt, out=str(out), n_written=len(paths), paths=paths, skipped=skipped, note=note)
