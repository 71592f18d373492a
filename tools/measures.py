"""The measures of ARCHITECTURE.md, defined once. Everything that reports a rate imports it from here.

- structural validity (CDVAE): every periodic interatomic distance > 0.5 A and cell volume > 0.1 A^3.
- compositional validity (CDVAE): SMACT charge neutrality with the Pauling electronegativity test
  (:func:`smact_check`, :func:`compositional_validity`), unchanged so that the "SMACT %" of the generator
  benchmark stays comparable with the literature. It accepts LiCoO4 (O-1) and LiCoO3 (Co+5).
- charge check (Tessera's, chemistry-aware; used by the prescreen's charge stage and by plausibility):
  :func:`charge_check`, charge balance on common oxidation states (ICSD 2024 share >= 0.5%) with mixed
  valence; peroxide, superoxide, persulfide and polyhalide states only for atoms the structure shows in
  like-anion bonds (O-O 1.20-1.60 A, ...). LiCoO4 fails; BaO2 and KO2 pass as structures.
- stable: E_hull <= 0.1 eV/atom against the reference hull (MatterGen's threshold; CHGNet-relaxed
  energies here, so say "CHGNet-evaluated" beside every number); also reported: E_hull <= 0.
- unique: no StructureMatcher match earlier in the batch (the first of a group of duplicates counts
  as unique, so unique rate = distinct structures / total).
- novel: no StructureMatcher match in the reference pool.
- stability levels: stable (E_hull <= 0.1), on the hull (E_hull <= 0), confirmed (a second potential,
  SevenNet, relaxed from the first judge's structure, also gives E_hull <= 0.1: :func:`is_confirmed`).
- prototype-novel: no match in the pool even with species ignored (tools/analyze.py).
- plausible: :func:`plausibility`; not charge-balanced by :func:`charge_check` AND anion-rich (more anion
  charge than the cations can carry, e.g. LiCoO4, or more anions per cation than any pool compound, e.g.
  CdI10) is flagged, not dropped.
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


# ---------------------------------------------------------------------------------------------- charge check
# Tessera's chemistry-aware charge check. NOT the CDVAE measure above: smact_check / compositional_validity keep
# CDVAE's rule unchanged (SMACT 2014 states, one state per element), so the generator benchmark's "SMACT %"
# stays comparable with the literature. charge_check is what the prescreen's charge stage and the plausibility
# flag use.

COMMON_STATE_MIN_SHARE: float = 0.005
"""An oxidation state is "common" for an element when it makes up at least this share of the element's non-zero
ICSD (2024) assignments (SMACT's ``oxidation_states_icsd24_counts.json``). At 0.5%: Fe +2 +3 +4, Co +1..+4,
Mn +2 +3 +4 +7, Ni +1..+4, O -2 (peroxide O-1 is 0.4% of O's assignments and is left to the structure anyway).
On the pool's 9,778 MP ground states the structure-aware check passes 90.8% (CDVAE's SMACT rule: 89.7%; 116
ground states lose, mostly metal-rich subnitrides, suboxides and cluster halides; 230 gain, mostly polysulfides,
polyselenides, polytellurides, superoxides and mixed-valence oxides); 1% would drop permanganates (Mn+7 is 0.7%)."""

CHARGE_ANIONS: frozenset[str] = frozenset({"N", "O", "F", "Cl", "Br", "I", "S", "Se", "Te"})
"""A composition with none of these is judged by CDVAE's SMACT rule instead (intermetallics, borides, silicides,
carbides, hydrides: charge balance on common states says little about them)."""

CLOSED_SHELL: dict[str, int] = {"O": -2, "S": -2, "Se": -2, "Te": -2, "F": -1, "Cl": -1, "Br": -1, "I": -1}
"""Chalcogens and halogens: without a like-atom bond their only negative state is the closed-shell anion."""

POLYANION_BONDS: dict[str, tuple[float, float]] = {
    # Windows centred on the polyanion bond lengths with about +-0.15-0.3 A of tolerance; each upper end lies
    # below the shortest non-bonded X...X contacts. Measured in the pool's DFT structures (data/pool.parquet):
    # O-O superoxides 1.35-1.36, Rb2O3 1.38-1.41, peroxides 1.50-1.52, then no pair between 1.60 and 2.0
    # except one at 1.73 (oxide O...O contacts start near 2.1); S-S in MS2 pyrites 2.10-2.17 (OsS2 2.28), none
    # between 2.33 and 2.5; Se-Se 2.27-2.60; Cl-Cl in NaCl3 2.20, then none below 2.69; Br3- 2.52; I3- 2.88-2.90;
    # N-N azides 1.18-1.19, diazenides 1.23-1.28, pernitrides up to 1.52, none between 1.52 and 1.7.
    "O": (1.20, 1.60),   # superoxide O2- ~1.33 A, peroxide O2 2- ~1.49 A
    "S": (1.90, 2.40),   # persulfide S2 2- ~2.05-2.2 A
    "Se": (2.20, 2.70),  # Se2 2- ~2.35-2.6 A
    "Te": (2.60, 3.10),  # Te2 2- ~2.75-2.9 A
    "Cl": (1.90, 2.40),  # Cl3- ~2.2-2.3 A (Cl2 1.99 A)
    "Br": (2.20, 2.80),  # Br3- ~2.5-2.6 A (Br2 2.28 A)
    "I": (2.60, 3.30),   # I3- ~2.9 A, asymmetric up to ~3.3 A (I2 2.67 A)
    "N": (1.05, 1.55),   # azide N3- ~1.18 A, diazenide N2 2- ~1.25 A, pernitride N2 4- ~1.4 A
}
"""Element -> (shortest, longest) X-X distance in A that counts as a bond between two anions of X."""

POLYANION_STATES: dict[str, tuple[float, ...]] = {
    "O": (-1.0, -0.5),                 # peroxide O2 2-, superoxide O2-
    "S": (-1.0, -0.5), "Se": (-1.0, -0.5), "Te": (-1.0, -0.5),  # X2 2-; longer chains X_n 2- by mixing
    "Cl": (-1.0, -0.5, 0.0), "Br": (-1.0, -0.5, 0.0), "I": (-1.0, -0.5, 0.0),  # X3- = (-1/2, -1/2, 0); X2 = 0
    "N": (-1.0, -0.5, 0.0),            # azide N3- = (-1, 0, 0)
}
"""The extra formal states (per atom) an X atom may take when it is bonded to another X (:data:`POLYANION_BONDS`)."""

_POLYANION_NAMES: dict[str, str] = {"O": "peroxide/superoxide O-O", "S": "persulfide S-S", "Se": "Se-Se",
                                    "Te": "Te-Te", "Cl": "polychloride Cl-Cl", "Br": "polybromide Br-Br",
                                    "I": "polyiodide I-I", "N": "N-N"}


@lru_cache(maxsize=1)
def _icsd24_counts() -> dict[str, dict[int, int]]:
    """Element -> {oxidation state: ICSD 2024 reports}, from SMACT's data file (read once; smact is not imported)."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.find_spec("smact")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the smact package is not installed: its ICSD oxidation-state counts are needed")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "oxidation_states_icsd24_counts.json"
    counts: dict[str, dict[int, int]] = {}
    for row in json.loads(path.read_text()):
        if row["results_count"] > 0:
            counts.setdefault(row["element"], {})[int(row["oxidation_state"])] = int(row["results_count"])
    return counts


