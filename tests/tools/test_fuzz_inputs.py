"""Fuzz: one bad file never ends a batch (issue 19).

Several hundred damaged files are generated at test time from the good ones in tests/data/mixed_batch
(tests/data/fuzz_inputs.py) and mixed with good files in one folder. Read directly, every recognised file
gives its own record and every damaged one an error naming it, fast and without a warning on the console;
through the installed ``tessera evaluate`` the run exits 0, writes one record per structure, evaluates every
good file end to end and prints no traceback. The three inputs that once killed a batch are among the cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from tests.data.fuzz_inputs import ISSUE_CASES, Expect, write_fuzz_folder
from tessera.tools import io
from tessera.tools.io import MAX_ATOMS, ReadItem, physical_problem, read_structures, sanity_problem
from tessera.tools.isolation import attempt, describe

TESSERA = str(Path(sys.executable).with_name("tessera"))


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Expect]]:
    folder = tmp_path_factory.mktemp("fuzz") / "inputs"
    return folder, write_fuzz_folder(folder, max_atoms=MAX_ATOMS)


def _by_file(items: list[ReadItem] | list[dict], folder: Path) -> dict[str, list]:
    """Records grouped by the file they came from (``file#k`` -> ``file``)."""
    out: dict[str, list] = defaultdict(list)
    for it in items:
        source = it.source if isinstance(it, ReadItem) else it["source"]
        out[Path(source.split("#")[0]).relative_to(folder).as_posix()].append(it)
    return out


def test_the_fuzz_folder_covers_every_format_and_the_issue_cases(fuzz_folder: tuple[Path, dict[str, Expect]]) -> None:
    _, expect = fuzz_folder
    counts = Counter(expect.values())
    assert counts["error"] >= 200 and counts["ok"] >= 5 and counts["skip"] >= 3
    bad_suffixes = Counter(io.detect_format(Path(n)) for n, e in expect.items() if e == "error")
    assert all(bad_suffixes[fmt] >= 30 for fmt in io.FORMATS), bad_suffixes
    assert set(ISSUE_CASES) <= {n for n, e in expect.items() if e == "error"}


def test_read_structures_gives_every_file_its_record_and_every_bad_one_an_error(
    fuzz_folder: tuple[Path, dict[str, Expect]],
) -> None:
    folder, expect = fuzz_folder
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak to the console: warnings are kept per item
        result = read_structures(folder)
    seconds = time.perf_counter() - t0
    assert seconds < 60, f"reading the fuzz folder took {seconds:.0f} s: a bound is missing"
    by_file = _by_file(result.items, folder)
    recognised = {n for n, e in expect.items() if e != "skip"}
    assert set(by_file) == recognised
    assert sorted(Path(p).name for p in result.skipped) == sorted(n for n, e in expect.items() if e == "skip")
    assert result.n_skipped == 3
    for name, items in by_file.items():
        for it in items:
            assert (it.structure is None) == (it.error is not None)
            if it.error is not None:
                assert it.error.startswith(it.source + ": ") and "\n" not in it.error and "Traceback" not in it.error
        if expect[name] == "error":
            assert all(it.error for it in items), (name, [it.error for it in items])
        elif expect[name] == "ok":
            assert all(it.ok for it in items), (name, [it.error for it in items])
    good = {n for n, e in expect.items() if e == "ok"}
    assert {s.composition.reduced_formula for n in good for it in by_file[n] for s in [it.structure]} == {
        "LaRh", "SrGeO3", "CdCo3N"}


def test_the_three_batch_killers_of_issue_19_are_clear_errors(fuzz_folder: tuple[Path, dict[str, Expect]]) -> None:
    folder, _ = fuzz_folder
    errors = {Path(it.source).name: it.error for it in read_structures([folder / n for n in ISSUE_CASES]).items}
    # c = 1e9 A: refused by the length bound before the neighbour search could ask for 150 GB
    assert "cell length c = 1e+09 A: longer than the limit of 500 A" in errors["cif_c_1e9.cif"]
    # a frame with fewer atoms than its header: ase's XYZError, named, on this file only
    assert "cannot parse extxyz: XYZError" in errors["xyz_header_more_atoms.extxyz"]
    assert "expected 6" in errors["xyz_header_more_atoms.extxyz"]
    # a CIF cut inside loop_: pymatgen's ZeroDivisionError, named, on this file only
    assert "cannot parse CIF: ZeroDivisionError" in errors["cif_truncated_in_loop.cif"]


def test_pymatgen_naming_conventions_are_read_and_others_counted_as_skipped(tmp_path: Path, nacl: Structure) -> None:
    from tessera.tools.io import structure_to_str

    poscar, cif = structure_to_str(nacl, "poscar"), structure_to_str(nacl, "cif")
    names = {"Fe2O3_POSCAR": poscar, "run1.CONTCAR": poscar, "POSCAR": poscar, "CONTCAR.relax": poscar,
             "a.vasp": poscar, "b.mcif": cif, "c.CIF": cif, "d.json": json.dumps(nacl.as_dict()),
             "e.xyz": structure_to_str(nacl, "extxyz"), "notes.txt": "x", "OUTCAR": "x", "f.cif.bak": "x"}
    for name, text in names.items():
        (tmp_path / name).write_text(text)
    result = read_structures(tmp_path)
    assert sorted(Path(it.source).name for it in result.items if it.ok) == sorted(
        n for n in names if n not in ("notes.txt", "OUTCAR", "f.cif.bak"))
    assert sorted(Path(p).name for p in result.skipped) == ["OUTCAR", "f.cif.bak", "notes.txt"]


# ---------------------------------------------------------------------------------------------- the bounds


def _cell(a: float, b: float, c: float, alpha: float = 90, beta: float = 90, gamma: float = 90, n: int = 1) -> Structure:
    rng = np.random.default_rng(0)
    frac = np.vstack([[0, 0, 0], rng.random((n - 1, 3))]) if n > 1 else [[0, 0, 0]]
    return Structure(Lattice.from_parameters(a, b, c, alpha, beta, gamma), ["Na"] * n, frac)


@pytest.mark.parametrize(
    ("structure", "problem"),
    [
        (_cell(4, 4, io.MAX_CELL_LENGTH_A * 1.01), "longer than the limit"),
        (_cell(4, 4, 0.4), "its own periodic image"),
        (_cell(4, 4, 4, gamma=io.MIN_CELL_ANGLE_DEG * 0.9), "cell angle gamma"),
        (_cell(4, 4, 4, beta=io.MAX_CELL_ANGLE_DEG + 1), "cell angle beta"),
        (_cell(30, 30, 30), "volume per atom 2.7e+04"),  # one atom in 27,000 A^3
        (_cell(2.0, 2.0, 2.0, n=16), "below the limit"),  # 0.5 A^3 per atom
    ],
)
def test_each_sanity_bound_refuses_before_the_neighbour_search(structure: Structure, problem: str) -> None:
    assert problem in (sanity_problem(structure) or "")
    assert problem in (physical_problem(structure) or "")


def test_bounds_admit_every_kind_of_cell_in_the_pool() -> None:
    """Just inside each bound passes (the limits are not tighter than stated), and so does a real crystal."""
    assert sanity_problem(_cell(4, 4, io.MAX_CELL_LENGTH_A * 0.99, n=60)) is None
    assert sanity_problem(_cell(6, 6, 6, 60, 60, io.MIN_CELL_ANGLE_DEG * 1.5 + 5)) is None
    nacl = Structure(Lattice.from_parameters(4.02, 4.02, 4.02, 60, 60, 60), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])
    assert physical_problem(nacl) is None


