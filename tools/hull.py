"""Energy above the convex hull of a relaxed structure against the shipped reference entries.

The hull lives in formation-energy space: every reference entry is a Materials Project formation
energy per atom (MP2020-corrected, eV/atom) relative to the elemental references of
``data/elemental_references.json`` (MP GGA ground-state energy per atom, the chemical potentials
mu_i). A candidate's energy E (eV/atom, on the MP2020 scale after :mod:`tools.energy_scale`) becomes
E_form = E - sum_i x_i mu_i, which is the same quantity, so E_hull is exact arithmetic on MP's scale.

For a candidate in chemical system A-B-C the phase diagram takes every reference entry whose
elements are a subset of {A, B, C} plus one end point per element at E_form = 0 (the elemental
references: the pool has no structure for many elements). One ``PhaseDiagram`` per chemical system
is built on first use and cached on the instance.

Sources (``data/hull_entries.parquet``, column ``source``, loaded by :mod:`tools.reference_data`):
``mp20`` (MP-20 materials incl. its train split), ``mpts52`` (MPTS-52, up to 52 atoms), ``roost2020``
(older MP vintage, one entry per composition, ~60k extra compositions). When an id appears in several
sources the first of ``mp20 > mpts52 > roost2020`` wins. Extra entries (e.g. from
:mod:`tools.mp_source`) can be supplied by a provider callable.

Signs: E_hull > 0 above the hull; E_hull < 0 when the candidate lies below the reference hull (a
new ground state, or a model error); never an exception for that.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure

from tessera.tools.config import load_config
from tessera.tools.energy_scale import SCHEMES, Scheme, to_hull_scale
from tessera.tools.errors import InputError, TesseraError, ToolFailed
from tessera.tools.measures import STABLE_E_HULL, is_on_hull, is_stable
from tessera.tools.paths import ELEMENT_REFS_PATH, HULL_ENTRIES_PATH
from tessera.tools.reference_data import (  # re-exported: callers know these as tools.hull's
    SOURCES,
    EntryProvider,
    ReferenceEntry,
    entries_by_system,
    load_elemental_references,
    to_reference_entry,
)

DEFAULT_SOURCES: tuple[str, ...] = ("mp20", "mpts52")
MAX_ELEMENTS: int = 12
"""A chemical system with more elements than this is refused (2^n sub-systems are enumerated)."""


# ---------------------------------------------------------------------------------------------- results


class HullResult(BaseModel):
    """E_hull of one structure, with everything needed to audit it. Energies in eV/atom."""

    model_config = ConfigDict(extra="forbid")

    e_hull: float = Field(description="eV/atom above the reference hull; negative = below it")
    stable: bool = Field(description="e_hull <= stable_threshold (tools.measures.is_stable)")
    on_or_below_hull: bool = Field(description="e_hull <= 0 (tools.measures.is_on_hull)")
    stable_threshold: float
    formation_energy_per_atom: float = Field(description="eV/atom vs the elemental references")
    energy_per_atom: float = Field(description="eV/atom as given (model energy)")
    corrected_energy_per_atom: float = Field(description="eV/atom on the hull's MP2020 scale")
    correction_per_atom: float = Field(description="eV/atom added by the correction scheme")
    scheme: str = Field(description="energy correction scheme (tools.energy_scale)")
    chemical_system: str = Field(description='"A-B-C", sorted')
    reduced_formula: str
    decomposition: dict[str, float] = Field(
        description="reduced formula -> atomic fraction of the hull phases at this composition"
    )
    decomposition_ids: list[str] = Field(description="material ids of those phases ('element:X' for end points)")
    sources: list[str] = Field(description="reference sources the hull was built from")
    n_reference_entries: int = Field(description="entries in this chemical system's phase diagram")
    n_excluded_ids: int = Field(description="material ids held out of the hull (leave-out)")


class HullOutcome(BaseModel):
    """One item of a batch: a result, or the one-line reason it could not be computed."""

    model_config = ConfigDict(extra="forbid")

    result: HullResult | None = None
    error: str | None = None


class HullParams(BaseModel):
    """Settings of the reference hull (``configs/hull.yaml``), echoed into results for the audit log."""

    model_config = ConfigDict(extra="forbid")

    sources: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES))
    scheme: str = "as_is"
    stable_threshold: float = Field(STABLE_E_HULL, description="eV/atom")
    exclude_ids: list[str] = Field(default_factory=list)
    use_mp_api: bool = Field(False, description="add Materials Project entries via mp-api (needs MP_API_KEY)")
    mp_cache_dir: str | None = Field(None, description="cache for mp-api entries (default: user data dir)")


def load_hull_params(path: str | Path | None = None) -> HullParams:
    """Settings from YAML (default ``configs/hull.yaml``; built-in defaults if that file is absent)."""
    return load_config(HullParams, "hull", path)


# ---------------------------------------------------------------------------------------------- the hull


def chemical_system(composition: Composition) -> tuple[str, ...]:
    """Sorted element symbols of a composition."""
    return tuple(sorted(el.symbol for el in composition.elements))


class ReferenceHull:
    """Convex hulls over the shipped reference entries, one cached ``PhaseDiagram`` per chemical system.

    Args:
        sources: which ``hull_entries.parquet`` sources to use (subset of ``SOURCES``).
        exclude_ids: material ids left out of the hull (judging a held-out material honestly).
        scheme: energy correction scheme for candidate energies (``tools.energy_scale``).
        stable_threshold: eV/atom; ``HullResult.stable`` is ``e_hull <= stable_threshold``.
        entry_provider: optional extra entries per chemical system (e.g. Materials Project via mp-api).
        cache_size: how many chemical systems' phase diagrams to keep.
        entries_path, element_refs_path: data files (defaults: the shipped ones).
    """

    def __init__(
        self,
        *,
        sources: Iterable[str] = DEFAULT_SOURCES,
        exclude_ids: Iterable[str] = (),
        scheme: Scheme = "as_is",
        stable_threshold: float = STABLE_E_HULL,
        entry_provider: EntryProvider | None = None,
        provider_name: str = "mp-api",
        cache_size: int = 1024,
        entries_path: Path = HULL_ENTRIES_PATH,
        element_refs_path: Path = ELEMENT_REFS_PATH,
    ) -> None:
        self.sources: tuple[str, ...] = tuple(dict.fromkeys(sources))
        bad = [s for s in self.sources if s not in SOURCES]
        if bad or not self.sources:
            raise InputError(f"unknown hull source(s) {bad or '(none given)'}; choose from {', '.join(SOURCES)}")
        if scheme not in SCHEMES:
            raise InputError(f"unknown energy correction scheme '{scheme}' (choose from {', '.join(SCHEMES)})")
        self.scheme: Scheme = scheme
        self.exclude_ids: frozenset[str] = frozenset(exclude_ids)
        self.stable_threshold = float(stable_threshold)
        self.entry_provider = entry_provider
        self.provider_name = provider_name
        self.cache_size = int(cache_size)
        self._entries_path = entries_path
        self.mu: dict[str, float] = load_elemental_references(element_refs_path)
        self._pds: OrderedDict[tuple[str, ...], tuple[PhaseDiagram, int]] = OrderedDict()

    @classmethod
    def from_params(cls, params: HullParams, *, entry_provider: EntryProvider | None = None) -> "ReferenceHull":
        """A hull from :class:`HullParams` (builds the mp-api provider when ``use_mp_api`` is set)."""
        if params.use_mp_api and entry_provider is None:
            from tessera.tools.mp_source import MPSource

            entry_provider = MPSource.from_env(cache_dir=params.mp_cache_dir).reference_entries
        return cls(sources=params.sources, exclude_ids=params.exclude_ids, scheme=params.scheme,  # type: ignore[arg-type]
                   stable_threshold=params.stable_threshold, entry_provider=entry_provider)

    @classmethod
    def default(
        cls,
        *,
        sources: Iterable[str] | None = None,
        exclude_ids: Iterable[str] = (),
        config_path: str | Path | None = None,
    ) -> "ReferenceHull":
        """The configured hull (``configs/hull.yaml``), with optional overrides of sources and leave-out ids."""
        params = load_hull_params(config_path)
        update: dict[str, object] = {"exclude_ids": sorted(set(params.exclude_ids) | set(exclude_ids))}
        if sources is not None:
            update["sources"] = list(sources)
        return cls.from_params(params.model_copy(update=update))

    @classmethod
    def scheme_name(cls, config_path: str | Path | None = None) -> str:
        """The configured energy correction scheme (an instance's own is ``hull.scheme``)."""
        return load_hull_params(config_path).scheme

    def ehull_fn(self) -> Callable[[Structure, float], float]:
        """``(structure, model energy per atom) -> E_hull`` in eV/atom, for the prescreen's E_hull stage."""
        return self.e_hull_value

    # ------------------------------------------------------------------ building

    @property
    def elements(self) -> frozenset[str]:
        """Elements the hull can judge (those with an elemental reference)."""
        return frozenset(self.mu)

    def _check_elements(self, system: tuple[str, ...], what: str) -> None:
        missing = [el for el in system if el not in self.mu]
        if missing:
            raise InputError(
                f"{what}: no reference energy for element(s) {', '.join(missing)} "
                f"(the hull covers {len(self.mu)} elements from data/elemental_references.json)"
            )
        if len(system) > MAX_ELEMENTS:
            raise InputError(f"{what}: {len(system)} elements exceed the hull's limit of {MAX_ELEMENTS}")

    def reference_entries(self, system: Sequence[str]) -> list[ReferenceEntry]:
        """All reference entries whose elements are a subset of ``system`` (exclusions applied), no end points."""
        key = tuple(sorted(set(system)))
        self._check_elements(key, "-".join(key))
        index = entries_by_system(self.sources, self._entries_path)
        out: list[ReferenceEntry] = []
        for k in range(1, len(key) + 1):
            for sub in itertools.combinations(key, k):
                out.extend(to_reference_entry(r) for r in index.get(sub, ()) if r[0] not in self.exclude_ids)
        if self.entry_provider is not None:
            provided = self.entry_provider(key)
            allowed = set(key)
            out.extend(e for e in provided
                       if e.material_id not in self.exclude_ids and set(e.elements) <= allowed)
        return out

    def phase_diagram(self, system: Sequence[str]) -> PhaseDiagram:
        """The (cached) phase diagram of a chemical system, in formation-energy space (eV per cell)."""
        return self._phase_diagram(tuple(sorted(set(system))))[0]

    def _phase_diagram(self, key: tuple[str, ...]) -> tuple[PhaseDiagram, int]:
        hit = self._pds.get(key)
        if hit is not None:
            self._pds.move_to_end(key)
            return hit
        refs = self.reference_entries(key)
        # End points: the elemental ground states define E_form = 0 (many elements have no structure here).
        pd_entries = [PDEntry(Composition({el: 1}), 0.0, name=el, attribute=f"element:{el}") for el in key]
        pd_entries += [
            PDEntry(e.composition, e.formation_energy_per_atom * e.composition.num_atoms,
                    name=e.composition.reduced_formula, attribute=e.material_id)
            for e in refs
        ]
        try:
            diagram = PhaseDiagram(pd_entries)
        except ValueError as exc:
            raise ToolFailed(f"phase diagram of {'-'.join(key)} could not be built: {exc}") from exc
        self._pds[key] = (diagram, len(refs))
        while len(self._pds) > self.cache_size:
            self._pds.popitem(last=False)
        return diagram, len(refs)

    # ------------------------------------------------------------------ judging

    def formation_energy(self, composition: Composition, corrected_energy_per_atom: float) -> float:
        """E_form (eV/atom) = E (eV/atom, MP2020 scale) - sum_i x_i mu_i."""
        frac = composition.fractional_composition
        return corrected_energy_per_atom - sum(frac[el] * self.mu[el.symbol] for el in frac.elements)

    def e_hull(self, structure: Structure, energy_per_atom: float) -> HullResult:
        """E_hull (eV/atom) of a relaxed structure with its model energy per atom (eV/atom, uncorrected).

        Raises:
            InputError: an element without a reference energy, a non-finite energy, an empty structure.
            ToolFailed: the correction scheme refused the entry or the phase diagram failed.
        """
        if len(structure) == 0:
            raise InputError("empty structure: no atoms to place on the hull")
        comp = structure.composition
        if not comp.valid or any(not hasattr(el, "symbol") for el in comp.elements):
            raise InputError(f"{comp.formula}: dummy species cannot be placed on the hull")
        key = chemical_system(comp)
        self._check_elements(key, comp.reduced_formula)
        scaled = to_hull_scale(structure, float(energy_per_atom), scheme=self.scheme)
        e_form = self.formation_energy(comp, scaled.corrected_energy_per_atom)
        diagram, n_refs = self._phase_diagram(key)
        entry = PDEntry(comp, e_form * comp.num_atoms, name=comp.reduced_formula, attribute="candidate")
        decomp, e_above = diagram.get_decomp_and_e_above_hull(entry, allow_negative=True, check_stable=False)
        if e_above is None or not math.isfinite(e_above):
            raise ToolFailed(f"{comp.reduced_formula}: the phase diagram returned no E_hull")
        e_above = float(e_above)
        parts = sorted(decomp.items(), key=lambda kv: -kv[1])
        decomposition: dict[str, float] = {}
        for phase, amount in parts:
            f = phase.composition.reduced_formula
            decomposition[f] = decomposition.get(f, 0.0) + float(amount)
        return HullResult(
            e_hull=e_above,
            stable=is_stable(e_above, threshold=self.stable_threshold),
            on_or_below_hull=is_on_hull(e_above),
            stable_threshold=self.stable_threshold,
            formation_energy_per_atom=float(e_form),
            energy_per_atom=float(energy_per_atom),
            corrected_energy_per_atom=scaled.corrected_energy_per_atom,
            correction_per_atom=scaled.correction_per_atom,
            scheme=self.scheme,
            chemical_system="-".join(key),
            reduced_formula=comp.reduced_formula,
            decomposition=decomposition,
            decomposition_ids=[str(phase.attribute) for phase, _ in parts],
            sources=list(self.sources) + ([self.provider_name] if self.entry_provider is not None else []),
            n_reference_entries=n_refs,
            n_excluded_ids=len(self.exclude_ids),
        )

    def decomposition(self, structure: Structure, energy_per_atom: float) -> list[tuple[str, float, str]]:
        """The hull phases that set E_hull: ``(reduced formula, atomic fraction, material id)``, largest share
        first; fractions sum to 1, end points have id ``element:X``. For an entry that is not a hull vertex
        the phases depend on the composition only (the hull facet below it); the energy (eV/atom, model,
        uncorrected) is validated and placed exactly as in :meth:`e_hull`, whose errors this raises."""
        result = self.e_hull(structure, energy_per_atom)
        comp = structure.composition
        entry = PDEntry(comp, result.formation_energy_per_atom * comp.num_atoms, name=comp.reduced_formula)
        decomp, _ = self.phase_diagram(chemical_system(comp)).get_decomp_and_e_above_hull(
            entry, allow_negative=True, check_stable=False)
        parts = [(phase.composition.reduced_formula, float(amount), str(phase.attribute))
                 for phase, amount in decomp.items()]
        return sorted(parts, key=lambda p: (-p[1], p[2]))

    def e_hull_value(self, structure: Structure, energy_per_atom: float) -> float:
        """Just the number (eV/atom): the ``EhullFn`` the prescreen's E_hull stage takes."""
        return self.e_hull(structure, energy_per_atom).e_hull

    def e_hull_many(self, structures: Sequence[Structure], energies_per_atom: Sequence[float]) -> list[HullOutcome]:
        """One outcome per structure, in order; a failing item carries its reason and the batch goes on."""
        if len(structures) != len(energies_per_atom):
            raise InputError(f"{len(structures)} structures but {len(energies_per_atom)} energies")
        out: list[HullOutcome] = []
        for s, e in zip(structures, energies_per_atom):
            try:
                out.append(HullOutcome(result=self.e_hull(s, e)))
            except TesseraError as exc:
                out.append(HullOutcome(error=str(exc)))
        return out
