"""Exports carry a symmetrised, wrapped structure and the candidate's metadata (id, E_hull, stability level,
run, provenance) in every format that can hold them, on a real temporary store."""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser
from pymatgen.io.vasp.inputs import Poscar

from tessera.store import Store, StoredCandidate
from tessera.store.export import export_candidates, export_metadata, stability_label, stability_levels
from tessera.tools.candidate import Candidate
from tests.store.conftest import rocksalt

PROVENANCE = {"checkpoint_hash": "c0ffee1234", "seed": 11, "spec_hash": "5bec0123"}
LINEAGE = {"checkpoint": "generator.pt", "sample_run": "sample-20260101-000000-abcdef"}  # as tessera sample records it


def _shifted(s: Structure, shift: tuple[float, float, float]) -> Structure:
    """The same crystal with every fractional coordinate moved by ``shift`` and NOT wrapped (some < 0, > 1)."""
    return Structure(s.lattice, s.species, s.frac_coords + np.array(shift), coords_are_cartesian=False)


def _candidate(cid: str, structure: Structure, *, e_hull: float | None, confirmed: bool | None = None) -> Candidate:
    c = Candidate.from_structure(structure, source="test")
    c.id = cid
    c.cif = structure.to(fmt="cif")  # the stored final structure, coordinates outside [0, 1) included
    c.relaxed = e_hull is not None
    c.energy_per_atom = -4.2 if e_hull is not None else None
    c.e_hull = e_hull
    c.stable = None if e_hull is None else e_hull <= 0.1
    if confirmed is not None:
        c.e_hull_confirm, c.confirmed = (0.05 if confirmed else 0.3), confirmed
    c.unique, c.novel = True, True
    c.provenance.update(LINEAGE)
    return c


def _lowsym() -> Structure:
    """A triclinic-ish distortion of rock salt: spglib finds a low but non-trivial group."""
    s = rocksalt(5.5, ("Mg", "O"))
    s = Structure(Lattice.from_parameters(5.5, 5.6, 5.8, 88.0, 91.0, 90.0), s.species, s.frac_coords)
    s.perturb(0.02, min_distance=0.01)
    return s


@pytest.fixture()
def stored(store: Store) -> tuple[Store, str, dict[str, Structure]]:
    structures = {
        "rs": _shifted(rocksalt(5.64), (0.3, 1.7, -0.2)),
        "low": _shifted(_lowsym(), (-0.45, 0.9, 2.1)),
        # Two Cl atoms 0.0008 A apart: spglib gives up at every tolerance, so the CIF falls back to P1.
        "p1": Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 1.5002]]),
    }
    cands = [
        _candidate("rs", structures["rs"], e_hull=-0.01, confirmed=True),
        _candidate("low", structures["low"], e_hull=0.25),
        _candidate("p1", structures["p1"], e_hull=None),
    ]
    with store.start_run("evaluate", {"n": 3}, seed=11, checkpoint_hash="c0ffee1234") as run:
        run.add_candidates(cands, provenance=PROVENANCE)
    return store, run.run_id, structures


def _rows(store: Store, run_id: str) -> dict[str, StoredCandidate]:
    return {r.id: r for r in store.search(run_id=run_id, limit=None, with_record=True)}


