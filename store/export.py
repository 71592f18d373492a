"""Export stored candidates: CIF, extended XYZ, CSV, JSON, and DFT-ready VASP inputs.

Every format that can hold text carries the candidate's metadata (:func:`export_metadata`): its id, run,
formula, E_hull, stability level, space group and provenance (checkpoint hash, seed, spec hash, sample
run), so a file that leaves the store can be traced back to the model and settings that made it.

- cif: the structure symmetrised with spglib (the refined standard cell; tolerance ``symprec``, the
  analyze stage's 0.1 A, retried at a tenth of it), written with its space group's operations and the
  asymmetric unit, fractional coordinates in [0, 1). When spglib finds no symmetry the cell is written as
  it is, in P1, with a note. Metadata go in ``#`` comment lines at the top and in ``_tessera_*`` data
  items, which pymatgen's ``CifParser`` reads back (``CifParser(...).as_dict()``) and other CIF readers
  ignore.
- extxyz: one multi-frame file; the metadata in each frame's info (the comment line); positions wrapped.
- csv: one table of numbers (no structures), with a ``stability`` column.
- json: one file, a list of {stored fields..., "stability", "stability_levels", "tessera": metadata,
  "candidate": full record}.
- vasp: inputs from pymatgen's ``MPRelaxSet`` (Materials Project relaxation settings: INCAR, KPOINTS,
  POSCAR, whose first line, the comment, carries the metadata). A POTCAR cannot be written here: POTCAR
  files are licensed by VASP and not shipped, so each candidate folder gets ``POTCAR.spec`` listing the
  PBE POTCAR symbols MPRelaxSet asks for, one per line in POSCAR order. Assemble the POTCAR from your own
  VASP distribution (e.g. ``cat`` the files named).
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from tessera.store.schema import StoredCandidate
from tessera.tools.errors import InputError
from tessera.tools.measures import STABLE_E_HULL, is_on_hull, is_stable

if TYPE_CHECKING:
    from pymatgen.core import Structure

ExportFormat = Literal["cif", "extxyz", "csv", "json", "vasp"]
EXPORT_FORMATS: tuple[str, ...] = ("cif", "extxyz", "csv", "json", "vasp")

SYMPREC: float = 0.1
"""A, spglib's distance tolerance for the symmetrised CIF (the analyze stage's; tools.analyze.SYMPREC)."""
ANGLE_TOLERANCE: float = 5.0
"""degrees, spglib's angle tolerance (tools.analyze.ANGLE_TOLERANCE)."""

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


# ---------------------------------------------------------------------------------------------- metadata


def stability_levels(c: StoredCandidate) -> list[str]:
    """The stability levels a candidate reached, weakest first: ``stable`` (E_hull <= 0.1 eV/atom, CHGNet
    against the reference hull), ``on_hull`` (E_hull <= 0), ``confirmed`` (a second potential also puts it
    within 0.1 eV/atom). Empty when it reached none or was never placed on the hull."""
    levels = []
    if is_stable(c.e_hull, threshold=STABLE_E_HULL):
        levels.append("stable")
    if is_on_hull(c.e_hull):
        levels.append("on_hull")
    if c.confirmed:
        levels.append("confirmed")
    return levels


def stability_label(c: StoredCandidate) -> str:
    """One phrase for the levels: e.g. ``stable at 0.1 eV/atom, on or below the hull, confirmed``,
    ``unstable`` (placed on the hull, above 0.1 eV/atom) or ``not judged`` (no E_hull)."""
    if c.e_hull is None:
        return "not judged"
    words = {"stable": f"stable at {STABLE_E_HULL:g} eV/atom", "on_hull": "on or below the hull",
             "confirmed": "confirmed"}
    levels = stability_levels(c)
    return ", ".join(words[x] for x in levels) if levels else f"unstable (E_hull > {STABLE_E_HULL:g} eV/atom)"


