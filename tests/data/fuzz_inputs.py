"""Damaged structure files, generated at test time from the good ones in tests/data/mixed_batch.

:func:`write_fuzz_folder` writes several hundred malformed files (every format x every kind of damage:
truncation, binary noise, NaN/inf/zero/negative/huge cell values, impossible angles, unknown elements,
atom-count mismatches, overlapping atoms, non-finite coordinates, wrong JSON shapes, too many atoms) next
to good files named by every convention pymatgen reads (``*.cif``, ``*POSCAR*``, ``*CONTCAR*``, ``*.vasp``,
``*.extxyz``, ``*.json``), plus files that are not structures. It returns what each file must give:

- ``"ok"``: a good structure (it must load, and be evaluated end to end);
- ``"error"``: one error record naming the file (the damage makes it unusable);
- ``"any"``: one record, good or error (a cut that may land on a line boundary and leave a smaller but
  valid file); only "no crash, one record" is asserted;
- ``"skip"``: not a structure file by name; counted as skipped, no record.

Seeded: the same call writes the same bytes.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Callable, Literal

from pymatgen.core import Lattice, Structure

Expect = Literal["ok", "error", "any", "skip"]

HERE = Path(__file__).resolve().parent
GOOD_DIR = HERE / "mixed_batch"
GOOD_CIF = GOOD_DIR / "mp-1002107_LaRh.cif"
GOOD_POSCAR = GOOD_DIR / "mp-1016999_SrGeO3.vasp"
GOOD_EXTXYZ = GOOD_DIR / "mp-1017553_CdCo3N.extxyz"

# The three inputs that killed a whole batch before issue 19 (see tests/tools/test_fuzz_inputs.py).
ISSUE_CASES: dict[str, str] = {
    "cif_c_1e9.cif": "c = 1e9 A: the periodic neighbour search asked for 150 GB",
    "xyz_header_more_atoms.extxyz": "frame holds fewer atoms than its header says: ase's XYZError",
    "cif_truncated_in_loop.cif": "ends inside a loop_: ZeroDivisionError in pymatgen's CIF parser",
}


def _good_json_text() -> str:
    s = Structure.from_file(GOOD_POSCAR)
    return json.dumps(s.as_dict())


def _sub(pattern: str, repl: str, text: str, count: int = 1) -> str:
    out, n = re.subn(pattern, repl, text, count=count, flags=re.MULTILINE)
    if n == 0:
        raise AssertionError(f"fuzz template out of date: {pattern!r} not found")
    return out


# ---------------------------------------------------------------------------------------------- per format


def _cif_cases(text: str) -> dict[str, tuple[str | bytes, Expect]]:
    cases: dict[str, tuple[str | bytes, Expect]] = {}
    for tag in ("a", "b", "c"):
        for label, value in [("nan", "nan"), ("inf", "inf"), ("zero", "0"), ("neg", "-4.0"), ("huge", "1e9"),
                             ("tiny", "1e-9"), ("word", "four"), ("big", "5000")]:
            name = "cif_c_1e9.cif" if (tag, label) == ("c", "huge") else f"cif_len_{tag}_{label}.cif"
            cases[name] = (_sub(rf"^_cell_length_{tag}\s+\S+", f"_cell_length_{tag}   {value}", text), "error")
    for tag in ("alpha", "beta", "gamma"):
        for label, value in [("zero", "0"), ("180", "180"), ("neg", "-30"), ("over", "200"), ("nan", "nan"),
                             ("tiny", "0.001")]:
            cases[f"cif_angle_{tag}_{label}.cif"] = (
                _sub(rf"^_cell_angle_{tag}\s+\S+", f"_cell_angle_{tag}   {value}", text), "error")
    # angles each fine alone, impossible together (sum > 360 deg, or one larger than the other two summed)
    impossible = text
    for tag in ("alpha", "beta", "gamma"):
        impossible = _sub(rf"^_cell_angle_{tag}\s+\S+", f"_cell_angle_{tag}   150", impossible)
    cases["cif_angles_sum_over_360.cif"] = (impossible, "error")
    lopsided = _sub(r"^_cell_angle_alpha\s+\S+", "_cell_angle_alpha   20", text)
    lopsided = _sub(r"^_cell_angle_beta\s+\S+", "_cell_angle_beta   20", lopsided)
    lopsided = _sub(r"^_cell_angle_gamma\s+\S+", "_cell_angle_gamma   120", lopsided)
    cases["cif_angles_not_a_triangle.cif"] = (lopsided, "error")
    cases["cif_unknown_element.cif"] = (re.sub(r"\bLa\b", "Xq", text), "error")
    cases["cif_unknown_element_Zz9.cif"] = (re.sub(r"\bRh\b", "Zz", text), "error")
    # all four atoms on one spot; one atom 0.1 A from another (fractional 0.01 of 6 A)
    rows = re.findall(r"^\s+(La|Rh)\s+\S+\s+1\s+.*$", text, flags=re.MULTILINE)
    assert len(rows) == 4, "fuzz template out of date: LaRh atom rows"
    same = text
    for row in rows:
        same = same.replace(row, "  La  LaX  1  0.50000000  0.50000000  0.50000000  1")
    cases["cif_all_atoms_on_one_spot.cif"] = (same, "error")
    cases["cif_two_atoms_overlap.cif"] = (
        text.replace("0.58821300  0.41178700  0.75000000", "0.86581600  0.13918400  0.75000000"), "error")
    for k, coord in enumerate(["nan", "inf", "-inf", "1e400"]):
        cases[f"cif_coord_{k}.cif"] = (text.replace("0.86081600  0.13918400", f"{coord}  0.13918400", 1), "error")
    cases["cif_coord_word.cif"] = (text.replace("0.86081600  0.13918400", "x.y  0.13918400", 1), "error")
    cases["cif_occupancy_zero.cif"] = (re.sub(r"  1\n", "  0\n", text), "error")
    cases["cif_no_atoms.cif"] = (text.split("loop_\n _atom_site_type_symbol")[0], "error")
    cases["cif_no_cell.cif"] = (re.sub(r"^_cell_.*\n", "", text, flags=re.MULTILINE), "error")
    cases["cif_no_data_block.cif"] = (text.replace("data_LaRh", "LaRh"), "error")
    # truncations: inside the loop_ header (the issue's case), inside a number, at fractions of the file
    at_loop = text.index("loop_\n _atom_site_type_symbol")
    cases["cif_truncated_in_loop.cif"] = (text[: at_loop + len("loop_\n _atom_site_type_symbol\n _atom_site_label\n")],
                                          "error")
    cases["cif_truncated_after_loop_keyword.cif"] = (text[: at_loop + len("loop_\n")], "error")
    for k, key in enumerate(["_atom_site_fract_x", "_atom_site_fract_z", "_atom_site_occupancy\n"]):
        cases[f"cif_truncated_loop_header_{k}.cif"] = (text[: text.index(key) + len(key)], "error")
    first_row = text.index("  La  La0")
    cases["cif_truncated_mid_first_row.cif"] = (text[: first_row + 14], "error")
    for k in range(1, 10):
        cut = len(text) * k // 10
        cases[f"cif_truncated_{k}0pct.cif"] = (text[:cut], "error" if cut < first_row else "any")
    return cases


def _poscar_cases(text: str) -> dict[str, tuple[str | bytes, Expect]]:
    lines = text.splitlines()
    cases: dict[str, tuple[str | bytes, Expect]] = {}

    def with_line(i: int, new: str) -> str:
        out = list(lines)
        out[i] = new
        return "\n".join(out) + "\n"

    for label, value in [("nan", "nan"), ("inf", "inf"), ("zero", "0"), ("word", "one")]:
        cases[f"poscar_scale_{label}.vasp"] = (with_line(1, value), "error")
    for label, row in [("nan", "nan 0 0"), ("inf", "inf 0 0"), ("zero", "0 0 0"), ("huge", "1e9 0 0"),
                       ("short", "3.85 0"), ("neg_flip", "0 3.8568 0"), ("word", "a b c"), ("tiny", "1e-9 0 0"),
                       ("big", "5000 0 0")]:
        for r in (2, 4):
            cases[f"poscar_lattice_row{r}_{label}.vasp"] = (with_line(r, row), "error")
    cases["poscar_unknown_element.vasp"] = (with_line(5, "Xq Ge O"), "error")
    for label, counts in [("more", "1 1 4"), ("fewer_lines", "2 1 3"), ("zero", "0 0 0"), ("neg", "1 -1 3"),
                          ("huge", "1 1 300000000"), ("word", "one 1 3"), ("missing_species", "1 1")]:
        cases[f"poscar_counts_{label}.vasp"] = (with_line(6, counts), "error")
    cases["poscar_coord_nan.vasp"] = (with_line(8, "nan 0 0 Sr"), "error")
    cases["poscar_coord_inf.vasp"] = (with_line(9, "0.5 inf 0.5 Ge"), "error")
    cases["poscar_coord_word.vasp"] = (with_line(9, "0.5 half 0.5 Ge"), "error")
    cases["poscar_overlap.vasp"] = (with_line(9, "0.01 0.0 0.0 Ge"), "error")
    cases["poscar_all_on_one_spot.vasp"] = (
        "\n".join(lines[:8] + ["0.1 0.1 0.1"] * 5) + "\n", "error")
    cases["poscar_bad_mode.vasp"] = (with_line(7, "sideways"), "any")
    cut_coords = len("\n".join(lines[:8])) + 1
    for k in range(1, 10):
        cut = len(text) * k // 10
        cases[f"poscar_truncated_{k}0pct.vasp"] = (text[:cut], "error" if cut < cut_coords + 40 else "any")
    cases["poscar_truncated_mid_number.vasp"] = (text[: text.index("3.8568")+ 3], "error")
    return cases


def _extxyz_cases(text: str) -> dict[str, tuple[str | bytes, Expect]]:
    lines = text.splitlines()
    lattice = re.search(r'Lattice="([^"]+)"', text)
    assert lattice is not None
    cases: dict[str, tuple[str | bytes, Expect]] = {}
    cases["xyz_header_more_atoms.extxyz"] = ("6\n" + "\n".join(lines[1:]) + "\n", "error")
    cases["xyz_header_fewer_atoms.extxyz"] = ("4\n" + "\n".join(lines[1:]) + "\n", "error")
    cases["xyz_header_zero_atoms.extxyz"] = ("0\n" + "\n".join(lines[1:]) + "\n", "error")
    cases["xyz_header_huge.extxyz"] = ("900000000\n" + "\n".join(lines[1:]) + "\n", "error")
    cases["xyz_header_word.extxyz"] = ("five\n" + "\n".join(lines[1:]) + "\n", "error")
    cases["xyz_header_neg.extxyz"] = ("-5\n" + "\n".join(lines[1:]) + "\n", "error")
    for label, value in [("nan", "nan"), ("inf", "inf"), ("zero", "0.0"), ("huge", "1e9"), ("neg", "-3.855044"),
                         ("tiny", "1e-9"), ("big", "5000")]:
        vals = lattice.group(1).split()
        vals[8] = value
        cases[f"xyz_lattice_c_{label}.extxyz"] = (text.replace(lattice.group(1), " ".join(vals)),
                                                  "any" if label == "neg" else "error")
    cases["xyz_lattice_short.extxyz"] = (text.replace(lattice.group(1), "3.8 0 0 0 3.8 0"), "error")
    cases["xyz_lattice_word.extxyz"] = (text.replace(lattice.group(1), "a b c d e f g h i"), "error")
    cases["xyz_no_lattice.extxyz"] = (re.sub(r'Lattice="[^"]+" ', "", text), "error")
    cases["xyz_no_pbc.extxyz"] = (text.replace('pbc="T T T"', 'pbc="F F F"'), "error")
    cases["xyz_unknown_element.extxyz"] = (text.replace("Cd ", "Xq ", 1), "error")
    cases["xyz_pos_nan.extxyz"] = (text.replace("1.92752200       1.92752200       0.00000000",
                                                "nan       1.92752200       0.00000000", 1), "error")
    cases["xyz_pos_inf.extxyz"] = (text.replace("1.92752200       1.92752200       0.00000000",
                                                "inf       1.92752200       0.00000000", 1), "error")
    cases["xyz_pos_word.extxyz"] = (text.replace("1.92752200       1.92752200       0.00000000",
                                                 "x       1.92752200       0.00000000", 1), "error")
    cases["xyz_overlap.extxyz"] = (text.replace("1.92752200       1.92752200       0.00000000",
                                                "0.10000000       0.00000000       0.00000000", 1), "error")
    cases["xyz_missing_column.extxyz"] = (text.replace("1.92752200       1.92752200       0.00000000",
                                                       "1.92752200       1.92752200", 1), "error")
    cases["xyz_second_frame_bad.extxyz"] = (text + "7\n" + "\n".join(lines[1:]) + "\n", "error")
    for k in range(1, 10):
        cut = len(text) * k // 10
        cases[f"xyz_truncated_{k}0pct.extxyz"] = (text[:cut], "error")
    return cases


def _json_cases(text: str) -> dict[str, tuple[str | bytes, Expect]]:
    good = json.loads(text)
    cases: dict[str, tuple[str | bytes, Expect]] = {}

    def variant(edit: Callable[[dict], object]) -> str:
        d = json.loads(text)
        out = edit(d)
        return json.dumps(d if out is None else out)

    for label, shape in [("list_empty", []), ("dict_empty", {}), ("number", 42), ("string", "Structure"),
                         ("null", None), ("true", True), ("list_of_numbers", [1, 2, 3]),
                         ("structures_not_list", {"structures": 5}), ("nested_lists", [[good]]),
                         ("lattice_only", {"lattice": good["lattice"]}), ("sites_only", {"sites": good["sites"]})]:
        cases[f"json_shape_{label}.json"] = (json.dumps(shape), "error")

    def set_lattice(value):
        def edit(d):
            d["lattice"] = value
        return edit

    for label, value in [("number", 3), ("string", "cubic"), ("matrix_2x2", {"matrix": [[1, 0], [0, 1]]}),
                         ("matrix_ragged", {"matrix": [[4, 0, 0], [0, 4], [0, 0, 4]]}),
                         ("matrix_nan", {"matrix": [[float("nan"), 0, 0], [0, 4, 0], [0, 0, 4]]}),
                         ("matrix_inf", {"matrix": [[float("inf"), 0, 0], [0, 4, 0], [0, 0, 4]]}),
                         ("matrix_zero", {"matrix": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]}),
                         ("matrix_huge", {"matrix": [[4, 0, 0], [0, 4, 0], [0, 0, 1e9]]}),
                         ("matrix_tiny", {"matrix": [[1e-9, 0, 0], [0, 4, 0], [0, 0, 4]]}),
                         ("matrix_strings", {"matrix": [["a", 0, 0], [0, 4, 0], [0, 0, 4]]}),
                         ("no_matrix", {"a": 4})]:
        cases[f"json_lattice_{label}.json"] = (variant(set_lattice(value)), "error")

    def set_sites(fn):
        def edit(d):
            d["sites"] = fn(d["sites"])
        return edit

    for label, fn in [("empty", lambda s: []), ("number", lambda s: 7), ("strings", lambda s: ["Sr", "O"]),
                      ("no_species", lambda s: [{k: v for k, v in x.items() if k != "species"} for x in s]),
                      ("no_abc", lambda s: [{k: v for k, v in x.items() if k not in ("abc", "xyz")} for x in s]),
                      ("abc_short", lambda s: [{**x, "abc": x["abc"][:2]} for x in s]),
                      ("abc_nan", lambda s: [{**x, "abc": [float("nan"), 0, 0]} for x in s]),
                      ("abc_inf", lambda s: [{**x, "abc": [float("inf"), 0, 0]} for x in s]),
                      ("abc_strings", lambda s: [{**x, "abc": ["x", "y", "z"]} for x in s]),
                      ("unknown_element", lambda s: [{**x, "species": [{"element": "Xq", "occu": 1}]} for x in s]),
                      ("element_number", lambda s: [{**x, "species": [{"element": 12, "occu": 1}]} for x in s]),
                      ("occu_half", lambda s: [{**x, "species": [{**x["species"][0], "occu": 0.5}]} for x in s]),
                      ("all_on_one_spot", lambda s: [{**x, "abc": [0.2, 0.2, 0.2]} for x in s]),
                      ("two_overlap", lambda s: [s[0], {**s[1], "abc": [0.01, 0.0, 0.0]}] + s[2:])]:
        cases[f"json_sites_{label}.json"] = (variant(set_sites(fn)), "error")
    for k in range(1, 10):
        cases[f"json_truncated_{k}0pct.json"] = (text[: len(text) * k // 10], "error")
    cases["json_trailing_garbage.json"] = (text + "}}", "error")
    return cases


def _too_many_atoms(max_atoms: int) -> str:
    """A real (dense, non-overlapping) Cu cell with one atom more than ``max_atoms``, as POSCAR."""
    from tessera.tools.io import structure_to_str

    n_side = 1
    while 4 * n_side ** 3 <= max_atoms:
        n_side += 1
    cu = Structure(Lattice.cubic(3.6), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    big = cu * (n_side, n_side, n_side)
    assert len(big) > max_atoms
    return structure_to_str(big, "poscar")


def _noise_cases(templates: dict[str, str], rng: random.Random) -> dict[str, tuple[str | bytes, Expect]]:
    """Binary noise: whole files of random bytes, noise spliced into good files, NUL bytes, bad UTF-8."""
    cases: dict[str, tuple[str | bytes, Expect]] = {}
    for ext, text in templates.items():
        raw = text.encode()
        for k in range(6):
            cases[f"noise_random_{k}{ext}"] = (bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))),
                                              "error")
        for k in range(3):
            start = rng.randrange(len(raw) // 4, len(raw) // 2)
            spliced = raw[:start] + bytes(rng.randrange(256) for _ in range(64)) + raw[start + 64:]
            cases[f"noise_spliced_{k}{ext}"] = (spliced, "any")
        cases[f"noise_nul_bytes{ext}"] = (b"\x00" * 512, "error")
        cases[f"noise_whitespace{ext}"] = (" \n\t\n   \n", "error")
        cases[f"noise_empty{ext}"] = (b"", "error")
        cases[f"noise_latin1{ext}"] = (("\xff\xfe caf\xe9 " * 40).encode("latin-1"), "error")
    return cases


def write_fuzz_folder(dest: Path, *, max_atoms: int, seed: int = 0) -> dict[str, Expect]:
    """Write the damaged files, some good ones and some non-structures into ``dest``; return name -> expectation.

    ``max_atoms`` is the reader's atom-count limit (one case exceeds it by a real, dense cell).
    """
    rng = random.Random(seed)
    dest.mkdir(parents=True, exist_ok=True)
    cif, poscar, xyz = GOOD_CIF.read_text(), GOOD_POSCAR.read_text(), GOOD_EXTXYZ.read_text()
    js = _good_json_text()
    files: dict[str, tuple[str | bytes, Expect]] = {}
    # good ones, under every naming convention pymatgen reads (the POSCAR names were once skipped silently)
    files.update({
        "good_LaRh.cif": (cif, "ok"),
        "SrGeO3_POSCAR": (poscar, "ok"),
        "run1.CONTCAR": (poscar, "ok"),
        "good_CdCo3N.extxyz": (xyz, "ok"),
        "good_SrGeO3.json": (js, "ok"),
    })
    # not structures by name: counted as skipped
    files.update({"README.txt": ("notes", "skip"), "plot.png": (b"\x89PNG\r\n", "skip"), "run.log": ("", "skip")})
    files.update(_cif_cases(cif))
    files.update(_poscar_cases(poscar))
    files.update(_extxyz_cases(xyz))
    files.update(_json_cases(js))
    files.update(_noise_cases({".cif": cif, ".vasp": poscar, ".extxyz": xyz, ".json": js}, rng))
    files["poscar_too_many_atoms.vasp"] = (_too_many_atoms(max_atoms), "error")
    # a few damaged POSCARs under the bare-name conventions too
    files["POSCAR_broken"] = (poscar[: len(poscar) // 3], "error")
    files["CONTCAR_nan"] = (poscar.replace("3.8568099999999998", "nan", 1), "error")
    files["Fe2O3_POSCAR"] = (poscar.replace("Sr Ge O", "Xq Ge O"), "error")
    for k in range(4):  # 3-5 character xyz without the ext prefix: .xyz is read as extxyz too
        files[f"plain_{k}.xyz"] = (xyz.replace(xyz.split("\n")[0], str(5 + k + 1), 1), "error")
    expectations: dict[str, Expect] = {}
    for name, (content, expect) in files.items():
        path = dest / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        expectations[name] = expect
    return expectations