@lru_cache(maxsize=4096)
def common_oxidation_states(symbol: str, *, min_share: float = COMMON_STATE_MIN_SHARE) -> tuple[int, ...]:
    """The element's non-zero oxidation states that make up >= ``min_share`` of its non-zero ICSD 2024 reports.

    Falls back on pymatgen's ``Element.common_oxidation_states`` for an element ICSD has no count for. Sorted.
    """
    from pymatgen.core import Element

    reports = {s: n for s, n in _icsd24_counts().get(symbol, {}).items() if s != 0}
    total = sum(reports.values())
    if total:
        return tuple(sorted(s for s, n in reports.items() if n / total >= min_share))
    try:
        return tuple(sorted(int(s) for s in Element(symbol).common_oxidation_states))
    except ValueError:
        return ()


def polyanion_atoms(structure: Structure) -> dict[str, tuple[int, float]]:
    """Anion elements bonded to themselves at polyanion distance (:data:`POLYANION_BONDS`).

    Returns:
        element -> (number of its sites with at least one like neighbour inside the window, the shortest such
        distance in A); elements without such a pair are absent. Periodic images count.
    """
    present = {el.symbol for el in structure.composition.elements} & set(POLYANION_BONDS)
    if not present or len(structure) == 0:
        return {}
    cutoff = max(POLYANION_BONDS[x][1] for x in present)
    centers, points, _, distances = structure.get_neighbor_list(r=cutoff, exclude_self=True)
    symbols = [site.specie.symbol for site in structure]
    bonded: dict[str, set[int]] = {}
    shortest: dict[str, float] = {}
    for i, j, d in zip(centers, points, distances):
        x = symbols[int(i)]
        if x not in present or symbols[int(j)] != x:
            continue
        lo, hi = POLYANION_BONDS[x]
        if lo <= float(d) <= hi:
            bonded.setdefault(x, set()).add(int(i))
            shortest[x] = min(shortest.get(x, math.inf), float(d))
    return {x: (len(sites), shortest[x]) for x, sites in bonded.items()}


