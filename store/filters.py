"""The SQL filter every store query takes, and the normalisers that make user input comparable.

Pure functions (no store): formulas become pymatgen reduced formulas, element lists become sorted
validated symbols, and ``candidate_filter`` joins the conditions into one LanceDB ``where`` string.
"""

from __future__ import annotations

import itertools
import re
from typing import Iterable

import numpy as np
from pymatgen.core import Composition, Element

from tessera.store.schema import REVIEW_STATUSES
from tessera.tools.errors import InputError


def sql_str(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b', ...)`` with every value quoted."""
    return f"{column} IN (" + ", ".join(sql_str(v) for v in values) + ")"


def normalise_formula(formula: str) -> str:
    """'Co Li O2', 'LiCoO2', 'Li2Co2O4' -> 'LiCoO2' (pymatgen reduced formula)."""
    try:
        comp = Composition(formula)
    except (ValueError, KeyError) as exc:
        raise InputError(f"not a chemical formula: {formula!r}") from exc
    if comp.num_atoms == 0 or not all(isinstance(el, Element) for el in comp.elements):
        raise InputError(f"not a chemical formula: {formula!r}")
    return comp.reduced_formula


def normalise_elements(elements: Iterable[str] | str) -> list[str]:
    """'Li,O' / 'Li-O' / ['o', 'Li'] -> ['Li', 'O'] (validated symbols, sorted)."""
    items = re.split(r"[,\-\s]+", elements) if isinstance(elements, str) else list(elements)
    out: set[str] = set()
    for item in items:
        sym = item.strip()
        if not sym:
            continue
        sym = sym[0].upper() + sym[1:].lower()
        if not Element.is_valid_symbol(sym):
            raise InputError(f"not an element symbol: {item!r}")
        out.add(sym)
    if not out:
        raise InputError("no elements given")
    return sorted(out)


def candidate_filter(
    *,
    formula: str | None = None,
    elements: Iterable[str] | str | None = None,
    chemsys: str | None = None,
    within: str | None = None,
    max_e_hull: float | None = None,
    run_id: str | None = None,
    review_status: str | None = None,
    stable: bool | None = None,
    novel: bool | None = None,
    unique: bool | None = None,
    round: int | None = None,
) -> str | None:
    """A SQL filter over the candidates table; None when no condition is given.

    formula: reduced formula, exact. elements: the candidate contains all of them (and maybe more).
    chemsys: exactly this chemical system ('Li-Co-O', any order). within: any subsystem of it
    (Li, Co-O, Li-Co-O, ...). max_e_hull: E_hull <= this (eV/atom; rows without E_hull are excluded).
    """
    parts: list[str] = []
    if formula:
        parts.append(f"formula = {sql_str(normalise_formula(formula))}")
    if elements:
        syms = normalise_elements(elements)
        parts.append("array_has_all(elements, make_array(" + ", ".join(sql_str(s) for s in syms) + "))")
    if chemsys:
        parts.append(f"chemsys = {sql_str('-'.join(normalise_elements(chemsys)))}")
    if within:
        syms = normalise_elements(within)
        if len(syms) > 10:
            raise InputError("--within takes at most 10 elements")
        subs = ["-".join(c) for n in range(1, len(syms) + 1) for c in itertools.combinations(syms, n)]
        parts.append(sql_in("chemsys", subs))
    if max_e_hull is not None:
        if not np.isfinite(max_e_hull):
            raise InputError("--max-e-hull must be a finite number (eV/atom)")
        parts.append(f"e_hull <= {float(max_e_hull)!r}")
    if run_id:
        parts.append(f"run_id = {sql_str(run_id)}")
    if review_status:
        if review_status not in REVIEW_STATUSES:
            raise InputError(f"review status must be one of {', '.join(REVIEW_STATUSES)}, got {review_status!r}")
        parts.append(f"review_status = {sql_str(review_status)}")
    for name, flag in (("stable", stable), ("novel", novel), ("unique", unique)):
        if flag is not None:
            parts.append(f"{name} = {'true' if flag else 'false'}")
    if round is not None:
        parts.append(f"round = {int(round)}")
    return " AND ".join(parts) if parts else None


__all__ = ["candidate_filter", "normalise_elements", "normalise_formula", "sql_in", "sql_str"]
