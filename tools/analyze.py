"""Structure analysis: symmetry, duplicates within a batch, novelty against the reference pool, measures.

Tolerances (stated once, echoed in every result):

- symmetry: spglib through pymatgen's ``SpacegroupAnalyzer`` with ``symprec`` = 0.1 A and
  ``angle_tolerance`` = 5 degrees (the usual choice for relaxed, generated crystals); if spglib finds
  no cell at 0.1 it retries at 0.01.
- matching: pymatgen ``StructureMatcher`` with its defaults (ltol 0.2, stol 0.3, angle_tol 5 degrees,
  primitive_cell and scale on), the convention of CDVAE/DiffCSP/MatterGen evaluations.

Matching is expensive, so candidates go through two cheap pre-filters first: the reduced formula
must be equal (StructureMatcher with primitive cells requires it anyway), then the geometric
fingerprint of :mod:`tools.fingerprint` computed on a copy rescaled to ``FP_VOLUME_PER_ATOM``
(StructureMatcher scales volumes, the fingerprint's distance bins do not) must lie within
``fingerprint_cutoff``. The cutoff is loose on purpose (see ``tests/tools/test_analyze.py`` and the
calibration recorded there): the filter may only skip pairs that could never match.

Novelty reference pool: :func:`tools.pool.load_pool` (all splits unless told otherwise), indexed by
reduced formula; parsed structures and fingerprints are cached per process.

Prototype novelty (``novel_prototype``): no pool structure matches when species are ignored, i.e.
``StructureMatcher.fit_anonymous`` (some one-to-one mapping of elements makes the two the same crystal):
an element substitution of a known structure is novel but not prototype-novel. Pre-filters: the same
anonymized formula (e.g. AB2C4) and the same space-group number (the pool's MP value, the candidate's at
``SYMPREC``), so a distorted substitution in a subgroup of the known type counts as prototype-novel: the
check errs on the lenient side, like the fingerprint pre-filter of the exact check does not.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from tessera.tools.errors import InputError, ToolFailed
from tessera.tools.fingerprint import fingerprint_distance, structure_fingerprint
from tessera.tools.measures import (
    BatchMeasures,
    batch_measures,
    compositional_validity,
    is_on_hull,
    is_stable,
    plausibility,
    structural_validity,
)
from tessera.tools.isolation import attempt
from tessera.tools.pool import Split, load_pool, row_to_structure

if TYPE_CHECKING:
    from tessera.tools.candidate import Candidate

SYMPREC: float = 0.1
"""A, spglib distance tolerance."""
ANGLE_TOLERANCE: float = 5.0
"""degrees, spglib angle tolerance."""
FP_VOLUME_PER_ATOM: float = 20.0
"""A^3/atom: both structures are rescaled to this before fingerprinting (only equal formulas are compared)."""
FINGERPRINT_CUTOFF: float = 0.8
"""Fingerprint distance (0..2) above which a pair is not sent to StructureMatcher (calibrated loose)."""


# ---------------------------------------------------------------------------------------------- symmetry


class SymmetryResult(BaseModel):
    """Space group of one structure and the tolerances used."""

    model_config = ConfigDict(extra="forbid")

    spacegroup_symbol: str
    spacegroup_number: int
    crystal_system: str
    symprec: float = Field(description="A, the tolerance that gave this answer")
    angle_tolerance: float = Field(description="degrees")


def symmetry(structure: Structure, *, symprec: float = SYMPREC, angle_tolerance: float = ANGLE_TOLERANCE) -> SymmetryResult:
    """Space group (spglib) of a structure; retries once at symprec / 10 when spglib finds nothing.

    Raises:
        ToolFailed: spglib fails at both tolerances.
    """
    last: Exception | None = None
    for prec in (symprec, symprec / 10.0):
        try:
            sga = SpacegroupAnalyzer(structure, symprec=prec, angle_tolerance=angle_tolerance)
            return SymmetryResult(
                spacegroup_symbol=sga.get_space_group_symbol(),
                spacegroup_number=int(sga.get_space_group_number()),
                crystal_system=sga.get_crystal_system(),
                symprec=prec,
                angle_tolerance=angle_tolerance,
            )
        except (ValueError, TypeError, RuntimeError) as exc:  # spglib signals failure with these
            last = exc
    raise ToolFailed(f"spglib found no space group for {structure.composition.reduced_formula}: {last}")


# ---------------------------------------------------------------------------------------------- matching


class MatchParams(BaseModel):
    """StructureMatcher tolerances and the pre-filter cutoff (echoed into results)."""

    model_config = ConfigDict(extra="forbid")

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    primitive_cell: bool = True
    scale: bool = True
    fingerprint_cutoff: float = Field(FINGERPRINT_CUTOFF, description="0..2; <= 0 disables the pre-filter")


@lru_cache(maxsize=8)
def _matcher(ltol: float, stol: float, angle_tol: float, primitive_cell: bool, scale: bool) -> StructureMatcher:
    return StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=primitive_cell, scale=scale)


def matcher(params: MatchParams) -> StructureMatcher:
    """The StructureMatcher for these tolerances (cached)."""
    return _matcher(params.ltol, params.stol, params.angle_tol, params.primitive_cell, params.scale)


def match_fingerprint(structure: Structure) -> np.ndarray:
    """Fingerprint of a copy rescaled to ``FP_VOLUME_PER_ATOM`` A^3/atom: (FINGERPRINT_DIM,) float32."""
    s = structure.copy()
    s.scale_lattice(FP_VOLUME_PER_ATOM * len(s))
    return structure_fingerprint(s)


def structures_match(a: Structure, b: Structure, *, params: MatchParams | None = None) -> bool:
    """StructureMatcher.fit(a, b) after the formula pre-filter (no fingerprint pre-filter here)."""
    params = params or MatchParams()
    if a.composition.reduced_formula != b.composition.reduced_formula:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(matcher(params).fit(a, b))


def _prefilter(fp: np.ndarray, fps: np.ndarray, cutoff: float) -> np.ndarray:
    """Indices of ``fps`` rows within ``cutoff`` of ``fp``, nearest first (all rows when cutoff <= 0)."""
    if len(fps) == 0:
        return np.zeros(0, dtype=np.int64)
    d = fingerprint_distance(fps, fp[None, :])
    order = np.argsort(d, kind="stable")
    if cutoff <= 0:
        return order
    return order[d[order] <= cutoff]


class DedupResult(BaseModel):
    """Duplicates within one batch. The first structure of each group of matches is the unique one."""

    model_config = ConfigDict(extra="forbid")

    unique: list[bool]
    duplicate_of: list[int | None] = Field(description="index of the earlier structure it matches, else None")
    n_unique: int
    n_matcher_calls: int = Field(description="StructureMatcher comparisons actually run (after pre-filters)")
    params: MatchParams


def deduplicate(structures: Sequence[Structure], *, params: MatchParams | None = None) -> DedupResult:
    """Mark each structure unique unless it matches an earlier unique structure of the batch.

    Order matters by design (earlier wins), so the same batch in the same order gives the same answer.
    """
    params = params or MatchParams()
    sm = matcher(params)
    groups: dict[str, list[int]] = {}
    fps: dict[int, np.ndarray] = {}
    unique = [True] * len(structures)
    dup_of: list[int | None] = [None] * len(structures)
    calls = 0
    for i, s in enumerate(structures):
        formula = s.composition.reduced_formula
        reps = groups.setdefault(formula, [])
        if reps:
            fps[i] = match_fingerprint(s)
            cand = np.array(reps)
            for k in _prefilter(fps[i], np.stack([fps[j] for j in reps]), params.fingerprint_cutoff):
                calls += 1
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if sm.fit(structures[int(cand[k])], s):
                        unique[i] = False
                        dup_of[i] = int(cand[k])
                        break
        if unique[i]:
            if i not in fps:
                fps[i] = match_fingerprint(s)
            reps.append(i)
    return DedupResult(unique=unique, duplicate_of=dup_of, n_unique=sum(unique), n_matcher_calls=calls,
                       params=params)


# ---------------------------------------------------------------------------------------------- novelty


@lru_cache(maxsize=1)
def _pool_by_prototype() -> dict[tuple[str, int], list[int]]:
    """(anonymized formula, space-group number) -> pool row positions, once per process."""
    from pymatgen.core import Composition

    df = _pool_table()[3]
    out: dict[tuple[str, int], list[int]] = {}
    for pos, (f, sg) in enumerate(zip(df["formula"], df["spacegroup"])):  # type: ignore[index]
        out.setdefault((Composition(str(f)).anonymized_formula, int(sg)), []).append(pos)
    return out


@lru_cache(maxsize=1)
def _pool_table() -> tuple[dict[str, list[int]], list[str], list[str], object]:
    """(formula -> row positions, material ids, splits, the DataFrame) of the whole pool, once per process."""
    df = load_pool(None)
    by_formula: dict[str, list[int]] = {}
    for pos, f in enumerate(df["formula"]):
        by_formula.setdefault(str(f), []).append(pos)
    return by_formula, [str(m) for m in df["material_id"]], [str(s) for s in df["split"]], df


_POOL_STRUCTURES: dict[int, Structure] = {}
_POOL_FPS: dict[int, np.ndarray] = {}


def _pool_structure(pos: int) -> tuple[Structure, np.ndarray]:
    """Parsed pool structure and its match fingerprint at a row position (cached per process)."""
    if pos not in _POOL_STRUCTURES:
        df = _pool_table()[3]
        s = row_to_structure(df.iloc[pos])  # type: ignore[attr-defined]
        _POOL_STRUCTURES[pos] = s
        _POOL_FPS[pos] = match_fingerprint(s)
    return _POOL_STRUCTURES[pos], _POOL_FPS[pos]


class NoveltyResult(BaseModel):
    """Novelty of one structure against the reference pool."""

    model_config = ConfigDict(extra="forbid")

    novel: bool
    matched_id: str | None = Field(None, description="pool material it matches")
    n_same_formula: int = Field(description="pool structures with the same reduced formula (after exclusions)")
    n_matcher_calls: int


class NoveltyIndex:
    """The reference pool indexed by reduced formula, for novelty checks.

    Args:
        splits: which pool splits count as known (default all).
        exclude_ids: material ids that do not count as known (e.g. the held-out structure being judged).
        params: matching tolerances.
    """

    def __init__(
        self,
        *,
        splits: Iterable[Split] | None = None,
        exclude_ids: Iterable[str] = (),
        params: MatchParams | None = None,
    ) -> None:
        self.splits: frozenset[str] | None = frozenset(splits) if splits is not None else None
        bad = [s for s in (self.splits or ()) if s not in ("train", "val", "test")]
        if bad:
            raise InputError(f"unknown pool split(s) {bad} (train, val, test)")
        self.exclude_ids = frozenset(exclude_ids)
        self.params = params or MatchParams()

    def _candidates(self, formula: str) -> list[int]:
        by_formula, ids, splits, _ = _pool_table()
        return [p for p in by_formula.get(formula, [])
                if ids[p] not in self.exclude_ids and (self.splits is None or splits[p] in self.splits)]

    def check(self, structure: Structure) -> NoveltyResult:
        """Is ``structure`` absent from the pool? Names the matching pool material when it is not."""
        positions = self._candidates(structure.composition.reduced_formula)
        if not positions:
            return NoveltyResult(novel=True, n_same_formula=0, n_matcher_calls=0)
        loaded = [_pool_structure(p) for p in positions]
        fp = match_fingerprint(structure)
        sm = matcher(self.params)
        ids = _pool_table()[1]
        calls = 0
        for k in _prefilter(fp, np.stack([f for _, f in loaded]), self.params.fingerprint_cutoff):
            calls += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if sm.fit(loaded[int(k)][0], structure):
                    return NoveltyResult(novel=False, matched_id=ids[positions[int(k)]],
                                         n_same_formula=len(positions), n_matcher_calls=calls)
        return NoveltyResult(novel=True, n_same_formula=len(positions), n_matcher_calls=calls)

    def check_many(self, structures: Sequence[Structure]) -> list[NoveltyResult]:
        return [self.check(s) for s in structures]

    def check_prototype(self, structure: Structure, *, spacegroup_number: int | None = None) -> NoveltyResult:
        """Is ``structure``'s framework absent from the pool with species ignored (``fit_anonymous``)?

        ``novel`` of the result is prototype novelty; ``matched_id`` the pool material of the same structure
        type. ``spacegroup_number`` (computed at ``SYMPREC`` when omitted) selects the pool rows compared.
        """
        if spacegroup_number is None:
            spacegroup_number = symmetry(structure).spacegroup_number
        key = (structure.composition.anonymized_formula, int(spacegroup_number))
        _, ids, splits, _ = _pool_table()
        positions = [p for p in _pool_by_prototype().get(key, [])
                     if ids[p] not in self.exclude_ids and (self.splits is None or splits[p] in self.splits)]
        sm = matcher(self.params)
        calls = 0
        for p in positions:
            calls += 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if sm.fit_anonymous(_pool_structure(p)[0], structure):
                    return NoveltyResult(novel=False, matched_id=ids[p], n_same_formula=len(positions),
                                         n_matcher_calls=calls)
        return NoveltyResult(novel=True, n_same_formula=len(positions), n_matcher_calls=calls)


# ---------------------------------------------------------------------------------------------- one call


class StructureAnalysis(BaseModel):
    """Everything the analysis tool found about one structure."""

    model_config = ConfigDict(extra="forbid")

    index: int
    reduced_formula: str
    structurally_valid: bool
    structural_reason: str
    compositionally_valid: bool
    compositional_reason: str
    symmetry: SymmetryResult | None
    symmetry_error: str | None = None
    e_hull: float | None = Field(None, description="eV/atom, as given by the hull tool")
    stable: bool
    on_hull: bool
    unique: bool
    duplicate_of: int | None
    novel: bool
    matched_id: str | None


class BatchAnalysis(BaseModel):
    """Per-structure analysis and the batch measures, with the parameters used."""

    model_config = ConfigDict(extra="forbid")

    items: list[StructureAnalysis]
    measures: BatchMeasures
    match_params: MatchParams
    symprec: float
    angle_tolerance: float
    novelty_splits: list[str] | None
    novelty_excluded_ids: int


def analyze_batch(
    structures: Sequence[Structure],
    e_hull: Sequence[float | None] | None = None,
    *,
    novelty_index: NoveltyIndex | None = None,
    params: MatchParams | None = None,
    symprec: float = SYMPREC,
    angle_tolerance: float = ANGLE_TOLERANCE,
) -> BatchAnalysis:
    """Symmetry, validity, uniqueness, novelty and stability of a batch of (relaxed) structures.

    Args:
        structures: the batch (order decides which duplicate counts as the unique one).
        e_hull: eV/atom per structure from :class:`tools.hull.ReferenceHull` (None = not evaluated,
            counts as not stable); omit to judge structure only.
        novelty_index: the pool to check novelty against (default: the whole pool).
    """
    params = params or MatchParams()
    hulls: list[float | None] = list(e_hull) if e_hull is not None else [None] * len(structures)
    if len(hulls) != len(structures):
        raise InputError(f"{len(structures)} structures but {len(hulls)} E_hull values")
    index = novelty_index or NoveltyIndex(params=params)
    dedup = deduplicate(structures, params=params)
    items: list[StructureAnalysis] = []
    for i, s in enumerate(structures):
        sv, sr = structural_validity(s)
        try:
            cv, cr = compositional_validity(s.composition)
        except InputError as exc:
            cv, cr = False, str(exc)
        try:
            sym, sym_err = symmetry(s, symprec=symprec, angle_tolerance=angle_tolerance), None
        except ToolFailed as exc:
            sym, sym_err = None, str(exc)
        nov = index.check(s)
        items.append(StructureAnalysis(
            index=i, reduced_formula=s.composition.reduced_formula,
            structurally_valid=sv, structural_reason=sr, compositionally_valid=cv, compositional_reason=cr,
            symmetry=sym, symmetry_error=sym_err, e_hull=hulls[i],
            stable=is_stable(hulls[i]), on_hull=is_on_hull(hulls[i]),
            unique=dedup.unique[i], duplicate_of=dedup.duplicate_of[i],
            novel=nov.novel, matched_id=nov.matched_id,
        ))
    measures = batch_measures(
        struct_valid=[it.structurally_valid for it in items],
        comp_valid=[it.compositionally_valid for it in items],
        e_hull=hulls, unique=[it.unique for it in items], novel=[it.novel for it in items],
    )
    return BatchAnalysis(items=items, measures=measures, match_params=params, symprec=symprec,
                         angle_tolerance=angle_tolerance,
                         novelty_splits=sorted(index.splits) if index.splits is not None else None,
                         novelty_excluded_ids=len(index.exclude_ids))


# ---------------------------------------------------------------------------------------------- candidates


def assess_batch(
    candidates: Sequence["Candidate"],
    *,
    novelty: bool = True,
    exclude_ids: Iterable[str] = (),
    params: MatchParams | None = None,
    symprec: float = SYMPREC,
    angle_tolerance: float = ANGLE_TOLERANCE,
) -> Iterator[int]:
    """Fill space group, uniqueness and novelty of candidates in place, yielding each index when done.

    Only candidates with a structure and no ``error`` are judged (the rest keep ``None`` there);
    uniqueness is among those, in batch order. With ``novelty=False`` the pool is not consulted and
    ``novel``/``matched_id`` stay ``None``. ``exclude_ids`` are pool materials that do not count as known.
    """
    params = params or MatchParams()
    live = [i for i, c in enumerate(candidates) if c.error is None and c.cif is not None]
    structures = {i: candidates[i].structure() for i in live}
    dedup = deduplicate([structures[i] for i in live], params=params)
    index = NoveltyIndex(exclude_ids=exclude_ids, params=params) if novelty else None
    judged = dict(zip(live, range(len(live))))
    for i, cand in enumerate(candidates):
        if i in judged:
            s = structures[i]
            try:
                sym = symmetry(s, symprec=symprec, angle_tolerance=angle_tolerance)
                cand.spacegroup, cand.spacegroup_number = sym.spacegroup_symbol, sym.spacegroup_number
            except ToolFailed as exc:
                cand.provenance["symmetry_error"] = str(exc)
            k = judged[i]
            cand.unique = dedup.unique[k]
            if dedup.duplicate_of[k] is not None:
                cand.provenance["duplicate_of"] = candidates[live[dedup.duplicate_of[k]]].id
            if index is not None:
                nov = index.check(s)
                cand.novel, cand.matched_id = nov.novel, nov.matched_id
                if not nov.novel:
                    cand.novel_prototype, cand.prototype_matched_id = False, nov.matched_id
                elif cand.stable:
                    # Costly (fit_anonymous over a structure type's pool rows): only for the hits that need it.
                    proto = index.check_prototype(s, spacegroup_number=cand.spacegroup_number)
                    cand.novel_prototype, cand.prototype_matched_id = proto.novel, proto.matched_id
            plaus = attempt(plausibility, s)  # the structure: peroxide and polyhalide states need their bonds
            if plaus.ok and plaus.value is not None:
                cand.plausible, cand.plausibility_note = plaus.value
            else:
                cand.plausibility_note = f"not judged: {plaus.error}"
        yield i
