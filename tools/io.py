"""Read and write crystal structures: CIF, POSCAR, extended XYZ and pymatgen JSON.

A batch never dies for one bad file: :func:`read_structures` returns one :class:`ReadItem` per structure
found (or per file that yielded none), each holding either a ``Structure`` or a one-line error that names
the file and the problem. Files holding several structures (a CIF with several ``data_`` blocks, a
multi-frame extxyz, a JSON list) give one item each, named ``file#index`` (0-based). Each file's parse and
each structure's check run behind the per-item boundary (:func:`tools.isolation.attempt`), so whatever a
parser raises becomes that item's error, whatever its type.

Folders are read by pymatgen's naming conventions (:func:`detect_format`); other files in them are listed in
``ReadResult.skipped`` so a caller can say how many were never looked at.

A structure is refused before anything expensive runs (the periodic neighbour search, a model) when it breaks
one of the sanity bounds below: too many atoms, non-finite numbers, a cell length, angle, volume or volume per
atom outside the stated limits, an element pymatgen does not know, a partially occupied (disordered) site;
then when two atoms are closer than ``MIN_DISTANCE_A`` under periodic boundaries. pymatgen's warnings are
silenced on the console but kept, per item, in ``ReadItem.warnings``.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import DummySpecies, Structure

from tessera.tools.errors import InputError
from tessera.tools.isolation import attempt

MIN_DISTANCE_A: float = 0.5
"""Two atoms closer than this (A, periodic) make a structure unphysical (CDVAE structural validity)."""
MIN_VOLUME_A3: float = 0.1
"""A cell smaller than this (A^3) counts as zero-volume (CDVAE structural validity)."""

# Sanity bounds, checked before the neighbour search and before any model sees the structure. The shipped
# pool (data/pool.parquet, 19,952 Materials Project crystals of <= 20 atoms) spans cell lengths 1.5-46.7 A,
# angles 6.9-170.7 deg and 5.8-896 A^3/atom; the bounds leave room for larger user cells, slabs with vacuum
# and odd primitive settings, and refuse only what no crystal search can use.
MAX_ATOMS: int = 500
"""Sites per cell. A CHGNet single point on fcc Cu took 1.1 GB and 6 s at 256 atoms, 3.7 GB and 18 s at 864
(one thread, measured here; ~4.3 MB/atom): 500 atoms is ~2 GB per Dask worker, and a 120 s relaxation budget
buys only a few steps beyond it. 25x the largest cell in the pool."""
MAX_CELL_LENGTH_A: float = 500.0
"""Lattice vector length (A). The periodic neighbour search bins space in cells of the cutoff, so its memory
grows with length/cutoff (333 MB at 5e4 A here; c = 1e9 A asked for 150 GB). 10x the pool's longest vector
(46.7 A) and far beyond any slab's vacuum."""
MIN_CELL_ANGLE_DEG: float = 5.0
MAX_CELL_ANGLE_DEG: float = 175.0
"""Cell angles alpha, beta, gamma (deg). Nearer 0 or 180 the cell is numerically flat (the neighbour search
took > 60 s on a 4 A cell at gamma = 1e-4 deg); the pool's extremes are 6.9 and 170.7 deg (rhombohedral
primitive cells). Angles that are each fine but impossible together give a zero or non-finite volume."""
MIN_VOLUME_PER_ATOM_A3: float = 1.0
"""Cell volume per atom (A^3). The densest crystal in the pool has 5.8 A^3/atom (diamond 5.7); below 1 A^3/atom
atoms overlap whatever their positions (a 0.5 A sphere per atom already needs 0.07 A^3)."""
MAX_VOLUME_PER_ATOM_A3: float = 2500.0
"""Cell volume per atom (A^3). ~3x the emptiest cell in the pool (896 A^3/atom) and ~5x the sphere of CHGNet's
5 A graph cutoff (524 A^3): beyond it most atoms have no neighbour within the cutoff, so the model sees
isolated atoms in vacuum, not a crystal."""
MAX_FILE_BYTES: int = 64 * 1024 * 1024
"""Structure files larger than this are refused unread (a 500-atom CIF is ~40 kB; a long extxyz trajectory of
small cells tens of MB), so one huge or runaway file cannot fill memory."""