def _atom_site_fracts(text: str) -> np.ndarray:
    """The _atom_site_fract_x/y/z columns exactly as written in the file."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "_atom_site_type_symbol") - 1
    header = []
    i = start + 1
    while lines[i].strip().startswith("_"):
        header.append(lines[i].strip())
        i += 1
    cols = [header.index(f"_atom_site_fract_{a}") for a in "xyz"]
    rows = []
    while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(("_", "loop_")):
        parts = lines[i].split()
        rows.append([float(parts[c]) for c in cols])
        i += 1
    return np.array(rows)


def _parse(path: Path) -> tuple[Structure, dict[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parser = CifParser(path)
        structure = parser.parse_structures(primitive=False)[0]
        block = next(iter(parser.as_dict().values()))
    return structure, {k: v for k, v in block.items() if k.startswith("_tessera_")}


def test_cif_is_symmetrised_wrapped_and_carries_metadata(stored, tmp_path: Path) -> None:  # noqa: ANN001
    store, run_id, structures = stored
    rows = _rows(store, run_id)
    result = export_candidates(list(rows.values()), fmt="cif", out=tmp_path / "cif")
    assert result.n_written == 3 and not result.skipped
    paths = {Path(p).name.split("_")[0]: Path(p) for p in result.paths}
    matcher = StructureMatcher()

    for cid, path in paths.items():
        text = path.read_text()
        reread, meta = _parse(path)
        # Matches the stored structure; every coordinate in the file and in the parsed cell is in [0, 1).
        assert matcher.fit(reread, rows[cid].structure()), cid
        assert matcher.fit(reread, structures[cid]), cid
        fracts = _atom_site_fracts(text)
        assert fracts.size and (fracts >= 0).all() and (fracts < 1).all(), (cid, fracts)
        assert (reread.frac_coords >= 0).all() and (reread.frac_coords < 1).all()
        # Metadata: comment lines a person reads and _tessera_* items CifParser reads.
        assert text.startswith("# Tessera candidate export")
        assert f"# candidate_id" in text and re.search(rf"^# run_id\s+{run_id}$", text, re.M)
        assert meta["_tessera_candidate_id"] == cid and meta["_tessera_run_id"] == run_id
        assert meta["_tessera_formula"] == rows[cid].formula
        assert meta["_tessera_checkpoint_hash"] == "c0ffee1234" and meta["_tessera_seed"] == "11"
        assert meta["_tessera_spec_hash"] == "5bec0123" and meta["_tessera_checkpoint"] == "generator.pt"
        assert meta["_tessera_sample_run"] == LINEAGE["sample_run"]
        assert meta["_tessera_stability"] == stability_label(rows[cid])

    rs = _parse(paths["rs"])[1]
    assert (rs["_tessera_spacegroup"], rs["_tessera_spacegroup_number"]) == ("Fm-3m", "225")  # not P1
    assert "_symmetry_space_group_name_H-M   Fm-3m" in paths["rs"].read_text()
    assert len(_atom_site_fracts(paths["rs"].read_text())) == 2  # the asymmetric unit: one Na, one Cl
    assert float(rs["_tessera_e_hull"]) == pytest.approx(-0.01)
    assert rs["_tessera_stability"] == "stable at 0.1 eV/atom, on or below the hull, confirmed"
    assert rs["_tessera_stable"] == "yes" and rs["_tessera_on_hull"] == "yes" and rs["_tessera_confirmed"] == "yes"

    low = _parse(paths["low"])[1]
    assert low["_tessera_spacegroup"] != "P1" and low["_tessera_stability"].startswith("unstable")
    assert low["_tessera_stable"] == "no"

    p1_text = paths["p1"].read_text()
    p1 = _parse(paths["p1"])[1]
    assert p1["_tessera_spacegroup"] == "P1" and "no symmetry" in p1["_tessera_symmetry_note"]
    assert p1["_tessera_stability"] == "not judged" and "_tessera_e_hull" not in p1
    assert "_symmetry_space_group_name_H-M   'P 1'" in p1_text or "P1" in p1_text
    assert result.note is not None and "p1" in result.note


def test_stability_levels(stored) -> None:  # noqa: ANN001
    store, run_id, _ = stored
    rows = _rows(store, run_id)
    assert stability_levels(rows["rs"]) == ["stable", "on_hull", "confirmed"]
    assert stability_levels(rows["low"]) == [] and stability_levels(rows["p1"]) == []
    assert stability_label(rows["p1"]) == "not judged"
    meta = export_metadata(rows["rs"])
    assert list(meta)[:3] == ["candidate_id", "run_id", "formula"]
    assert meta["e_hull_confirm"] == pytest.approx(0.05) and meta["confirmed"] is True


def test_other_formats_carry_metadata(stored, tmp_path: Path) -> None:  # noqa: ANN001
    store, run_id, structures = stored
    rows = list(_rows(store, run_id).values())

    vasp = export_candidates(rows, fmt="vasp", out=tmp_path / "vasp")
    # spglib cannot classify the degenerate cell, so MPRelaxSet cannot choose its k-points: skipped, named.
    assert vasp.n_written == 2 and len(vasp.skipped) == 1 and vasp.skipped[0].startswith("p1: ")
    poscar_path = next(p for p in (tmp_path / "vasp").iterdir() if p.name.startswith("rs_")) / "POSCAR"
    poscar = Poscar.from_file(poscar_path)
    assert poscar.comment.startswith("tessera candidate_id=rs; ")
    for piece in (f"run_id={run_id}", "e_hull=-0.01", "confirmed=yes", "checkpoint_hash=c0ffee1234", "seed=11",
                  "spec_hash=5bec0123", "stability=stable at 0.1 eV/atom, on or below the hull, confirmed"):
        assert piece in poscar.comment
    assert StructureMatcher().fit(poscar.structure, structures["rs"])
    assert (poscar.structure.frac_coords >= 0).all() and (poscar.structure.frac_coords < 1).all()

    from ase.io import read

    export_candidates(rows, fmt="extxyz", out=tmp_path / "x.xyz")
    frames = {f.info["candidate_id"]: f for f in read(str(tmp_path / "x.xyz"), index=":")}
    assert set(frames) == {"rs", "low", "p1"}
    info = frames["rs"].info
    assert info["run_id"] == run_id and info["checkpoint_hash"] == "c0ffee1234" and info["seed"] == 11
    assert info["stability"] == "stable at 0.1 eV/atom, on or below the hull, confirmed"
    assert info["e_hull"] == pytest.approx(-0.01)
    scaled = frames["low"].get_scaled_positions(wrap=False)
    assert (scaled >= 0).all() and (scaled < 1).all()

    export_candidates(rows, fmt="json", out=tmp_path / "x.json")
    by_id = {d["id"]: d for d in json.loads((tmp_path / "x.json").read_text())}
    assert by_id["rs"]["stability_levels"] == ["stable", "on_hull", "confirmed"]
    assert by_id["rs"]["tessera"]["spec_hash"] == "5bec0123" and by_id["rs"]["tessera"]["run_id"] == run_id
    assert by_id["p1"]["stability"] == "not judged"

    export_candidates(rows, fmt="csv", out=tmp_path / "x.csv")
    with (tmp_path / "x.csv").open() as fh:
        table = {r["id"]: r for r in csv.DictReader(fh)}
    assert table["low"]["stability"].startswith("unstable") and table["rs"]["seed"] == "11"