def test_too_many_atoms_is_refused_without_the_neighbour_search() -> None:
    big = _cell(4, 4, 4) * (8, 8, 8)  # 512 Na atoms, 4 A apart
    assert len(big) > MAX_ATOMS
    t0 = time.perf_counter()
    assert f"more than the limit of {MAX_ATOMS}" in (physical_problem(big) or "")
    assert time.perf_counter() - t0 < 1.0


def test_a_skewed_cell_is_checked_on_its_reduced_cell_fast() -> None:
    """A valid lattice written with a needle-thin cell: the LLL-reduced search finds the overlap quickly."""
    s = Structure(Lattice([[10, 0, 0], [0, 10, 0], [3.3, 3.3, 0.12]]), ["Na"], [[0, 0, 0]])
    t0 = time.perf_counter()
    problem = physical_problem(s)
    assert time.perf_counter() - t0 < 2.0
    assert "lattice vector of 0.387 A" in (problem or "") and "own periodic image" in (problem or "")


# ---------------------------------------------------------------------------------------------- isolation


def test_attempt_turns_any_exception_into_one_named_line() -> None:
    def raise_(exc: BaseException) -> None:
        raise exc

    for exc, line in [(ZeroDivisionError("integer modulo by zero"), "ZeroDivisionError: integer modulo by zero"),
                      (MemoryError(), "MemoryError"),
                      (OSError("Frame has 5 atoms,\n expected 6"), "OSError: Frame has 5 atoms, expected 6")]:
        res = attempt(raise_, exc)
        assert not res.ok and res.value is None and res.error == line
    assert attempt(lambda x: x + 1, 1).value == 2
    with pytest.raises(KeyboardInterrupt):  # a person stopping the run is not an item's failure
        attempt(raise_, KeyboardInterrupt())
    assert len(describe(ValueError("x" * 5000))) <= 300


# ---------------------------------------------------------------------------------------------- end to end


def test_tessera_evaluate_survives_the_fuzz_folder(fuzz_folder: tuple[Path, dict[str, Expect]], tmp_path: Path) -> None:
    folder, expect = fuzz_folder
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESSERA_STORE": str(tmp_path / "store")}
    proc = subprocess.run(
        [TESSERA, "evaluate", str(folder), "--out", str(out), "--no-store", "--workers", "0", "--steps", "20",
         "--json"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["n_skipped"] == sum(e == "skip" for e in expect.values())  # README.txt, plot.png, run.log
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert (out / "summary.json").exists()
    by_file = _by_file(rows, folder)
    assert set(by_file) == {n for n, e in expect.items() if e != "skip"}  # one record per recognised file
    assert summary["n_inputs"] == len(rows)
    for name, recs in by_file.items():
        if expect[name] == "error":
            for r in recs:
                assert r["error"] and Path(r["source"]).name in r["error"] and not r["relaxed"], (name, r["error"])
        elif expect[name] == "ok":
            for r in recs:  # evaluated end to end: relaxed, placed on the hull, analysed
                assert r["error"] is None, (name, r["error"])
                assert r["relaxed"] and r["e_hull"] is not None and r["spacegroup"], name
    n_bad = sum(e == "error" for e in expect.values())
    assert summary["n_errors"] >= n_bad
    assert summary["n_relaxed"] >= sum(e == "ok" for e in expect.values())