def export_metadata(c: StoredCandidate) -> dict[str, Any]:
    """What every export carries about a candidate, in a fixed order; unknown values are left out.

    Keys: candidate_id, run_id, formula, spacegroup, spacegroup_number (as stored), e_hull (eV/atom,
    CHGNet against the reference hull), e_hull_confirm (eV/atom, second judge), energy_per_atom (eV/atom,
    CHGNet, raw), stability (:func:`stability_label`), stable_threshold (eV/atom), stable, on_hull,
    confirmed, unique, novel, novel_prototype, plausible, review_status, and provenance: checkpoint,
    checkpoint_hash, seed, spec_hash, sample_run, code_version, content_hash.
    """
    prov: dict[str, Any] = {}
    if c.candidate_json is not None:
        try:
            prov = dict(c.candidate().provenance)
        except (InputError, ValueError):
            prov = {}
    levels = stability_levels(c)
    judged = c.e_hull is not None
    meta: dict[str, Any] = {
        "candidate_id": c.id,
        "run_id": c.run_id,
        "formula": c.formula,
        "spacegroup": c.spacegroup,
        "spacegroup_number": c.spacegroup_number,
        "e_hull": c.e_hull,
        "e_hull_confirm": c.e_hull_confirm,
        "energy_per_atom": c.energy_per_atom,
        "stability": stability_label(c),
        "stable_threshold": STABLE_E_HULL,
        "stable": ("stable" in levels) if judged else None,
        "on_hull": ("on_hull" in levels) if judged else None,
        "confirmed": c.confirmed,
        "unique": c.unique,
        "novel": c.novel,
        "novel_prototype": c.novel_prototype,
        "plausible": c.plausible,
        "review_status": c.review_status,
        "checkpoint": prov.get("checkpoint"),
        "checkpoint_hash": c.checkpoint_hash or prov.get("checkpoint_hash"),
        "seed": c.seed if c.seed is not None else prov.get("seed"),
        "spec_hash": c.spec_hash or prov.get("spec_hash"),
        "sample_run": prov.get("sample_run"),
        "code_version": c.code_version,
        "content_hash": c.content_hash,
    }
    return {k: v for k, v in meta.items() if v is not None and v != ""}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return re.sub(r"\s+", " ", str(value)).strip()


def metadata_line(meta: dict[str, Any]) -> str:
    """The metadata on one line (``key=value; ...``): POSCAR's comment line."""
    return "tessera " + "; ".join(f"{k}={_text(v)}" for k, v in meta.items())


# ---------------------------------------------------------------------------------------------- structures


def _wrapped(structure: "Structure") -> "Structure":
    """The structure with every fractional coordinate in [0, 1): a value that would print as 1.00000000
    (within 1e-8 of 1) becomes 0, and -0.0 becomes 0."""
    import numpy as np
    from pymatgen.core import Structure

    frac = np.mod(structure.frac_coords, 1.0)
    frac[frac > 1.0 - 1e-8] = 0.0
    frac = frac + 0.0  # -0.0 -> 0.0
    return Structure(structure.lattice, structure.species_and_occu, frac,
                     site_properties=structure.site_properties or None)


WRITE_SYMPREC: float = 1e-3
"""A: the tolerance at which the refined (exactly symmetric) cell is analysed again to write its operations.
Analysing it at the loose ``symprec`` again can find a supergroup whose operations, applied by a reader,
put near-duplicate atoms 0.01 A apart."""


def _symmetric_writer(structure: "Structure", *, symprec: float, angle_tolerance: float) -> tuple[Any, str, int]:
    """A CifWriter of spglib's refined cell, its space group symbol and number. Raises ValueError when
    spglib fails or the CIF would not read back to the refined cell's atoms."""
    from pymatgen.io.cif import CifParser, CifWriter
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refined = _wrapped(SpacegroupAnalyzer(structure, symprec=symprec,
                                              angle_tolerance=angle_tolerance).get_refined_structure())
        exact = SpacegroupAnalyzer(refined, symprec=WRITE_SYMPREC, angle_tolerance=angle_tolerance)
        symbol, number = exact.get_space_group_symbol(), int(exact.get_space_group_number())
        writer = CifWriter(refined, symprec=WRITE_SYMPREC, angle_tolerance=angle_tolerance, refine_struct=False)
        back = CifParser.from_str(str(writer)).parse_structures(primitive=False)
    if len(back) != 1 or back[0].composition != refined.composition:
        raise ValueError(f"the symmetrised CIF reads back as {back[0].composition if back else 'nothing'}, "
                         f"not {refined.composition}")
    return writer, symbol, number