Format = Literal["cif", "poscar", "extxyz", "json"]
FORMATS: tuple[Format, ...] = ("cif", "poscar", "extxyz", "json")
_EXTENSIONS: dict[Format, str] = {"cif": ".cif", "poscar": ".vasp", "extxyz": ".extxyz", "json": ".json"}
_LABELS: dict[Format, str] = {"cif": "CIF", "poscar": "POSCAR", "extxyz": "extxyz", "json": "pymatgen JSON"}


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
    skipped: list[str] = Field(
        default_factory=list, description="files inside folders whose names are not structure files (not read)"
    )

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

    @property
    def n_skipped(self) -> int:
        """Files in the given folders that were not read because their names are not structure files."""
        return len(self.skipped)


# ---------------------------------------------------------------------------------------------- checks


def min_periodic_distance(structure: Structure, *, cutoff: float = 6.0) -> tuple[float, int, int]:
    """Shortest interatomic distance (A) under periodic boundaries, with the two site indices.

    Includes an atom's distance to its own periodic images (a very short lattice vector). Returns
    ``(inf, -1, -1)`` when no pair lies within ``cutoff`` A (a single atom in a big cell). Its memory grows
    with cell length / cutoff: call it only on a structure that passed :func:`sanity_problem`.
    """
    if len(structure) == 0:
        return float("inf"), -1, -1
    centers, points, _, distances = structure.get_neighbor_list(r=cutoff, exclude_self=True)
    if len(distances) == 0:
        return float("inf"), -1, -1
    k = int(np.argmin(distances))
    return float(distances[k]), int(centers[k]), int(points[k])


def _cell_angles(matrix: np.ndarray) -> tuple[float, float, float]:
    """alpha (b, c), beta (a, c), gamma (a, b) in degrees; NaN for a zero-length vector."""
    a, b, c = matrix
    with np.errstate(divide="ignore", invalid="ignore"):
        def angle(u: np.ndarray, v: np.ndarray) -> float:
            cos = float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))
            return math.degrees(math.acos(max(-1.0, min(1.0, cos)))) if math.isfinite(cos) else float("nan")

        return angle(b, c), angle(a, c), angle(a, b)


def sanity_problem(structure: Structure, *, min_distance: float = MIN_DISTANCE_A) -> str | None:
    """Why a structure breaks a sanity bound (module constants), or None. Cheap: O(atoms), no neighbour search.

    Checks: atoms present and at most ``MAX_ATOMS``; every site ordered and a known element; lattice and
    coordinates finite; cell lengths in [``min_distance``, ``MAX_CELL_LENGTH_A``] A (a shorter vector puts
    every atom onto its own periodic image); angles in [``MIN_CELL_ANGLE_DEG``, ``MAX_CELL_ANGLE_DEG``];
    volume >= ``MIN_VOLUME_A3``; volume per atom in [``MIN_VOLUME_PER_ATOM_A3``, ``MAX_VOLUME_PER_ATOM_A3``].
    """
    n = len(structure)
    if n == 0:
        return "no atoms"
    if n > MAX_ATOMS:
        return f"{n} atoms: more than the limit of {MAX_ATOMS} per cell"
    if not structure.is_ordered:
        i = next(k for k, site in enumerate(structure) if not site.is_ordered)
        return f"disordered site {i} ({structure[i].species}): partial occupancies are not supported"
    for i, site in enumerate(structure):
        if isinstance(site.specie, DummySpecies):
            return f"unknown element '{site.specie.symbol}' at site {i}"
    matrix = np.asarray(structure.lattice.matrix, dtype=float)
    if not np.all(np.isfinite(matrix)):
        return "non-finite lattice (NaN or infinite cell values)"
    frac = np.asarray(structure.frac_coords, dtype=float)
    bad = np.flatnonzero(~np.all(np.isfinite(frac), axis=1))
    if len(bad):
        return f"non-finite coordinates at site {int(bad[0])}"
    for name, length in zip("abc", np.linalg.norm(matrix, axis=1)):
        if length > MAX_CELL_LENGTH_A:
            return f"cell length {name} = {length:.4g} A: longer than the limit of {MAX_CELL_LENGTH_A:g} A"
        if length < min_distance:
            return (f"cell length {name} = {length:.3g} A: every atom overlaps its own periodic image "
                    f"(< {min_distance} A)")
    for name, ang in zip(("alpha", "beta", "gamma"), _cell_angles(matrix)):
        if not MIN_CELL_ANGLE_DEG <= ang <= MAX_CELL_ANGLE_DEG:
            return (f"cell angle {name} = {ang:.4g} deg: outside [{MIN_CELL_ANGLE_DEG:g}, {MAX_CELL_ANGLE_DEG:g}] "
                    "deg (a flat cell)")
    volume = abs(float(np.linalg.det(matrix)))
    if not volume >= MIN_VOLUME_A3:  # also catches NaN
        return f"zero-volume cell (V = {volume:.3g} A^3 < {MIN_VOLUME_A3} A^3)"
    per_atom = volume / n
    if per_atom < MIN_VOLUME_PER_ATOM_A3:
        return (f"volume per atom {per_atom:.3g} A^3: below the limit of {MIN_VOLUME_PER_ATOM_A3:g} A^3 "
                "(atoms must overlap)")
    if per_atom > MAX_VOLUME_PER_ATOM_A3:
        return (f"volume per atom {per_atom:.4g} A^3: above the limit of {MAX_VOLUME_PER_ATOM_A3:g} A^3 "
                "(isolated atoms in vacuum, not a crystal)")
    return None


