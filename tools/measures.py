"""The measures of ARCHITECTURE.md, defined once. Everything that reports a rate imports it from here.

- structural validity (CDVAE): every periodic interatomic distance > 0.5 A and cell volume > 0.1 A^3.
- compositional validity (CDVAE): SMACT charge neutrality with the Pauling electronegativity test
  (:func:`smact_check`; the prescreen's charge stage applies the same rule as a gate).
- stable: E_hull <= 0.1 eV/atom against the reference hull (MatterGen's threshold; CHGNet-relaxed
  energies here, so say "CHGNet-evaluated" beside every number); also reported: E_hull <= 0.
- unique: no StructureMatcher match earlier in the batch (the first of a group of duplicates counts
  as unique, so unique rate = distinct structures / total).
- novel: no StructureMatcher match in the reference pool.
- stability levels: stable (E_hull <= 0.1), on the hull (E_hull <= 0), confirmed (a second potential,
  SevenNet, relaxed from the first judge's structure, also gives E_hull <= 0.1: :func:`is_confirmed`).
- prototype-novel: no match in the pool even with species ignored (tools/analyze.py).
- plausible: :func:`plausibility`; a composition with no charge-neutral assignment of common oxidation
  states AND more anions per cation than any pool compound with that anion (CdI10) is flagged, not dropped.
- S.U.N.: stable and unique and novel. Rates are over all generated candidates (a candidate that
  failed relaxation counts as not stable), so S.U.N. rate = n_sun / n_total.
- guidance effect: one-sided two-proportion z-test (guided share > unguided share).
- Wasserstein distances (CDVAE's property statistics): density (g/cm^3) and number of elements.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Composition, Structure

from tessera.tools.errors import InputError
from tessera.tools.io import MIN_DISTANCE_A, MIN_VOLUME_A3, min_periodic_distance

STABLE_E_HULL: float = 0.1
"""eV/atom: stable means E_hull <= this (MatterGen)."""
HULL_TOL: float = 1e-6
"""eV/atom: float noise allowed when comparing E_hull with a threshold."""


# ---------------------------------------------------------------------------------------------- validity


def structural_validity(
    structure: Structure, *, min_distance: float = MIN_DISTANCE_A, min_volume: float = MIN_VOLUME_A3
) -> tuple[bool, str]:
    """CDVAE structural validity: all periodic distances > ``min_distance`` A and volume > ``min_volume`` A^3.

    Returns (valid, reason); the reason names the offending pair or volume.
    """
    if len(structure) == 0:
        return False, "no atoms"
    volume = abs(float(structure.volume))
    if not math.isfinite(volume) or volume <= min_volume:
        return False, f"cell volume {volume:.3g} A^3 <= {min_volume} A^3"
    d, i, j = min_periodic_distance(structure, cutoff=max(2.0 * min_distance, 1.0))
    if d <= min_distance:
        return False, f"{structure[i].specie}-{structure[j].specie} distance {d:.3f} A <= {min_distance} A"
    shortest = f"{d:.3f} A" if math.isfinite(d) else f"none within {max(2.0 * min_distance, 1.0):.1f} A"
    return True, f"min distance {shortest}, volume {volume:.3g} A^3"


def is_structurally_valid(structure: Structure) -> bool:
    """CDVAE structural validity (see :func:`structural_validity`)."""
    return structural_validity(structure)[0]


def _reduced_counts(composition: Composition) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Element symbols (sorted) and integer counts divided by their gcd."""
    comp = composition.element_composition
    symbols = tuple(sorted(el.symbol for el in comp.elements))
    counts = [int(round(comp[s])) for s in symbols]
    if any(abs(comp[s] - c) > 1e-6 for s, c in zip(symbols, counts)):
        raise InputError(f"non-integer composition {composition.formula}: charge neutrality needs whole atoms")
    g = math.gcd(*counts)
    return symbols, tuple(c // g for c in counts)


@lru_cache(maxsize=65536)
def _smact_check_cached(
    symbols: tuple[str, ...],
    counts: tuple[int, ...],
    oxidation_states_set: str,
    use_pauling_test: bool,
    include_alloys: bool,
    max_combinations: int,
) -> tuple[bool, str]:
    import smact
    from smact.screening import pauling_test

    if len(symbols) == 1:
        return True, "elemental"
    if include_alloys and all(s in smact.metals for s in symbols):
        return True, "all-metal alloy"
    space = smact.element_dictionary(symbols)
    elements = [space[s] for s in symbols]
    attr = {"smact14": "oxidation_states_smact14", "icsd24": "oxidation_states_icsd24",
            "icsd16": "oxidation_states_icsd16", "pymatgen_sp": "oxidation_states_sp"}.get(oxidation_states_set)
    if attr is None:
        raise InputError(f"unknown oxidation_states_set '{oxidation_states_set}' (smact14, icsd24, icsd16, pymatgen_sp)")
    ox_lists = [list(getattr(e, attr) or []) for e in elements]
    missing = [s for s, ox in zip(symbols, ox_lists) if not ox]
    if missing:
        return False, f"no known oxidation states for {', '.join(missing)}"
    n_combos = math.prod(len(ox) for ox in ox_lists)
    if n_combos > max_combinations:
        return False, f"{n_combos} oxidation-state combinations exceed the limit {max_combinations}"
    electronegs = [e.pauling_eneg for e in elements]
    neutral_found = False
    for ox_states in itertools.product(*ox_lists):
        # CDVAE calls smact.neutral_ratios with the single allowed stoichiometry (the reduced counts);
        # that is exactly "sum of oxidation state x count is zero", computed here directly.
        if sum(o * c for o, c in zip(ox_states, counts)) != 0:
            continue
        neutral_found = True
        if use_pauling_test:
            try:
                eneg_ok = pauling_test(ox_states, electronegs)
            except TypeError:
                # CDVAE's rule: an element without a Pauling electronegativity does not veto.
                eneg_ok = True
        else:
            eneg_ok = True
        if eneg_ok:
            assignment = " ".join(f"{s}{o:+d}" for s, o in zip(symbols, ox_states))
            return True, f"charge-neutral: {assignment}"
    if neutral_found:
        return False, "every charge-neutral oxidation-state assignment fails the electronegativity test"
    return False, "no charge-neutral combination of oxidation states"


def smact_check(
    composition: Composition | str,
    *,
    oxidation_states_set: str = "smact14",
    use_pauling_test: bool = True,
    include_alloys: bool = True,
    max_combinations: int = 1_000_000,
) -> tuple[bool, str]:
    """CDVAE's compositional validity (SMACT charge neutrality + electronegativity test), with a reason.

    Elemental compositions and (with ``include_alloys``) all-metal alloys pass outright; otherwise some
    assignment of the elements' oxidation states (SMACT's 2014 list by default, as CDVAE used) must
    balance the charge of the gcd-reduced composition and pass the electronegativity ordering test.

    Returns:
        (valid, reason): reason names the charge-neutral assignment found, or why none passed.

    Raises:
        InputError: a non-integer composition, or an unknown ``oxidation_states_set``.
    """
    comp = Composition(composition) if isinstance(composition, str) else composition
    symbols, counts = _reduced_counts(comp)
    return _smact_check_cached(symbols, counts, oxidation_states_set, use_pauling_test, include_alloys,
                               int(max_combinations))


def compositional_validity(composition: Composition | Structure | str) -> tuple[bool, str]:
    """CDVAE compositional validity (SMACT charge neutrality + electronegativity), with its reason."""
    comp = composition.composition if isinstance(composition, Structure) else composition
    return smact_check(comp)


def is_compositionally_valid(composition: Composition | Structure | str) -> bool:
    """CDVAE compositional validity (see :func:`compositional_validity`)."""
    return compositional_validity(composition)[0]


def is_stable(e_hull: float | None, *, threshold: float = STABLE_E_HULL) -> bool:
    """E_hull (eV/atom) <= threshold; ``None`` or NaN (not evaluated) counts as not stable."""
    return e_hull is not None and math.isfinite(e_hull) and e_hull <= threshold + HULL_TOL


def is_on_hull(e_hull: float | None) -> bool:
    """E_hull (eV/atom) <= 0: on or below the reference hull."""
    return is_stable(e_hull, threshold=0.0)


def is_confirmed(e_hull: float | None, e_hull_confirm: float | None, *, threshold: float = STABLE_E_HULL) -> bool:
    """Both judges (CHGNet, then SevenNet from CHGNet's relaxed structure) put it within ``threshold`` eV/atom."""
    return is_stable(e_hull, threshold=threshold) and is_stable(e_hull_confirm, threshold=threshold)


# ---------------------------------------------------------------------------------------------- plausibility

ANIONS: frozenset[str] = frozenset({"F", "Cl", "Br", "I", "O", "S", "Se", "Te", "N", "P", "As"})
"""Elements counted as anions by :func:`plausibility` (when a less electronegative element is present)."""


def _anion_ratios(composition: Composition) -> dict[str, float]:
    """Anion symbol -> its atoms per non-anion atom; empty when there are no anions or no other atoms."""
    comp = composition.element_composition
    anions = [el.symbol for el in comp.elements if el.symbol in ANIONS]
    n_cation = comp.num_atoms - sum(comp[a] for a in anions)
    if not anions or n_cation <= 0:
        return {}
    return {a: comp[a] / n_cation for a in sorted(anions)}


@lru_cache(maxsize=1)
def pool_anion_ratio_limits() -> dict[str, float]:
    """Anion symbol -> the most atoms of that anion per non-anion atom in any pool compound."""
    import pandas as pd

    from tessera.tools.paths import POOL_PATH

    limits: dict[str, float] = {}
    for f in pd.read_parquet(POOL_PATH, columns=["formula"])["formula"].unique():
        for a, ratio in _anion_ratios(Composition(str(f))).items():
            limits[a] = max(limits.get(a, 0.0), ratio)
    return limits


@lru_cache(maxsize=65536)
def _charge_neutral_common(symbols: tuple[str, ...], counts: tuple[int, ...]) -> str | None:
    """A charge-neutral assignment of common oxidation states (pymatgen's list), as text, or None."""
    from pymatgen.core import Element

    ox_lists = [list(Element(s).common_oxidation_states) or [0] for s in symbols]
    if math.prod(len(o) for o in ox_lists) > 100_000:
        return "too many combinations to check"
    for ox in itertools.product(*ox_lists):
        if sum(o * c for o, c in zip(ox, counts)) == 0:
            return " ".join(f"{s}{o:+d}" for s, o in zip(symbols, ox))
    return None


def plausibility(composition: Composition | Structure | str) -> tuple[bool, str]:
    """Would a chemist take this composition to DFT? (plausible, reason).

    Implausible only when both hold: no charge-neutral assignment of common oxidation states
    (pymatgen's ``Element.common_oxidation_states``), and, for some anion, more of its atoms per
    non-anion atom than any pool compound holds (:func:`pool_anion_ratio_limits`). CdI10 and
    SbCl11 fail both; an intermetallic (no anion) or a charge-balanced polyiodide passes. A flag shown
    beside a hit, not a filter.
    """
    comp = composition.composition if isinstance(composition, Structure) else (
        Composition(composition) if isinstance(composition, str) else composition)
    ratios = _anion_ratios(comp)
    if not ratios:
        return True, "no anion-cation pair to judge"
    symbols, counts = _reduced_counts(comp)
    neutral = _charge_neutral_common(symbols, counts)
    if neutral is not None:
        return True, f"charge-neutral with common oxidation states: {neutral}"
    limits = pool_anion_ratio_limits()
    beyond = [f"{a} {r:.3g} > {limits.get(a, 0.0):.3g}" for a, r in ratios.items() if r > limits.get(a, 0.0) + 1e-9]
    if beyond:
        return False, ("no charge-neutral assignment of common oxidation states, and more anions per cation than "
                       f"any pool compound ({'; '.join(beyond)})")
    return True, "not charge-neutral with common oxidation states, but its anion-to-cation ratios occur in the pool"


# ---------------------------------------------------------------------------------------------- rates


class Rate(BaseModel):
    """A share with its numerator and denominator (so a report never hides the n)."""

    model_config = ConfigDict(extra="forbid")

    k: int
    n: int
    rate: float | None = Field(description="k / n, None when n = 0")

    @classmethod
    def of(cls, k: int, n: int) -> "Rate":
        return cls(k=int(k), n=int(n), rate=(k / n if n else None))


class BatchMeasures(BaseModel):
    """The ARCHITECTURE measures over one batch. Every rate is over all ``n_total`` candidates."""

    model_config = ConfigDict(extra="forbid")

    n_total: int
    structural_validity: Rate
    compositional_validity: Rate
    stable: Rate = Field(description=f"E_hull <= {STABLE_E_HULL} eV/atom (CHGNet-evaluated)")
    on_hull: Rate = Field(description="E_hull <= 0 eV/atom (CHGNet-evaluated)")
    unique: Rate
    novel: Rate
    sun: Rate = Field(description="stable and unique and novel")
    stable_threshold: float = STABLE_E_HULL
    energy_model: str = Field("CHGNet 0.3.0", description="what produced the energies behind 'stable'")


def batch_measures(
    *,
    struct_valid: Sequence[bool],
    comp_valid: Sequence[bool],
    e_hull: Sequence[float | None],
    unique: Sequence[bool],
    novel: Sequence[bool],
    stable_threshold: float = STABLE_E_HULL,
    energy_model: str = "CHGNet 0.3.0",
) -> BatchMeasures:
    """Aggregate per-candidate judgements into rates (all sequences have one item per candidate)."""
    n = len(e_hull)
    for name, seq in [("struct_valid", struct_valid), ("comp_valid", comp_valid), ("unique", unique), ("novel", novel)]:
        if len(seq) != n:
            raise ValueError(f"{name} has {len(seq)} items, e_hull has {n}")
    stable = [is_stable(e, threshold=stable_threshold) for e in e_hull]
    on_hull = [is_on_hull(e) for e in e_hull]
    sun = [s and u and v for s, u, v in zip(stable, unique, novel)]
    return BatchMeasures(
        n_total=n,
        structural_validity=Rate.of(sum(map(bool, struct_valid)), n),
        compositional_validity=Rate.of(sum(map(bool, comp_valid)), n),
        stable=Rate.of(sum(stable), n),
        on_hull=Rate.of(sum(on_hull), n),
        unique=Rate.of(sum(map(bool, unique)), n),
        novel=Rate.of(sum(map(bool, novel)), n),
        sun=Rate.of(sum(sun), n),
        stable_threshold=stable_threshold,
        energy_model=energy_model,
    )


# ---------------------------------------------------------------------------------------------- statistics


class ProportionTest(BaseModel):
    """One-sided two-proportion z-test of H1: p_guided > p_unguided (pooled standard error)."""

    model_config = ConfigDict(extra="forbid")

    k_guided: int
    n_guided: int
    k_unguided: int
    n_unguided: int
    p_guided: float | None
    p_unguided: float | None
    z: float | None
    p_value: float | None = Field(description="one-sided; None when undefined (n = 0 or pooled share 0 or 1)")


def two_proportion_z_test(k_guided: int, n_guided: int, k_unguided: int, n_unguided: int) -> ProportionTest:
    """Guidance effect: is the guided share meeting the target larger than the unguided one?"""
    p1 = k_guided / n_guided if n_guided else None
    p2 = k_unguided / n_unguided if n_unguided else None
    z = p_value = None
    if n_guided and n_unguided:
        pooled = (k_guided + k_unguided) / (n_guided + n_unguided)
        se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_guided + 1.0 / n_unguided))
        if se > 0.0 and p1 is not None and p2 is not None:
            z = (p1 - p2) / se
            p_value = 0.5 * math.erfc(z / math.sqrt(2.0))  # the normal upper tail, norm.sf(z)
    return ProportionTest(k_guided=k_guided, n_guided=n_guided, k_unguided=k_unguided, n_unguided=n_unguided,
                          p_guided=p1, p_unguided=p2, z=z, p_value=p_value)