class SymmetrizedCif(BaseModel):
    """A CIF written by :func:`symmetrized_cif` and what spglib said."""

    text: str
    spacegroup: str = "P1"
    spacegroup_number: int = 1
    symprec: float | None = None
    note: str | None = None


def symmetrized_cif(structure: "Structure", *, symprec: float = SYMPREC, angle_tolerance: float = ANGLE_TOLERANCE,
                    metadata: dict[str, Any] | None = None) -> SymmetrizedCif:
    """A symmetrised CIF of ``structure``: spglib's refined standard cell, its symmetry operations and the
    asymmetric unit, all fractional coordinates in [0, 1). Tries ``symprec`` (A), then ``symprec / 10``;
    when spglib finds no symmetry at either, the cell is written as given (wrapped) in P1 and ``note`` says
    so. ``metadata`` (key -> value) goes in ``#`` comment lines at the top and as ``_tessera_<key>``
    data items (and the P1 note as ``_tessera_symmetry_note``)."""
    from pymatgen.io.cif import CifWriter

    meta = dict(metadata or {})
    result: SymmetrizedCif | None = None
    writer = None
    last: Exception | None = None
    for prec in (symprec, symprec / 10.0):
        try:
            writer, symbol, number = _symmetric_writer(structure, symprec=prec, angle_tolerance=angle_tolerance)
            result = SymmetrizedCif(text="", spacegroup=symbol, spacegroup_number=number, symprec=prec)
            break
        except (ValueError, TypeError, RuntimeError) as exc:  # spglib signals failure with these
            last = exc
    if writer is None or result is None:
        note = (f"spglib found no symmetry at symprec {symprec:g} or {symprec / 10:g} A ({last}); "
                "written as stored, in P1")
        writer = CifWriter(_wrapped(structure))
        result = SymmetrizedCif(text="", note=note)
    # The space group items name the symmetry the file is written in; the stored one, when it differs
    # (another tolerance, or spglib failed here), is kept beside it.
    stored = (meta.get("spacegroup"), meta.get("spacegroup_number"))
    written = {"spacegroup": result.spacegroup, "spacegroup_number": result.spacegroup_number,
               "symprec": result.symprec, "symmetry_note": result.note}
    if stored != (None, None) and stored != (result.spacegroup, result.spacegroup_number):
        written.update({"spacegroup_stored": stored[0], "spacegroup_number_stored": stored[1]})
    at = list(meta).index("spacegroup") if "spacegroup" in meta else len(meta)
    rest = [(k, v) for k, v in meta.items() if k not in ("spacegroup", "spacegroup_number")]
    meta = dict(rest[:at] + list(written.items()) + rest[at:])
    meta = {k: v for k, v in meta.items() if v is not None}

    # The _tessera_* items go first in the data block so a reader sees them before the cell.
    block = next(iter(writer.cif_file.data.values()))
    block.data = {**{f"_tessera_{k}": _text(v) for k, v in meta.items()}, **block.data}
    body = str(writer)
    body = "\n".join(line for line in body.splitlines() if line != "# generated using pymatgen")
    width = max((len(k) for k in meta), default=0)
    comments = ["# Tessera candidate export (pymatgen CifWriter, spglib symmetry)"]
    comments += [f"# {k:<{width}}  {_text(v)}" for k, v in meta.items()]
    result.text = "\n".join(comments) + "\n" + body.lstrip("\n") + ("" if body.endswith("\n") else "\n")
    return result


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)


def _stem(c: StoredCandidate) -> str:
    return _safe(f"{c.id}_{c.formula or 'unknown'}")


def _structure_or_skip(c: StoredCandidate, skipped: list[str]) -> "Structure | None":
    try:
        return c.structure()
    except (InputError, ValueError) as exc:
        skipped.append(f"{c.id}: {exc}")
        return None


# ---------------------------------------------------------------------------------------------- export