@lru_cache(maxsize=65536)
def _sums(states: tuple[int, ...], n: int) -> frozenset[int]:
    """Every total of ``n`` atoms each taking one of ``states`` (mixed valence allowed)."""
    reach = {0}
    for _ in range(n):
        reach = {r + s for r in reach for s in states}
    return frozenset(reach)


def _pauling(symbol: str) -> float | None:
    from pymatgen.core import Element

    x = Element(symbol).X
    return float(x) if x is not None and math.isfinite(x) else None


def _fmt_state(half_total: int, n: int) -> str:
    """Average oxidation state of ``n`` atoms whose states sum to ``half_total`` half units: "+3", "-0.5", "+2.67"."""
    value = half_total / (2 * n)
    return f"{int(value):+d}" if value == int(value) else f"{value:+.2f}"


def _fmt_half(half: int) -> str:
    return f"{half // 2:+d}" if half % 2 == 0 else f"{half / 2:+.1f}"


@lru_cache(maxsize=65536)
def _charge_verdict(
    symbols: tuple[str, ...], counts: tuple[int, ...], bonded: tuple[int, ...], min_share: float,
    use_pauling_test: bool,
) -> tuple[bool, str, str | None]:
    """(balanced, reason, anion excess) for counts with ``bonded`` atoms per element in like-atom bonds.

    The third item is set when no electronegativity-consistent split into cations and anions lets the cations,
    each at its highest common state, carry the anions' charge at their least negative admitted states (LiCoO4:
    "+5 < 8"); None otherwise.
    """
    # Oxidation states in half units (superoxide O is -1/2). Each element is either a cation (its positive common
    # states) or an anion (its negative ones), never both; within a side its atoms may mix states (Mn3O4, Fe3O4).
    sides: list[list[tuple[str, frozenset[int], int]]] = []
    for s, n, nb in zip(symbols, counts, bonded):
        states = common_oxidation_states(s, min_share=min_share)
        if not states:
            return False, f"no known oxidation states for {s}", None
        reports = _icsd24_counts().get(s, {})
        options: list[tuple[str, frozenset[int], int]] = []  # (side, reachable totals, the usual total)
        pos = tuple(2 * o for o in states if o > 0)
        if pos:
            options.append(("+", _sums(pos, n), max(pos, key=lambda h: reports.get(h // 2, 0)) * n))
        neg = (2 * CLOSED_SHELL[s],) if s in CLOSED_SHELL else tuple(2 * o for o in states if o < 0)
        if neg:
            totals = _sums(neg, n - nb)
            if nb:
                extra = tuple(sorted(set(neg) | {int(round(2 * o)) for o in POLYANION_STATES.get(s, ())}))
                totals = frozenset(a + b for a in totals for b in _sums(extra, nb))
            options.append(("-", totals, max(neg, key=lambda h: reports.get(h // 2, 0)) * n))
        if not options:
            return False, f"no non-zero oxidation state for {s}", None
        sides.append(options)
    enegs = [_pauling(s) for s in symbols]
    neutral_found = False
    best_gap: tuple[int, int, int] | None = None  # (cation max - anion min, cation max, anion min), half units
    for choice in itertools.product(*sides):
        signs = [c[0] for c in choice]
        if "+" not in signs or "-" not in signs:
            continue
        cat = [e for e, g in zip(enegs, signs) if g == "+" and e is not None]
        an = [e for e, g in zip(enegs, signs) if g == "-" and e is not None]
        pauling_ok = not (use_pauling_test and cat and an and max(cat) >= min(an))
        if pauling_ok:
            q_cat = sum(max(t) for g, t, _ in choice if g == "+")
            q_an = -sum(max(t) for g, t, _ in choice if g == "-")
            if best_gap is None or q_cat - q_an > best_gap[0]:
                best_gap = (q_cat - q_an, q_cat, q_an)
        # Partial charge sum -> (distance from every element's usual state so far, previous sum, this total): the
        # assignment reported is the one closest to the usual states (LiFePO4: Fe+2 P+5, not Fe+4 P+3).
        reach: dict[int, tuple[int, int, int]] = {0: (0, 0, 0)}
        layers: list[dict[int, tuple[int, int, int]]] = []
        for _, totals, usual in choice:
            nxt: dict[int, tuple[int, int, int]] = {}
            for partial, (cost, _, _) in reach.items():
                for t in totals:
                    q, c = partial + t, cost + abs(t - usual)
                    if q not in nxt or c < nxt[q][0]:
                        nxt[q] = (c, partial, t)
            layers.append(nxt)
            reach = nxt
        if 0 not in reach:
            continue
        neutral_found = True
        if not pauling_ok:
            continue
        parts: list[int] = []
        key = 0
        for layer in reversed(layers):
            _, key, t = layer[key]
            parts.append(t)
        parts.reverse()
        text = " ".join(f"{s}{_fmt_state(t, n)}" for s, n, t in zip(symbols, counts, parts))
        return True, f"charge-balanced with common oxidation states: {text}", None
    excess = None
    if best_gap is not None and best_gap[0] < 0:
        excess = f"cations carry at most {_fmt_half(best_gap[1])}, anions need at least {_fmt_half(-best_gap[2])}"
    if neutral_found:
        return (False, "every charge-balanced assignment of common oxidation states fails the electronegativity test",
                excess)
    return False, "no charge-balanced assignment of common oxidation states", excess


class _Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    balanced: bool
    reason: str
    anion_excess: str | None = None
    judged_by: str = "common"


def _charge_judgement(
    subject: Composition | Structure | str, *, min_share: float, use_pauling_test: bool, include_alloys: bool,
) -> _Verdict:
    structure = subject if isinstance(subject, Structure) else None
    comp = structure.composition if structure is not None else (
        Composition(subject) if isinstance(subject, str) else subject)
    symbols, counts = _reduced_counts(comp)
    if len(symbols) == 1:
        return _Verdict(balanced=True, reason="elemental")
    if not set(symbols) & CHARGE_ANIONS:
        ok, why = smact_check(comp, use_pauling_test=use_pauling_test, include_alloys=include_alloys)
        return _Verdict(balanced=ok, reason=f"no N, O, halogen or chalcogen: CDVAE's SMACT rule, {why}", judged_by="smact")
    bonds = polyanion_atoms(structure) if structure is not None else {}
    if bonds:
        # The whole cell, reduced by the common divisor of the element counts and the bonded-atom counts.
        full = comp.element_composition
        cell = [int(round(full[s])) for s in symbols]
        nb = [bonds.get(s, (0, 0.0))[0] for s in symbols]
        g = math.gcd(*cell, *[b for b in nb if b])
        counts, bonded = tuple(c // g for c in cell), tuple(b // g for b in nb)
    else:
        bonded = tuple(0 for _ in symbols)
    ok, reason, excess = _charge_verdict(symbols, counts, bonded, float(min_share), use_pauling_test)
    found = "; ".join(f"{_POLYANION_NAMES[x]} bonds on {n} atom(s), shortest {d:.2f} A"
                      for x, (n, d) in sorted(bonds.items()))
    if not ok:
        gated = [s for s in symbols if s in POLYANION_STATES and s not in bonds]
        if gated:
            every = tuple(c if s in gated else b for s, c, b in zip(symbols, counts, bonded))
            if _charge_verdict(symbols, counts, every, float(min_share), use_pauling_test)[0]:
                needs = " or ".join(f"{_POLYANION_NAMES[x]} bonds of {POLYANION_BONDS[x][0]:.2f}-"
                                    f"{POLYANION_BONDS[x][1]:.2f} A" for x in gated)
                where = "the structure has none" if structure is not None else "a composition alone shows none"
                reason += f"; balancing it needs {needs}, and {where}"
    if found:
        reason += f" ({found})"
    return _Verdict(balanced=ok, reason=reason, anion_excess=None if ok else excess)


def charge_check(
    subject: Composition | Structure | str,
    *,
    min_share: float = COMMON_STATE_MIN_SHARE,
    use_pauling_test: bool = True,
    include_alloys: bool = True,
) -> tuple[bool, str]:
    """Tessera's chemistry-aware charge check; NOT CDVAE's compositional validity (that is :func:`smact_check`).

    Used by the prescreen's charge stage and the plausibility flag. Charge balance on COMMON oxidation states
    (:func:`common_oxidation_states`: ICSD 2024 share >= ``min_share``), with mixed valence (Mn3O4 = Mn+2
    Mn+3 Mn+3, Fe3O4) and the Pauling electronegativity test (every cation less electronegative than every
    anion). Chalcogens and halogens take only their closed-shell anion state (O-2, S-2, Cl-1, ...) unless the
    STRUCTURE shows them bonded to each other at polyanion distance (:data:`POLYANION_BONDS`; for O-O the
    window is 1.20-1.60 A around superoxide ~1.33 A and peroxide ~1.49 A); only those bonded atoms may take
    the polyanion states (:data:`POLYANION_STATES`: O-1 peroxide, O-1/2 superoxide, S-1, I-1/3, ...). So LiCoO4
    fails (Co would need +7, or O-1 without an O-O bond), while Li2O2, BaO2 and KO2 pass as structures with
    their O-O pairs and fail as bare compositions. Compositions with no N, O, halogen or chalcogen
    (intermetallics, borides, silicides, carbides) are judged by CDVAE's SMACT rule, all-metal ones pass
    (``include_alloys``).

    Args:
        subject: a Structure (structure-aware: polyanion states for the atoms in like-atom bonds) or a
            composition / formula (composition only: no polyanion states).
        min_share: the ICSD share at or above which a state is common.
        use_pauling_test: apply the electronegativity ordering test.
        include_alloys: all-metal compositions (SMACT's metals) pass outright, as in CDVAE.

    Returns:
        (balanced, reason): the reason names an assignment (average state per element, e.g. ``Mn+2.67``) or
        why none passed, and the like-atom bonds found.

    Raises:
        InputError: a non-integer composition.
    """
    v = _charge_judgement(subject, min_share=min_share, use_pauling_test=use_pauling_test, include_alloys=include_alloys)
    return v.balanced, v.reason + (f"; {v.anion_excess}" if v.anion_excess else "")


def is_charge_balanced(subject: Composition | Structure | str) -> bool:
    """Tessera's chemistry-aware charge check (see :func:`charge_check`)."""
    return charge_check(subject)[0]


# ---------------------------------------------------------------------------------------------- stability


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


def plausibility(composition: Composition | Structure | str) -> tuple[bool, str]:
    """Would a chemist take this to DFT? (plausible, reason). A flag shown beside a hit, not a filter.

    Judged by Tessera's chemistry-aware :func:`charge_check` (structure-aware when given a Structure: peroxide,
    superoxide, persulfide and polyhalide states only for atoms in like-anion bonds). Implausible when, for
    some anion, there are more of its atoms per non-anion atom than in any pool compound
    (:func:`pool_anion_ratio_limits`; CdI10, SbCl11, even with polyiodide bonds), or when it is not
    charge-balanced and its anions carry more charge than the cations can balance at their highest common
    states (over-oxidised: LiCoO4 needs Co+7 or an O-O bond; KO2 as a bare composition). A metal-rich
    composition that fails the balance (a suboxide, a subnitride, an intermetallic with P or As) stays
    plausible: its bonding is partly metallic.
    """
    subject = composition
    comp = subject.composition if isinstance(subject, Structure) else (
        Composition(subject) if isinstance(subject, str) else subject)
    ratios = _anion_ratios(comp)
    if not ratios:
        return True, "no anion-cation pair to judge"
    verdict = _charge_judgement(subject, min_share=COMMON_STATE_MIN_SHARE, use_pauling_test=True, include_alloys=True)
    limits = pool_anion_ratio_limits()
    beyond = [f"{a} {r:.3g} > {limits.get(a, 0.0):.3g}" for a, r in ratios.items() if r > limits.get(a, 0.0) + 1e-9]
    if verdict.balanced:
        if beyond:
            return False, (f"more anions per cation than any pool compound ({'; '.join(beyond)}), though "
                           f"{verdict.reason}")
        return True, verdict.reason
    why: list[str] = []
    if verdict.anion_excess:
        why.append(f"more anion charge than the cations can carry ({verdict.anion_excess})")
    if beyond:
        why.append(f"more anions per cation than any pool compound ({'; '.join(beyond)})")
    if why:
        return False, (f"no charge-neutral assignment of common oxidation states, and {'; '.join(why)}. "
                       f"Charge check: {verdict.reason}")
    return True, f"not charge-balanced, but not anion-rich (metal-rich or mixed bonding). Charge check: {verdict.reason}"


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
