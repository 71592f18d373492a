"""Read and write crystal structures: CIF, POSCAR, extended XYZ and pymatgen JSON.

A batch never dies for one bad file: :func:`read_structures` returns one :class:`ReadItem` per structure
found (or per file that yielded none), each holding either a ``Structure`` or a one-line error that names
the file and the problem. Files holding several structures (a CIF with several ``data_`` blocks, a
multi-frame extxyz, a JSON list) give one item each, named ``file#index`` (0-based).

A structure is refused as unphysical when it has no atoms, a non-finite coordinate, a cell volume below
``MIN_VOLUME_A3`` (CDVAE's structural-validity floor), an element pymatgen does not know, a partially
occupied (disordered) site, or two atoms closer than ``MIN_DISTANCE_A`` under periodic boundaries.
pymatgen's warnings are silenced on the console but kept, per item, in ``ReadItem.warnings``.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import DummySpecies, Structure

from tessera.tools.errors import InputError

MIN_DISTANCE_A: float = 0.5
"""Two atoms closer than this (A, periodic) make a structure unphysical (CDVAE structural validity)."""
MIN_VOLUME_A3: float = 0.1
"""A cell smaller than this (A^3) counts as zero-volume (CDVAE structural validity)."""

Format = Literal["cif", "poscar", "extxyz", "json"]
FORMATS: tuple[Format, ...] = ("cif", "poscar", "extxyz", "json")
_EXTENSIONS: dict[Format, str] = {"cif": ".cif", "poscar": ".vasp", "extxyz": ".extxyz", "json": ".json"}


class ReadItem(BaseModel):
    """One structure read from a file, or the reason none could be.

    ``structure`` is set exactly when ``error`` is None. ``error`` is one line naming the source.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    source: str = Field(description="file path, with '#index' when the file holds several structures")
    structure: Structure | None = None
    error: str | None = None
    warnings: list[str] = Field(default_factory=list, description="parser warnings, deduplicated")

    @property
    def ok(self) -> bool:
        return self.error is None


class ReadResult(BaseModel):
    """Everything :func:`read_structures` found, in input order (folders expanded, sorted by name)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    items: list[ReadItem] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="files inside folders that are not structure files")

    @property
    def structures(self) -> list[Structure]:
        """The structures that loaded, in order."""
        return [it.structure for it in self.items if it.structure is not None]

    @property
    def errors(self) -> list[str]:
        """One line per item that failed."""
        return [it.error for it in self.items if it.error is not None]

    @property
    def ok_items(self) -> list[ReadItem]:
        return [it for it in self.items if it.ok]


# ---------------------------------------------------------------------------------------------- checks


def min_periodic_distance(structure: Structure, *, cutoff: float = 6.0) -> tuple[float, int, int]:
    """Shortest interatomic distance (A) under periodic boundaries, with the two site indices.

    Includes an atom's distance to its own periodic images (a very short lattice vector). Returns
    ``(inf, -1, -1)`` when no pair lies within ``cutoff`` A (a single atom in a big cell).
    """
    if len(structure) == 0:
        return float("inf"), -1, -1
    centers, points, _, distances = structure.get_neighbor_list(r=cutoff, exclude_self=True)
    if len(distances) == 0:
        return float("inf"), -1, -1
    k = int(np.argmin(distances))
    return float(distances[k]), int(centers[k]), int(points[k])


def physical_problem(structure: Structure, *, min_distance: float = MIN_DISTANCE_A) -> str | None:
    """Why a structure is unphysical or unusable, or None when it is fine.

    Checks, in order: atoms present, every site ordered and a known element, finite numbers, cell
    volume >= ``MIN_VOLUME_A3``, no two atoms closer than ``min_distance`` A (periodic).
    """
    if len(structure) == 0:
        return "no atoms"
    if not structure.is_ordered:
        i = next(k for k, site in enumerate(structure) if not site.is_ordered)
        return f"disordered site {i} ({structure[i].species}): partial occupancies are not supported"
    for i, site in enumerate(structure):
        if isinstance(site.specie, DummySpecies):
            return f"unknown element '{site.specie.symbol}' at site {i}"
    matrix = structure.lattice.matrix
    if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(structure.frac_coords))):
        return "non-finite lattice or coordinates"
    volume = abs(float(np.linalg.det(matrix)))
    if volume < MIN_VOLUME_A3:
        return f"zero-volume cell (V = {volume:.3g} A^3 < {MIN_VOLUME_A3} A^3)"
    d, i, j = min_periodic_distance(structure, cutoff=max(min_distance, 1e-3))
    if d < min_distance:
        what = "its own periodic image" if i == j else f"site {j} ({structure[j].specie})"
        return (
            f"overlapping atoms: site {i} ({structure[i].specie}) is {d:.3f} A from {what} "
            f"(< {min_distance} A)"
        )
    return None


# ---------------------------------------------------------------------------------------------- reading


def detect_format(path: Path) -> Format | None:
    """The format a file name suggests, or None. POSCAR/CONTCAR names and .vasp/.poscar endings are POSCAR."""
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix == ".cif" or name.endswith(".mcif"):
        return "cif"
    if suffix in (".vasp", ".poscar") or name.startswith(("poscar", "contcar")):
        return "poscar"
    if suffix in (".extxyz", ".xyz"):
        return "extxyz"
    if suffix == ".json":
        return "json"
    return None


def _expand(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files to read (folders expanded recursively, sorted) and folder entries skipped as non-structures."""
    files: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    continue
                if detect_format(f) is None:
                    skipped.append(str(f))
                else:
                    files.append(f)
        else:
            files.append(p)
    return files, skipped


