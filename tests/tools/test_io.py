"""Reading and writing structures: good files load, each bad one gets one line naming the file and the problem."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from tests.conftest import rattled
from tessera.tools.errors import InputError
from tessera.tools.io import (
    FORMATS,
    min_periodic_distance,
    physical_problem,
    read_structure,
    read_structures,
    structure_to_str,
    write_structures,
)


def test_mixed_folder_loads_good_and_names_each_bad_file(mixed_batch_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak to the console: warnings are kept per item
        result = read_structures([mixed_batch_dir])
    by_name = {Path(it.source).name: it for it in result.items}
    assert len(result.items) == 6
    good = {"mp-1002107_LaRh.cif", "mp-1016999_SrGeO3.vasp", "mp-1017553_CdCo3N.extxyz"}
    for name in good:
        assert by_name[name].ok and by_name[name].structure is not None
    assert {s.composition.reduced_formula for s in result.structures} == {"LaRh", "SrGeO3", "CdCo3N"}
    expected = {"empty.cif": "empty file", "malformed.cif": "cannot parse CIF", "overlapping.cif": "overlapping atoms"}
    for name, problem in expected.items():
        err = by_name[name].error
        assert err is not None and by_name[name].structure is None
        assert name in err and problem in err
        assert "\n" not in err
    assert "'four'" in by_name["malformed.cif"].error  # the cause, not just "invalid"
    assert len(result.errors) == 3


def test_unknown_element_zero_volume_and_missing_file(tmp_path: Path) -> None:
    good = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cif = structure_to_str(good, "cif")
    (tmp_path / "unknown.cif").write_text(cif.replace("Na", "Xq"))
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 0.0001]]), ["Na"], [[0, 0, 0]])
    (tmp_path / "flat.json").write_text(json.dumps(flat.as_dict()))
    (tmp_path / "notes.txt").write_text("not a structure")
    result = read_structures([tmp_path, tmp_path / "missing.cif"])
    errors = {Path(it.source).name: it.error for it in result.items}
    assert "unknown element 'Xq'" in errors["unknown.cif"]
    assert "zero-volume cell" in errors["flat.json"]
    assert "no such file" in errors["missing.cif"]
    assert [Path(p).name for p in result.skipped] == ["notes.txt"]
    with pytest.raises(InputError, match="unknown.cif: unknown element"):
        read_structure(tmp_path / "unknown.cif")


def test_several_structures_per_file_are_named_file_hash_index(tmp_path: Path, nacl: Structure) -> None:
    cu = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    bad = cu.copy()
    bad.replace(3, "Cu", [0.05, 0.0, 0.0])
    (tmp_path / "three.cif").write_text("\n".join(structure_to_str(s, "cif") for s in (nacl, bad, cu)))
    (tmp_path / "two.extxyz").write_text(structure_to_str(nacl, "extxyz") + structure_to_str(cu, "extxyz"))
    result = read_structures([tmp_path / "three.cif", tmp_path / "two.extxyz"])
    names = [Path(it.source).name for it in result.items]
    assert names == ["three.cif#0", "three.cif#1", "three.cif#2", "two.extxyz#0", "two.extxyz#1"]
    assert [it.ok for it in result.items] == [True, False, True, True, True]
    assert result.items[1].error.startswith(str(tmp_path / "three.cif#1") + ": overlapping atoms")


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_then_read_round_trips(tmp_path: Path, fmt: str, si: Structure, nacl: Structure) -> None:
    structures = [rattled(si, seed=1), nacl]
    paths = write_structures(structures, tmp_path / fmt, fmt)  # type: ignore[arg-type]
    back = read_structures(paths)
    assert not back.errors
    for a, b in zip(structures, back.structures):
        assert [str(x) for x in a.species] == [str(x) for x in b.species]
        np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-5)
        # compare Cartesian positions modulo the lattice (writers may wrap coordinates)
        df = (a.frac_coords - b.frac_coords + 0.5) % 1.0 - 0.5
        assert np.abs(df @ a.lattice.matrix).max() < 1e-4


def test_min_periodic_distance_sees_own_image_and_is_invariant(nacl: Structure) -> None:
    d, _, _ = min_periodic_distance(nacl)
    assert d == pytest.approx(4.02 * 2**0.5 / 2, rel=1e-6)  # Na-Cl = half the conventional edge
    shifted = nacl.copy()
    shifted.translate_sites(list(range(len(shifted))), [0.37, 0.11, 0.9])
    assert min_periodic_distance(shifted)[0] == pytest.approx(d, abs=1e-9)
    tiny = Structure(Lattice.from_parameters(0.4, 5, 5, 90, 90, 90), ["H"], [[0, 0, 0]])
    assert min_periodic_distance(tiny)[0] == pytest.approx(0.4)
    assert "its own periodic image" in (physical_problem(tiny) or "")