def physical_problem(structure: Structure, *, min_distance: float = MIN_DISTANCE_A) -> str | None:
    """Why a structure is unphysical or unusable, or None when it is fine.

    First the cheap :func:`sanity_problem` bounds; then no two atoms closer than ``min_distance`` A under
    periodic boundaries. The distance search runs on the LLL-reduced cell (the same crystal, near-orthogonal
    vectors), so a skewed cell cannot make it enumerate millions of periodic images.
    """
    problem = sanity_problem(structure, min_distance=min_distance)
    if problem is not None:
        return problem
    reduced = structure.get_reduced_structure(reduction_algo="LLL")
    shortest = float(np.min(reduced.lattice.abc))
    if shortest < min_distance:
        return (f"overlapping atoms: a lattice vector of {shortest:.3f} A puts every atom {shortest:.3f} A from "
                f"its own periodic image (< {min_distance} A)")
    d, i, j = min_periodic_distance(reduced, cutoff=max(min_distance, 1e-3))
    if d < min_distance:
        what = "its own periodic image" if i == j else f"site {j} ({reduced[j].specie})"
        return (
            f"overlapping atoms: site {i} ({reduced[i].specie}) is {d:.3f} A from {what} "
            f"(< {min_distance} A)"
        )
    return None


# ---------------------------------------------------------------------------------------------- reading


def detect_format(path: Path) -> Format | None:
    """The format a file name says, by pymatgen's conventions (``Structure.from_file``), or None.

    ``*.cif``/``*.mcif``: CIF; a name containing ``POSCAR`` or ``CONTCAR`` (``Fe2O3_POSCAR``, ``run1.CONTCAR``),
    starting with ``poscar``/``contcar`` in any case, or ending ``.vasp``/``.poscar``: POSCAR; ``*.json``:
    pymatgen JSON; ``*.extxyz``/``*.xyz``: extended XYZ. Checked in that order, as pymatgen does.
    """
    name = path.name
    lower = name.lower()
    if lower.endswith((".cif", ".mcif")):
        return "cif"
    if ("POSCAR" in name or "CONTCAR" in name or lower.startswith(("poscar", "contcar"))
            or lower.endswith((".vasp", ".poscar"))):
        return "poscar"
    if lower.endswith(".json"):
        return "json"
    if lower.endswith((".extxyz", ".xyz")):
        return "extxyz"
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


Parsed = tuple[Structure | None, str | None, list[str]]
"""(structure, error, parser warnings) for one structure in a file."""

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