_CIF_BLOCK = re.compile(r"^[ \t]*data_", re.IGNORECASE | re.MULTILINE)


def _split_cif_blocks(text: str) -> list[str]:
    """The ``data_`` blocks of a CIF text, each as standalone CIF text (a header before the first is dropped)."""
    starts = [m.start() for m in _CIF_BLOCK.finditer(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def _best_reason(caught: Sequence[str], fallback: str) -> str:
    """The most informative parser message: pymatgen buries the cause in a warning."""
    for msg in caught:
        if "No structure parsed" in msg or "could not convert" in msg:
            return msg.split("\n")[-1].strip()
    return fallback


def _parse_cif(text: str) -> list[tuple[Structure | None, str | None, list[str]]]:
    from pymatgen.io.cif import CifParser

    blocks = _split_cif_blocks(text)
    if not blocks:
        return [(None, "not a CIF file (no data_ block)", [])]
    out: list[tuple[Structure | None, str | None, list[str]]] = []
    for block in blocks:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                structures = CifParser.from_str(block).parse_structures(primitive=False)
                error = None
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                structures, error = [], str(exc)
        msgs = [str(w.message) for w in caught]
        if structures:
            out.extend((s, None, msgs) for s in structures)
        else:
            out.append((None, "cannot parse CIF: " + _best_reason(msgs, error or "no structure"), msgs))
    return out


def _parse_poscar(text: str) -> list[tuple[Structure | None, str | None, list[str]]]:
    from pymatgen.io.vasp import Poscar

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            s: Structure | None = Poscar.from_str(text).structure
            error = None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            s, error = None, f"cannot parse POSCAR: {exc}"
    return [(s, error, [str(w.message) for w in caught])]


def _parse_extxyz(path: Path) -> list[tuple[Structure | None, str | None, list[str]]]:
    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            frames = ase_read(str(path), index=":", format="extxyz")
        except KeyError as exc:  # ASE's symbol lookup: the key is the unknown element
            return [(None, f"cannot parse extxyz: unknown element {exc}", [str(w.message) for w in caught])]
        except (ValueError, IndexError, TypeError, AttributeError, StopIteration) as exc:
            msg = str(exc) or type(exc).__name__
            return [(None, f"cannot parse extxyz: {msg}", [str(w.message) for w in caught])]
    msgs = [str(w.message) for w in caught]
    out: list[tuple[Structure | None, str | None, list[str]]] = []
    for atoms in frames:
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            out.append((None, "no periodic 3D cell (extxyz needs Lattice=... and pbc)", msgs))
            continue
        out.append((AseAtomsAdaptor.get_structure(atoms), None, msgs))
    return out


def _parse_json(text: str) -> list[tuple[Structure | None, str | None, list[str]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [(None, f"cannot parse JSON: {exc}", [])]
    if isinstance(data, dict) and "structures" in data and isinstance(data["structures"], list):
        data = data["structures"]
    entries = data if isinstance(data, list) else [data]
    out: list[tuple[Structure | None, str | None, list[str]]] = []
    for entry in entries:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if not isinstance(entry, dict) or "lattice" not in entry or "sites" not in entry:
                    raise ValueError("not a pymatgen Structure dict (needs 'lattice' and 'sites')")
                s: Structure | None = Structure.from_dict(entry)
                error = None
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                s, error = None, f"cannot parse pymatgen JSON: {exc}"
        out.append((s, error, [str(w.message) for w in caught]))
    return out


def _read_file(path: Path) -> list[ReadItem]:
    src = str(path)
    if not path.exists():
        return [ReadItem(source=src, error=f"{src}: no such file")]
    fmt = detect_format(path)
    if fmt is None:
        return [ReadItem(source=src, error=f"{src}: unknown structure format (use .cif, POSCAR/.vasp, .extxyz, .json)")]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [ReadItem(source=src, error=f"{src}: cannot read file ({exc.strerror})")]
    if not text.strip():
        return [ReadItem(source=src, error=f"{src}: empty file")]

    if fmt == "cif":
        parsed = _parse_cif(text)
    elif fmt == "poscar":
        parsed = _parse_poscar(text)
    elif fmt == "extxyz":
        parsed = _parse_extxyz(path)
    else:
        parsed = _parse_json(text)

    many = len(parsed) > 1
    items: list[ReadItem] = []
    for k, (structure, error, msgs) in enumerate(parsed):
        name = f"{src}#{k}" if many else src
        msgs = list(dict.fromkeys(m.strip() for m in msgs if m.strip()))
        if structure is not None and error is None:
            error = physical_problem(structure)
        if error is not None:
            items.append(ReadItem(source=name, error=f"{name}: {error}", warnings=msgs))
        else:
            items.append(ReadItem(source=name, structure=structure, warnings=msgs))
    return items


def read_structures(paths: str | Path | Iterable[str | Path]) -> ReadResult:
    """Read every structure in the given files and folders.

    Args:
        paths: files or folders (folders are searched recursively for .cif, POSCAR/CONTCAR/.vasp/.poscar,
            .extxyz/.xyz and .json files; hidden entries are ignored).

    Returns:
        A :class:`ReadResult` with one item per structure (or per failed file), in order. Never raises for
        a bad file: the item carries ``error`` = "<source>: <problem>".
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files, skipped = _expand(paths)
    items: list[ReadItem] = []
    for f in files:
        items.extend(_read_file(f))
    return ReadResult(items=items, skipped=skipped)


def read_structure(path: str | Path) -> Structure:
    """Exactly one good structure from one file, or :class:`InputError` with the one-line reason."""
    result = read_structures([path])
    if result.errors:
        raise InputError(result.errors[0])
    if len(result.items) != 1:
        raise InputError(f"{path}: holds {len(result.items)} structures, expected one")
    structure = result.items[0].structure
    assert structure is not None
    return structure


# ---------------------------------------------------------------------------------------------- writing


def structure_to_str(structure: Structure, fmt: Format) -> str:
    """One structure as text in the given format (cif, poscar, extxyz, json)."""
    if fmt == "cif":
        return structure.to(fmt="cif")
    if fmt == "poscar":
        from pymatgen.io.vasp import Poscar

        return Poscar(structure, sort_structure=False).get_str()
    if fmt == "json":
        return json.dumps(structure.as_dict(), indent=1)
    if fmt == "extxyz":
        import io as _io

        from ase.io import write as ase_write
        from pymatgen.io.ase import AseAtomsAdaptor

        buf = _io.StringIO()
        ase_write(buf, AseAtomsAdaptor.get_atoms(structure), format="extxyz")
        return buf.getvalue()
    raise InputError(f"unknown output format '{fmt}' (use one of {', '.join(FORMATS)})")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "structure"


def write_structures(
    structures: Sequence[Structure],
    directory: str | Path,
    fmt: Format = "cif",
    *,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write each structure to its own file in ``directory`` (created if missing).

    Args:
        structures: the structures.
        directory: output folder.
        fmt: "cif", "poscar" (written as ``<name>.vasp``), "extxyz" or "json" (pymatgen ``as_dict``).
        names: file stems, one per structure; default ``<index>_<reduced formula>``.

    Returns:
        The paths written, in order.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown output format '{fmt}' (use one of {', '.join(FORMATS)})")
    if names is not None and len(names) != len(structures):
        raise InputError(f"{len(names)} names for {len(structures)} structures")
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    width = max(3, len(str(len(structures))))
    for k, s in enumerate(structures):
        stem = _safe_name(names[k]) if names is not None else f"{k:0{width}d}_{s.composition.reduced_formula}"
        path = out_dir / f"{stem}{_EXTENSIONS[fmt]}"
        path.write_text(structure_to_str(s, fmt), encoding="utf-8")
        written.append(path)
    return written