def export_candidates(candidates: list[StoredCandidate], *, fmt: str, out: Path,
                      symprec: float = SYMPREC) -> ExportResult:
    """Write candidates (fetched ``with_record=True``) to ``out``; see the module docstring per format.

    cif: a directory with ``<id>_<formula>.cif`` per candidate. extxyz, csv, json: one file. vasp: a
    directory per candidate. A candidate without a readable structure is skipped (and named in
    ``skipped``) for the structure formats. ``symprec`` (A) is spglib's tolerance for the CIFs.

    Raises:
        InputError: an unknown format, or ``out`` is a directory where a file is written (or vice versa).
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    paths: list[str] = []
    skipped: list[str] = []
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
            writer = csv.DictWriter(fh, fieldnames=_CSV_COLUMNS + ["stability", "elements"])
            writer.writeheader()
            for c in candidates:
                row = c.model_dump(mode="json", include=set(_CSV_COLUMNS))
                row["stability"] = stability_label(c)
                row["elements"] = " ".join(c.elements)
                writer.writerow(row)
        paths.append(str(out))
        return ExportResult(format=fmt, out=str(out), n_written=len(candidates), paths=paths)

    if fmt == "json":
        payload = [
            {**c.model_dump(mode="json"), "stability": stability_label(c), "stability_levels": stability_levels(c),
             "tessera": export_metadata(c),
             "candidate": c.candidate().model_dump(mode="json") if c.candidate_json else None}
            for c in candidates
        ]
        out.write_text(json.dumps(payload, indent=1) + "\n")
        return ExportResult(format=fmt, out=str(out), n_written=len(candidates), paths=[str(out)])

    if fmt == "extxyz":
        from ase.io import write as ase_write
        from pymatgen.io.ase import AseAtomsAdaptor

        frames = []
        for c in candidates:
            structure = _structure_or_skip(c, skipped)
            if structure is None:
                continue
            atoms = AseAtomsAdaptor.get_atoms(_wrapped(structure))
            info = {k: v for k, v in c.model_dump(mode="json", include=set(_CSV_COLUMNS)).items() if v is not None}
            info.update(export_metadata(c))
            atoms.info = info
            frames.append(atoms)
        ase_write(str(out), frames, format="extxyz")
        return ExportResult(format=fmt, out=str(out), n_written=len(frames), paths=[str(out)], skipped=skipped)

    if fmt == "cif":
        p1: list[str] = []
        for c in candidates:
            structure = _structure_or_skip(c, skipped)
            if structure is None:
                continue
            written = symmetrized_cif(structure, symprec=symprec, metadata=export_metadata(c))
            if written.note:
                p1.append(c.id)
            path = out / f"{_stem(c)}.cif"
            path.write_text(written.text)
            paths.append(str(path))
        note = (f"spglib found no symmetry for {', '.join(p1)}: written in P1 as stored (see _tessera_symmetry_note)"
                if p1 else None)
        return ExportResult(format=fmt, out=str(out), n_written=len(paths), paths=paths, skipped=skipped, note=note)

    # vasp
    from pymatgen.io.vasp.inputs import Poscar
    from pymatgen.io.vasp.sets import MPRelaxSet

    for c in candidates:
        structure = _structure_or_skip(c, skipped)
        if structure is None:
            continue
        with warnings.catch_warnings():
            # MPRelaxSet warns that POTCARs are unavailable; that is exactly why POTCAR.spec is written.
            warnings.simplefilter("ignore")
            try:
                vis = MPRelaxSet(_wrapped(structure))
                incar, kpoints, poscar = vis.incar, vis.kpoints, vis.poscar  # KPOINTS needs spglib
                symbols = list(vis.potcar_symbols)
            except (ValueError, TypeError, KeyError) as exc:
                skipped.append(f"{c.id}: MPRelaxSet cannot set it up ({type(exc).__name__}: {exc})")
                continue
        folder = out / _stem(c)
        folder.mkdir(parents=True, exist_ok=True)
        incar.write_file(folder / "INCAR")
        kpoints.write_file(folder / "KPOINTS")
        Poscar(poscar.structure, comment=metadata_line(export_metadata(c))).write_file(folder / "POSCAR")
        (folder / "POTCAR.spec").write_text("\n".join(symbols) + "\n")
        paths.append(str(folder))
    note = (
        "POTCAR not written (VASP-licensed, not shipped): each folder has POTCAR.spec naming the PBE POTCARs "
        "MPRelaxSet uses, in POSCAR order"
    )
    return ExportResult(format=fmt, out=str(out), n_written=len(paths), paths=paths, skipped=skipped, note=note)