def _cif_cell_problem(block: str) -> str | None:
    """Cell values pymatgen would silently "repair": a negative length or an angle outside (0, 180) deg.

    pymatgen builds the lattice from cosines and absolute values, so c = -4 A or gamma = 200 deg would load as
    another, valid-looking cell. Missing or unparsable values are left to the parser.
    """
    from pymatgen.io.cif import str2float

    for tag in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"):
        m = re.search(rf"^[ \t]*_cell_{tag}[ \t]+(\S+)", block, flags=re.MULTILINE)
        if m is None:
            continue
        try:
            value = str2float(m.group(1))
        except (ValueError, TypeError):  # pymatgen's own number syntax: not a number is this message
            return f"_cell_{tag} '{m.group(1)}' is not a number"
        if tag.startswith("length") and not (math.isfinite(value) and value > 0):
            return f"_cell_{tag} = {m.group(1)}: a cell length must be positive and finite"
        if tag.startswith("angle") and not (math.isfinite(value) and 0 < value < 180):
            return f"_cell_{tag} = {m.group(1)}: a cell angle must lie strictly between 0 and 180 deg"
    return None


def _parse_cif_block(block: str) -> list[Parsed]:
    from pymatgen.io.cif import CifParser

    cell = _cif_cell_problem(block)
    if cell is not None:
        return [(None, f"cannot parse CIF: {cell}", [])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = attempt(lambda: CifParser.from_str(block).parse_structures(primitive=False))
    msgs = [str(w.message) for w in caught]
    if res.ok and res.value:
        return [(s, None, msgs) for s in res.value]
    return [(None, "cannot parse CIF: " + _best_reason(msgs, res.error or "no structure in the data block"), msgs)]


def _parse_cif(text: str) -> list[Parsed]:
    blocks = _split_cif_blocks(text)
    if not blocks:
        return [(None, "not a CIF file (no data_ block)", [])]
    return [parsed for block in blocks for parsed in _parse_cif_block(block)]


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _poscar_header_problem(text: str) -> str | None:
    """A species line and a counts line that disagree, or more atoms declared than ``MAX_ATOMS``.

    pymatgen reads "Sr Ge O / 1 1" as two atoms, Sr and Ge, and would allocate whatever count a header
    declares; both are refused here, before it parses. A header it cannot make sense of is left to it.
    """
    lines = text.splitlines()
    if len(lines) < 6:
        return None
    species: list[str] | None = None
    counts_line = lines[5].split()
    if counts_line and not any(_is_number(t) for t in counts_line):  # VASP 5: element symbols, then counts
        species = counts_line
        counts_line = lines[6].split() if len(lines) > 6 else []
    try:
        counts = [int(t) for t in counts_line]
    except ValueError:
        return None
    if species is not None and len(species) != len(counts):
        return f"the species line names {len(species)} elements but the counts line has {len(counts)} numbers"
    if any(c < 0 for c in counts):
        return f"negative atom count in '{' '.join(counts_line)}'"
    if sum(counts) > MAX_ATOMS:
        return f"declares {sum(counts)} atoms: more than the limit of {MAX_ATOMS} per cell"
    return None


def _parse_poscar(text: str) -> list[Parsed]:
    from pymatgen.io.vasp import Poscar

    header = _poscar_header_problem(text)
    if header is not None:
        return [(None, f"cannot parse POSCAR: {header}", [])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = attempt(lambda: Poscar.from_str(text).structure)
    msgs = [str(w.message) for w in caught]
    return [(res.value, None if res.ok else f"cannot parse POSCAR: {res.error}", msgs)]


def _read_extxyz_frames(text: str) -> list:
    import io as _io

    from ase.io import read as ase_read

    try:
        return ase_read(_io.StringIO(text), index=":", format="extxyz")
    except KeyError as exc:  # ASE's symbol lookup: the key is the unknown element
        raise InputError(f"unknown element {exc}") from exc


def _extxyz_frame(atoms) -> Structure:
    from pymatgen.io.ase import AseAtomsAdaptor

    if not all(atoms.pbc) or atoms.cell.rank < 3:
        raise InputError("no periodic 3D cell (extxyz needs Lattice=... and pbc)")
    return AseAtomsAdaptor.get_structure(atoms)


def _parse_extxyz(text: str) -> list[Parsed]:
    first = text.lstrip().split("\n", 1)[0].strip()
    if first.isdigit() and int(first) > MAX_ATOMS:
        return [(None, f"cannot parse extxyz: header declares {int(first)} atoms: more than the limit of "
                       f"{MAX_ATOMS} per cell", [])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = attempt(_read_extxyz_frames, text)
        if not res.ok:
            return [(None, f"cannot parse extxyz: {res.error}", [str(w.message) for w in caught])]
        frames = [attempt(_extxyz_frame, atoms) for atoms in res.value or []]
    msgs = [str(w.message) for w in caught]
    return [(f.value, None if f.ok else f"cannot read extxyz frame: {f.error}", msgs) for f in frames]


def _structure_from_dict(entry: object) -> Structure:
    if not isinstance(entry, dict) or "lattice" not in entry or "sites" not in entry:
        raise InputError("not a pymatgen Structure dict (needs 'lattice' and 'sites')")
    sites = entry["sites"]
    if isinstance(sites, list) and len(sites) > MAX_ATOMS:
        raise InputError(f"{len(sites)} sites: more than the limit of {MAX_ATOMS} per cell")
    return Structure.from_dict(entry)


def _parse_json(text: str) -> list[Parsed]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:  # the message names line and column: worth keeping as is
        return [(None, f"cannot parse JSON: {exc}", [])]
    if isinstance(data, dict) and "structures" in data and isinstance(data["structures"], list):
        data = data["structures"]
    entries = data if isinstance(data, list) else [data]
    if not entries:
        return [(None, "cannot parse pymatgen JSON: an empty list, no structure", [])]
    out: list[Parsed] = []
    for entry in entries:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = attempt(_structure_from_dict, entry)
        out.append((res.value, None if res.ok else f"cannot parse pymatgen JSON: {res.error}",
                    [str(w.message) for w in caught]))
    return out


_PARSERS: dict[Format, Callable[[str], list[Parsed]]] = {
    "cif": _parse_cif, "poscar": _parse_poscar, "extxyz": _parse_extxyz, "json": _parse_json,
}


def _read_text(path: Path) -> str:
    """The file as text, or :class:`InputError` when it is too large or binary (NUL bytes)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{size / 2**20:.0f} MB: larger than the limit of {MAX_FILE_BYTES // 2**20} MB")
    data = path.read_bytes()
    if b"\x00" in data:
        raise InputError("binary file (NUL bytes), not a structure file")
    return data.decode("utf-8", errors="replace")


def _read_file(path: Path) -> list[ReadItem]:
    src = str(path)
    if not path.exists():
        return [ReadItem(source=src, error=f"{src}: no such file")]
    fmt = detect_format(path)
    if fmt is None:
        return [ReadItem(source=src, error=f"{src}: unknown structure format (use .cif, POSCAR/.vasp, .extxyz, .json)")]
    text = attempt(_read_text, path)
    if not text.ok:
        return [ReadItem(source=src, error=f"{src}: cannot read file: {text.error}")]
    if not (text.value or "").strip():
        return [ReadItem(source=src, error=f"{src}: empty file")]

    # The per-item boundary: whatever the parser raises is this file's error line.
    parsed = attempt(_PARSERS[fmt], text.value or "")
    if not parsed.ok:
        return [ReadItem(source=src, error=f"{src}: cannot parse {_LABELS[fmt]}: {parsed.error}")]
    if not parsed.value:
        return [ReadItem(source=src, error=f"{src}: no structure found in this {_LABELS[fmt]} file")]

    many = len(parsed.value) > 1
    items: list[ReadItem] = []
    for k, (structure, error, msgs) in enumerate(parsed.value):
        name = f"{src}#{k}" if many else src
        msgs = list(dict.fromkeys(m.strip() for m in msgs if m.strip()))
        if structure is not None and error is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                check = attempt(physical_problem, structure)  # the check itself may not end the batch either
            msgs.extend(m for m in dict.fromkeys(str(w.message).strip() for w in caught) if m not in msgs)
            error = check.value if check.ok else f"physical check failed: {check.error}"
        if error is not None:
            items.append(ReadItem(source=name, error=f"{name}: {error}", warnings=msgs))
        else:
            items.append(ReadItem(source=name, structure=structure, warnings=msgs))
    return items


def read_structures(paths: str | Path | Iterable[str | Path]) -> ReadResult:
    """Read every structure in the given files and folders.

    Args:
        paths: files or folders (folders are searched recursively for files named as pymatgen reads them,
            see :func:`detect_format`; hidden entries are ignored).

    Returns:
        A :class:`ReadResult` with one item per structure (or per failed file), in order, and the folder
        entries skipped as not structure files. Never raises for a bad file: the item carries
        ``error`` = "<source>: <problem>".
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
