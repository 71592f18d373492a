"""Rebuild tests/data/mixed_batch/ from the shipped pool (test split). Run: .venv/bin/python tests/data/make_test_data.py

Good files (three small test-split structures in three formats) and the three bad files every reader must
survive: an empty file, a malformed CIF, and a structure with two atoms 0.3 A apart.
"""

from __future__ import annotations

from pathlib import Path

from pymatgen.core import Structure

from tessera.tools.io import structure_to_str
from tessera.tools.pool import load_pool, row_to_structure

HERE = Path(__file__).resolve().parent
GOOD = {"mp-1002107": "cif", "mp-1016999": "poscar", "mp-1017553": "extxyz"}  # LaRh, SrGeO3, CdCo3N
SUFFIX = {"cif": ".cif", "poscar": ".vasp", "extxyz": ".extxyz"}


def main() -> None:
    out = HERE / "mixed_batch"
    out.mkdir(exist_ok=True)
    df = load_pool("test").set_index("material_id")
    first: Structure | None = None
    for mid, fmt in GOOD.items():
        s = row_to_structure(df.loc[mid])
        first = first or s
        (out / f"{mid}_{s.composition.reduced_formula}{SUFFIX[fmt]}").write_text(structure_to_str(s, fmt))
    (out / "empty.cif").write_text("")
    (out / "malformed.cif").write_text(
        "data_broken\n_cell_length_a 4.0\n_cell_length_b four\n_cell_length_c 4.0\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\nloop_\n_atom_site_label\n"
        "_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\nNa 0 0 0\n"
    )
    assert first is not None
    bad = first.copy()
    bad.append(bad[0].specie, bad[0].coords + [0.3, 0.0, 0.0], coords_are_cartesian=True)
    (out / "overlapping.cif").write_text(structure_to_str(bad, "cif"))


if __name__ == "__main__":
    main()
