"""Build the shipped reference data under data/ from the staged public files.

Developers run this once (``make data``); the running program never reads the source folder.

Outputs
- ``pool.parquet``: distinct Materials Project structures with at most 20 atoms, compact arrays
  (lattice row-major in A, fractional coordinates, atomic numbers) and a fixed train/val/test split
  (about 90/5/5) decided by a hash of ``material_id`` so that the split never changes with file order.
- ``hull_entries.parquet``: one row per Materials Project entry with a formation energy (eV/atom,
  MP2020-corrected as published): the MP-20 files, MPTS-52, the LeMat-Bench MP-20 table (covers the
  MP-20 train split, whose structures are not staged) and, flagged as an older vintage, roost's table.
- ``elemental_references.json``: MP GGA energy per atom of each element's ground state
  (Matbench Discovery's reference entries), the chemical potentials that turn formation energies into
  total energies.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure
from rich.progress import track

MAX_ATOMS = 20
SPLIT_FRACTIONS = {"val": 0.05, "test": 0.05}  # the rest is train


def split_of(material_id: str) -> str:
    """Deterministic split from the SHA-256 of the material id (uniform in [0, 1))."""
    u = int(hashlib.sha256(material_id.encode()).hexdigest()[:12], 16) / 16**12
    if u < SPLIT_FRACTIONS["val"]:
        return "val"
    if u < SPLIT_FRACTIONS["val"] + SPLIT_FRACTIONS["test"]:
        return "test"
    return "train"


def _read_structure_files(src: Path) -> pd.DataFrame:
    """All staged MP structure files, first occurrence of each material id kept (MP-20 files first)."""
    frames = []
    for rel in [
        "mp_20_pilot/train.csv.gz",
        "mp_20_pilot/val.csv.gz",
        "mp_20_pilot/test.csv.gz",
        "mp_20_biternary/val.csv.gz",
        "mp_20_biternary/test.csv.gz",
        "mpts_52/val.csv.gz",
        "mpts_52/test.csv.gz",
    ]:
        df = pd.read_csv(src / rel)
        if "energy_above_hull" in df.columns:
            df = df.rename(columns={"energy_above_hull": "e_above_hull"})
        df["source_file"] = rel
        frames.append(df[["material_id", "formation_energy_per_atom", "e_above_hull", "cif", "source_file"]])
    all_rows = pd.concat(frames, ignore_index=True)
    return all_rows.drop_duplicates("material_id", keep="first").reset_index(drop=True)


def build_pool(src: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (pool of <= 20-atom structures, every distinct structure's hull row)."""
    rows = _read_structure_files(src)
    pool_records, hull_records = [], []
    for rec in track(rows.itertuples(index=False), total=len(rows), description="parsing CIFs"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(rec.cif, fmt="cif")
        comp = s.composition
        hull_records.append(
            {
                "material_id": rec.material_id,
                "formula": comp.formula,
                "n_atoms": len(s),
                "formation_energy_per_atom": float(rec.formation_energy_per_atom),
                "source": "mpts52" if rec.source_file.startswith("mpts_52") else "mp20",
            }
        )
        if len(s) > MAX_ATOMS:
            continue
        try:
            sg = s.get_space_group_info(symprec=0.1)[1]
        except Exception:  # spglib can fail on odd cells; the pool still keeps the structure
            sg = 1
        pool_records.append(
            {
                "material_id": rec.material_id,
                "formula": comp.reduced_formula,
                "n_atoms": len(s),
                "elements": sorted({el.symbol for el in comp.elements}),
                "chemsys": comp.chemical_system,
                "lattice": np.asarray(s.lattice.matrix, dtype=np.float64).ravel().tolist(),
                "frac_coords": np.mod(s.frac_coords, 1.0).ravel().tolist(),
                "atomic_numbers": [int(z) for z in s.atomic_numbers],
                "spacegroup": int(sg),
                "formation_energy_per_atom": float(rec.formation_energy_per_atom),
                "e_above_hull_mp": float(rec.e_above_hull),
                "split": split_of(rec.material_id),
                "source_file": rec.source_file,
            }
        )
    return pd.DataFrame(pool_records), pd.DataFrame(hull_records)


def build_hull_entries(src: Path, structure_rows: pd.DataFrame) -> pd.DataFrame:
    """Formation-energy entries for the reference hull, one row per (source, material id)."""
    lemat = pd.read_parquet(src / "hull_ref/lemat_genbench_mp20_hulls/ensemble_above_hull_dataset.parquet")
    lemat_rows = pd.DataFrame(
        {
            "material_id": lemat["material_id"],
            "formula": [Composition(" ".join(sp)).formula for sp in lemat["species_at_sites"]],
            "n_atoms": [len(sp) for sp in lemat["species_at_sites"]],
            "formation_energy_per_atom": lemat["formation_energy_per_atom"].astype(float),
            "source": "mp20",
        }
    )
    # keep_default_na=False: sodium nitride is spelled "NaN".
    roost = pd.read_csv(src / "hull_ref/roost/mp-formation.csv", keep_default_na=False)
    roost_rows = pd.DataFrame(
        {
            "material_id": roost["task_id"],
            "formula": [Composition(c).formula for c in roost["composition"]],
            "n_atoms": [int(Composition(c).num_atoms) for c in roost["composition"]],
            "formation_energy_per_atom": roost["formation_energy_per_atom"].astype(float),
            "source": "roost2020",
        }
    )
    entries = pd.concat([structure_rows, lemat_rows, roost_rows], ignore_index=True)
    # MP-20 ids appear both in the CSVs and in LeMat's table with identical values: keep one.
    entries = entries.drop_duplicates(["material_id", "source"], keep="first")
    mp_ids = set(entries.loc[entries.source != "roost2020", "material_id"])
    entries = entries[~((entries.source == "roost2020") & entries.material_id.isin(mp_ids))]
    return entries.reset_index(drop=True)


def build_elemental_references(src: Path) -> dict[str, dict[str, float | str]]:
    """Element -> {energy_per_atom (eV, MP GGA), material_id} from Matbench Discovery's entries."""
    with gzip.open(src / "hull_ref/matbench_discovery/2023-02-07-mp-elemental-reference-entries.json.gz") as fh:
        raw = json.load(fh)
    refs = {}
    for el, entry in raw.items():
        n = sum(entry["composition"].values())
        refs[el] = {
            "energy_per_atom": (entry["energy"] + entry.get("correction", 0.0)) / n,
            "material_id": entry.get("data", {}).get("material_id", entry.get("entry_id", "")),
        }
    return dict(sorted(refs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="folder holding the staged public files")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    pool, structure_hull_rows = build_pool(args.src)
    pool = pool.sort_values("material_id").reset_index(drop=True)
    pool.to_parquet(args.out / "pool.parquet", compression="zstd", index=False)
    entries = build_hull_entries(args.src, structure_hull_rows)
    entries.to_parquet(args.out / "hull_entries.parquet", compression="zstd", index=False)
    refs = build_elemental_references(args.src)
    (args.out / "elemental_references.json").write_text(json.dumps(refs, indent=1) + "\n")
    print(f"pool: {len(pool)} structures ({pool.split.value_counts().to_dict()})")
    print(f"hull entries: {len(entries)} ({entries.source.value_counts().to_dict()})")
    print(f"elemental references: {len(refs)}")


if __name__ == "__main__":
    main()