def density_g_cm3(structure: Structure) -> float:
    """Mass density in g/cm^3."""
    return float(structure.density)


def n_elements(structure: Structure) -> int:
    """Number of distinct elements."""
    return len(structure.composition.elements)


class PropertyDistances(BaseModel):
    """CDVAE's distribution distances between generated and reference structures (1-D Wasserstein)."""

    model_config = ConfigDict(extra="forbid")

    wdist_density: float = Field(description="g/cm^3")
    wdist_n_elements: float = Field(description="number of distinct elements")
    n_generated: int
    n_reference: int


def property_distances(generated: Sequence[Structure], reference: Sequence[Structure]) -> PropertyDistances:
    """Wasserstein distances of density and element count between two non-empty sets of structures."""
    if not generated or not reference:
        raise ValueError("property distances need at least one generated and one reference structure")
    from scipy.stats import wasserstein_distance  # here: scipy.stats costs ~1 s at start-up of every store command

    return PropertyDistances(
        wdist_density=float(wasserstein_distance([density_g_cm3(s) for s in generated],
                                                 [density_g_cm3(s) for s in reference])),
        wdist_n_elements=float(wasserstein_distance(np.array([n_elements(s) for s in generated], dtype=float),
                                                    np.array([n_elements(s) for s in reference], dtype=float))),
        n_generated=len(generated),
        n_reference=len(reference),
    )
