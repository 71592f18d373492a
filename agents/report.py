"""An offline HTML report of one run for a chemist: verdict, numbers, plots, structures, timeline.

Everything but the structure files is in one HTML file (pictures are base64 PNG from matplotlib), so it
opens without a network and can be archived next to the lab notebook; :func:`write_run_report` writes each
candidate's symmetrised CIF into ``<report stem>_files/`` beside it, linked relatively (keep the two
together). It reads the store only through ``tessera.store``'s public records (RunRecord, StoredCandidate,
AuditEvent, VerifyResult); the caller fetches them.

Per candidate the report shows what a reviewer asks next: the lattice parameters, density and volume per
atom of the final structure, an oxidation-state assignment, every prescreen stage's value and reason, the
matched or nearest known phase of the reference pool, the hull phases that set its E_hull (the
decomposition) and a link to its CIF. The costly parts (pictures, decompositions, the nearest-phase search,
pymatgen's oxidation-state guess) are done for the first ``max_pictures`` candidates only.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tessera.store import AuditEvent, RunRecord, StoredCandidate, VerifyResult  # noqa: E402
from tessera.tools.candidate import Candidate, StageOutcome  # noqa: E402
from tessera.tools.errors import TesseraError  # noqa: E402
from tessera.tools.measures import STABLE_E_HULL  # noqa: E402

PRESCREEN_ORDER: tuple[str, ...] = ("charge", "geometry", "ehull", "stability_model")
"""The prescreen's stage order (tools.prescreen): a stored first failure after geometry means geometry passed."""
STAGE_VALUES: dict[str, str] = {
    "geometry": "shortest distance / (r_i + r_j)",
    "ehull": "eV/atom, unrelaxed single-point estimate",
    "stability_model": "eV/atom, predicted relaxed E_hull",
}
"""What each stage's ``value`` is, in its unit."""


def summarize_event(ev: AuditEvent) -> str:
    """One line describing an event, for timelines."""
    p = ev.payload
    k = ev.kind
    if k == "run_started":
        return f"{p.get('kind')} run started" + (f"; goal: {p.get('goal')}" if p.get("goal") else "")
    if k == "goal":
        return f"goal: {p.get('goal')}"
    if k == "plan":
        reason = str(p.get("reasoning") or "")
        return "plan" + (f": {reason[:160]}" if reason else "")
    if k == "llm_call":
        secs = p.get("seconds")
        return f"LLM call to {p.get('model')}" + (f" ({secs:.2f} s)" if isinstance(secs, (int, float)) else "")
    if k == "tool_call":
        secs = p.get("seconds")
        s = f"{p.get('tool')}" + (f" ({secs:.2f} s)" if isinstance(secs, (int, float)) else "")
        return s + (f" FAILED: {p.get('error')}" if p.get("error") else "")
    if k == "candidates_recorded":
        return f"recorded {p.get('count')} candidates (round {p.get('round')})"
    if k == "human_decision":
        s = f"{p.get('decision')} {p.get('candidate_id')} ({p.get('formula')}) by {p.get('reviewer')}"
        return s + (f": {p.get('note')}" if p.get("note") else "")
    if k == "run_finished":
        return f"run {p.get('status')}, {p.get('n_candidates')} candidates"
    if k == "error":
        return f"error: {p.get('message')}"
    if k == "log_repaired":
        return f"log repaired: dropped {p.get('dropped_bytes')} bytes of an interrupted write"
    keys = ", ".join(list(p)[:6])
    return f"{k}" + (f" ({keys})" if keys else "")


# ---------------------------------------------------------------------------------------------- plots


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def count_axis(axis: Any) -> None:
    """Ticks at whole numbers only: the axis counts candidates (matplotlib would put 0.2, 0.4, ... on a
    histogram whose bins hold one or two)."""
    axis.set_major_locator(MaxNLocator(integer=True))


def structure_png(candidate: StoredCandidate) -> str | None:
    """A picture of the cell (two projections, jmol colours) as a data URI; None without a structure."""
    from ase.visualize.plot import plot_atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        atoms = AseAtomsAdaptor.get_atoms(candidate.structure())
    except (TesseraError, ValueError, TypeError, KeyError):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(5.2, 2.6))
    for ax, rot in zip(axes, ("10x,20y,0z", "-80x,0y,0z")):
        plot_atoms(atoms, ax, radii=0.45, rotation=rot, show_unit_cell=2)
        ax.set_axis_off()
    from ase.data import atomic_numbers
    from ase.data.colors import jmol_colors
    from matplotlib.lines import Line2D

    symbols = sorted(set(atoms.get_chemical_symbols()), key=lambda sym: atomic_numbers[sym])
    handles = [
        Line2D([], [], marker="o", ls="", markersize=8, markeredgecolor="k",
               markerfacecolor=jmol_colors[atomic_numbers[sym]], label=sym)
        for sym in symbols
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"{candidate.formula}", fontsize=9)
    return _png(fig)


def ehull_histogram_figure(values: Sequence[float]) -> Any:
    """The E_hull histogram (eV/atom, clipped to [-0.5, 1.5]) as a matplotlib Figure; y counts candidates."""
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    arr = np.clip(np.asarray(values, dtype=float), -0.5, 1.5)
    ax.hist(arr, bins=40, color="#4472c4", edgecolor="white")
    ax.axvline(0.0, color="k", lw=1, label="on the hull")
    ax.axvline(STABLE_E_HULL, color="#c00000", lw=1, ls="--", label=f"{STABLE_E_HULL} eV/atom")
    ax.set_xlabel("E_hull (eV/atom, CHGNet-relaxed; clipped to [-0.5, 1.5])")
    ax.set_ylabel("candidates")
    count_axis(ax.yaxis)
    ax.legend(fontsize=8)
    return fig


def funnel_figure(stages: Sequence[tuple[str, int]]) -> Any:
    """The funnel (label, count) top to bottom as horizontal bars; x counts candidates."""
    labels = [s for s, _ in stages]
    counts = [n for _, n in stages]
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(labels) + 0.8))
    ax.barh(labels[::-1], counts[::-1], color="#70ad47")
    for y, v in enumerate(counts[::-1]):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("candidates")
    count_axis(ax.xaxis)
    return fig


# ---------------------------------------------------------------------------------------------- funnel


def run_gated(run: RunRecord) -> bool | None:
    """Whether every prescreen stage gated relaxation in this run: the run's params ``gate`` (an evaluate
    run's own, a design session's under ``options``); None when the params do not say."""
    params = run.params or {}
    options = params.get("options")
    for holder in (params, options if isinstance(options, dict) else {}):
        gate = holder.get("gate")
        if isinstance(gate, bool):
            return gate
    return None


def _record(c: StoredCandidate) -> Candidate | None:
    """The full record when it was fetched and parses (the prescreen outcomes, matched ids)."""
    if c.candidate_json is None:
        return None
    try:
        return c.candidate()
    except (TesseraError, ValueError):
        return None


def _passed_geometry(c: StoredCandidate, rec: Candidate | None) -> bool:
    if rec is not None and rec.prescreen:
        outcome = rec.prescreen.get("geometry")
        return bool(outcome is not None and outcome.passed)
    # Light row only: the stored first failure; one after geometry in the stage order means geometry passed.
    after = PRESCREEN_ORDER[PRESCREEN_ORDER.index("geometry") + 1:]
    return bool(c.prescreen_passed) or c.prescreen_failed_stage in after


def _passed_every_stage(c: StoredCandidate, rec: Candidate | None) -> bool:
    if rec is not None and rec.prescreen:
        return all(o.passed for o in rec.prescreen.values())
    return bool(c.prescreen_passed)


def funnel_stages(
    candidates: Sequence[StoredCandidate], *, gated: bool | None, records: Sequence[Candidate | None] | None = None,
) -> list[tuple[str, int]]:
    """(label, count) from the inputs down to S.U.N. Each stage is a subset of the one before, except that
    the E_hull stage counts every relaxed candidate with an energy, converged or not, and S.U.N. does not
    need the second judge (confirmed).

    ``passed every prescreen stage`` appears only in a gated run: ungated, only the geometry stage stops a
    candidate and the others' failures are listed apart (:func:`prescreen_failures`), since those candidates
    were relaxed all the same."""
    recs = list(records) if records is not None else [_record(c) for c in candidates]
    ehull = [c.e_hull for c in candidates]
    screened = any((r is not None and r.prescreen) or c.prescreen_passed is not None for c, r in zip(candidates, recs))
    stages: list[tuple[str, int]] = [
        ("inputs", len(candidates)),
        ("passed geometry" if screened or not candidates else "passed geometry (no prescreen ran)",
         sum(_passed_geometry(c, r) for c, r in zip(candidates, recs))),
    ]
    if gated:
        stages.append(("passed every prescreen stage", sum(_passed_every_stage(c, r) for c, r in zip(candidates, recs))))
    stages += [
        ("relaxed", sum(bool(c.relaxed) for c in candidates)),
        ("relaxation converged", sum(bool(c.converged) for c in candidates)),
        # Not a subset of "converged": a relaxation that ran out of steps still ends with an energy.
        ("E_hull computed (converged or not)", sum(x is not None for x in ehull)),
        (f"stable (E_hull ≤ {STABLE_E_HULL})", sum(1 for x in ehull if x is not None and x <= STABLE_E_HULL)),
        ("E_hull ≤ 0", sum(1 for x in ehull if x is not None and x <= 0)),
        ("confirmed (second judge)", sum(bool(c.confirmed) for c in candidates)),
        ("S.U.N.", sum(bool(c.stable and c.unique and c.novel) for c in candidates)),
    ]
    return stages


@dataclass
class StageFailures:
    """One prescreen stage over the run: how many it judged and failed, and some failures' reasons."""

    stage: str
    judged: int
    failed: int
    examples: list[tuple[str, str]]  # (candidate id, reason), at most a few


def prescreen_failures(
    candidates: Sequence[StoredCandidate], *, records: Sequence[Candidate | None] | None = None, examples: int = 3,
) -> list[StageFailures]:
    """Per prescreen stage (in the prescreen's order, then any other), the candidates it judged and failed."""
    recs = list(records) if records is not None else [_record(c) for c in candidates]
    out: dict[str, StageFailures] = {}
    for c, rec in zip(candidates, recs):
        if rec is not None and rec.prescreen:
            outcomes = rec.prescreen.items()
        elif c.prescreen_failed_stage:  # light row: its first failure only
            outcomes = [(c.prescreen_failed_stage, StageOutcome(passed=False, reason="(reason in the full record)"))]
        else:
            outcomes = []
        for name, outcome in outcomes:
            row = out.setdefault(name, StageFailures(stage=name, judged=0, failed=0, examples=[]))
            row.judged += 1
            if not outcome.passed:
                row.failed += 1
                if len(row.examples) < examples:
                    row.examples.append((c.id, outcome.reason or "no reason given"))
    rank = {s: i for i, s in enumerate(PRESCREEN_ORDER)}
    return sorted(out.values(), key=lambda r: (rank.get(r.stage, len(rank)), r.stage))


def _gate_sentence(gated: bool | None) -> str:
    if gated is True:
        return ("This run was <b>gated</b>: a candidate that failed any prescreen stage stopped there and was not "
                "relaxed. The stages run in the order listed below, so one stopped by the charge check never reached "
                "the geometry stage and is not counted as having passed it.")
    if gated is False:
        return ("This run was <b>not gated</b>: only the geometry stage stops a candidate. The other prescreen "
                "stages were recorded for information; candidates that failed them were relaxed all the same, so "
                "their failures are listed below, not counted in the funnel.")
    return ("The run's parameters do not say whether the prescreen gated relaxation (no <code>gate</code>); "
            "the funnel counts geometry as the only gate.")


def _funnel_section(candidates: Sequence[StoredCandidate], recs: Sequence[Candidate | None], gated: bool | None) -> str:
    e = html.escape
    stages = funnel_stages(candidates, gated=gated, records=recs)
    out = ["<h3 id='funnel'>Funnel</h3>", f"<p class='gate'>{_gate_sentence(gated)}</p>",
           f"<img alt='funnel' src='{_png(funnel_figure(stages))}'>",
           "<table class='funnel'><tr><th>stage</th><th>candidates</th></tr>"]
    out += [f"<tr><td>{e(label)}</td><td>{n}</td></tr>" for label, n in stages]
    out.append("</table>")
    failures = prescreen_failures(candidates, records=recs)
    if failures:
        out.append("<h4>Prescreen stages: failures and reasons</h4><table class='failures'><tr><th>stage</th>"
                   "<th>judged</th><th>failed</th><th>effect of a failure</th><th>examples (id: reason)</th></tr>")
        for row in failures:
            stops = gated or row.stage == "geometry"
            effect = "stopped: not relaxed" if stops else "recorded only: relaxed all the same"
            ex = "<br>".join(f"<code>{e(cid)}</code>: {e(reason)}" for cid, reason in row.examples) or "–"
            out.append(f"<tr><td>{e(row.stage)}</td><td>{row.judged}</td><td>{row.failed}</td><td>{effect}</td>"
                       f"<td>{ex}</td></tr>")
        out.append("</table>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- per candidate


def oxidation_states(structure: Any, *, guess: bool = True) -> tuple[str, str]:
    """(assignment, how it was found) for a pymatgen Structure, e.g. ``("Co+3 Li+1 O-2", "Tessera's charge
    check: ...")``. Tessera's chemistry-aware charge check first (:func:`tools.measures.charge_check`, common
    states, O-O bonds seen in the structure); when it names no assignment and ``guess``, pymatgen's
    ``oxi_state_guesses`` (its ICSD-frequency guess) on the reduced composition; else ``"none found"``."""
    from tessera.tools.measures import charge_check

    try:
        ok, reason = charge_check(structure)
    except TesseraError as exc:
        ok, reason = False, str(exc)
    if reason == "elemental":
        return "0 (an element)", "elemental"
    found = re.search(r"common oxidation states: ([^;(]+)", reason)
    if ok and found:
        return found.group(1).strip(), f"Tessera's charge check: {reason}"
    if guess:
        comp = structure.composition.reduced_composition
        try:
            guesses = comp.oxi_state_guesses(max_sites=-24) if comp.num_atoms <= 24 else comp.oxi_state_guesses()
        except (ValueError, KeyError):
            guesses = []
        if guesses:
            text = " ".join(f"{el}{v:+.2g}" for el, v in sorted(guesses[0].items()))
            return text, f"pymatgen's oxi_state_guesses; Tessera's charge check: {reason}"
        return "none found", f"Tessera's charge check: {reason}; pymatgen's oxi_state_guesses found none either"
    return "none found", f"Tessera's charge check: {reason} (pymatgen's guess not tried beyond the first candidates)"


class KnownPhases:
    """The shipped reference pool as known phases: formulas by material id, and the fingerprint-nearest
    pool material within a chemical system (:func:`tools.analyze.match_fingerprint`: volume rescaled, so
    distance compares arrangement and composition, 0 = the same, at most 2). ``exclude_ids`` (held-out
    materials of the run) are not offered."""

    def __init__(self, *, exclude_ids: Sequence[str] = ()) -> None:
        from tessera.tools.pool import load_pool

        df = load_pool(None)[["material_id", "formula", "chemsys", "lattice", "frac_coords", "atomic_numbers"]]
        self._df = df[~df["material_id"].isin(list(exclude_ids))].reset_index(drop=True)
        self.formula: dict[str, str] = dict(zip(df["material_id"].astype(str), df["formula"].astype(str)))
        self._by_system: dict[str, list[int]] = {}
        for pos, system in enumerate(self._df["chemsys"].astype(str)):
            self._by_system.setdefault(system, []).append(pos)
        self._fps: dict[int, np.ndarray] = {}

    def nearest(self, structure: Any) -> tuple[str, str, float] | None:
        """(material id, formula, fingerprint distance) of the nearest pool material with exactly the
        structure's elements; None when the pool has none in that chemical system."""
        from tessera.tools.analyze import match_fingerprint
        from tessera.tools.pool import row_to_structure

        system = "-".join(sorted(el.symbol for el in structure.composition.elements))
        positions = self._by_system.get(system, [])
        if not positions:
            return None
        for p in positions:
            if p not in self._fps:
                self._fps[p] = match_fingerprint(row_to_structure(self._df.iloc[p]))
        fp = match_fingerprint(structure)
        dist = [float(np.linalg.norm(self._fps[p] - fp)) for p in positions]
        k = int(np.argmin(dist))
        row = self._df.iloc[positions[k]]
        return str(row["material_id"]), str(row["formula"]), dist[k]


@lru_cache(maxsize=2)
def _known_phases(exclude_ids: tuple[str, ...]) -> KnownPhases:
    """One pool index per process and held-out set (a session writes a report per run)."""
    return KnownPhases(exclude_ids=exclude_ids)


def _known_phase_html(rec: Candidate | None, structure: Any, pool: KnownPhases | None, *, search: bool) -> str:
    """The matched known phase (novelty's StructureMatcher hit), else the structure type's, else (``search``)
    the fingerprint-nearest pool material of the same chemical system."""
    e = html.escape

    def named(mid: str) -> str:
        formula = pool.formula.get(mid) if pool is not None else None
        return f"<code>{e(mid)}</code>" + (f" ({e(formula)})" if formula else "")

    parts: list[str] = []
    matched = rec.matched_id if rec is not None else None
    proto = rec.prototype_matched_id if rec is not None else None
    if matched:
        parts.append(f"matches {named(matched)} of the reference pool (StructureMatcher): a known phase")
    elif proto:
        parts.append(f"same structure type as {named(proto)} (StructureMatcher with species ignored): an "
                     "element substitution of a known phase")
    if not matched:
        if structure is None:
            parts.append("nearest pool material: not searched (no readable structure)")
        elif not search or pool is None:
            why = "beyond the first candidates" if not search else "the shipped pool is not available"
            parts.append(f"nearest pool material: not searched ({why})")
        else:
            system = "-".join(sorted(el.symbol for el in structure.composition.elements))
            try:
                near, why = pool.nearest(structure), f"the pool has no material in the {system} system"
            except (TesseraError, ValueError) as exc:
                near, why = None, f"the search failed: {exc}"
            if near is None:
                parts.append(f"nearest pool material: none ({e(why)})")
            else:
                mid, formula, dist = near
                parts.append(f"nearest pool material in the {e(system)} system: <code>{e(mid)}</code> ({e(formula)}), "
                             f"fingerprint distance {dist:.3f} (0 = the same arrangement, 2 = unrelated)")
    return "<div class='nearest'><b>Known phase:</b> " + "; ".join(parts) + "</div>"


def _decomposition_html(c: StoredCandidate, structure: Any, hull: Any, deep: bool) -> str:
    e = html.escape
    head = "<div class='decomposition'><b>Hull decomposition</b> (the phases that set E_hull): "
    if not deep:
        return head + "computed for the first candidates only.</div>"
    if structure is None or c.energy_per_atom is None:
        why = c.error or ("not relaxed" if not c.relaxed else "no energy")
        return head + f"not placed on the hull ({e(why)}).</div>"
    if isinstance(hull, str):
        return head + f"the reference hull could not be built ({e(hull)}).</div>"
    try:
        parts = hull.decomposition(structure, c.energy_per_atom)
        today = hull.e_hull_value(structure, c.energy_per_atom)
    except TesseraError as exc:
        return head + f"failed: {e(str(exc))}.</div>"
    rows = "".join(
        f"<tr><td>{e(f)}</td><td>{x:.3f}</td><td><code>{e(mid)}</code>"
        f"{' (elemental reference)' if mid.startswith('element:') else ''}</td></tr>" for f, x, mid in parts)
    mix = " + ".join(f"{x:.2f} {e(f)}" for f, x, _ in parts)
    note = ""
    if c.e_hull is not None and abs(today - c.e_hull) > 1e-3:
        note = (f"<p class='muted'>On today's reference hull this energy gives E_hull {today:.3f} eV/atom (stored: "
                f"{c.e_hull:.3f}): the hull data or settings changed since the run.</p>")
    return (head + f"{mix}<table class='decomp'><tr><th>phase</th><th>fraction of atoms</th><th>id</th></tr>{rows}"
            f"</table>{note}</div>")


def _prescreen_html(rec: Candidate | None, c: StoredCandidate) -> str:
    e = html.escape
    if rec is None:
        return "<table class='prescreen'><tr><td>record not fetched</td></tr></table>"
    if not rec.prescreen:
        return "<table class='prescreen'><tr><td>the prescreen did not run</td></tr></table>"
    rank = {s: i for i, s in enumerate(PRESCREEN_ORDER)}
    rows = []
    for name, o in sorted(rec.prescreen.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])):
        unit = STAGE_VALUES.get(name)
        value = "–" if o.value is None else f"{o.value:.3f}" + (f" <span class='muted'>({e(unit)})</span>" if unit else "")
        cls = "ok" if o.passed else "bad"
        rows.append(f"<tr><td>{e(name)}</td><td class='{cls}'>{'passed' if o.passed else 'failed'}</td>"
                    f"<td>{value}</td><td>{e(o.reason or '')}</td></tr>")
    return ("<table class='prescreen'><tr><th>prescreen stage</th><th>outcome</th><th>value</th><th>reason</th></tr>"
            + "".join(rows) + "</table>")


def _cell_html(structure: Any) -> str:
    if structure is None:
        return "<table class='cell'><tr><td>no readable structure</td></tr></table>"
    lat = structure.lattice
    rows = [("a (Å)", lat.a, 4), ("b (Å)", lat.b, 4), ("c (Å)", lat.c, 4), ("α (°)", lat.alpha, 2),
            ("β (°)", lat.beta, 2), ("γ (°)", lat.gamma, 2)]
    cells = "".join(f"<th>{k}</th>" for k, _, _ in rows)
    vals = "".join(f"<td class='lattice'>{v:.{d}f}</td>" for _, v, d in rows)
    return (f"<table class='cell'><tr>{cells}<th>density (g/cm³)</th><th>volume per atom (Å³)</th></tr>"
            f"<tr>{vals}<td class='density'>{float(structure.density):.3f}</td>"
            f"<td class='volume'>{lat.volume / len(structure):.2f}</td></tr></table>")


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def _card(c: StoredCandidate, rec: Candidate | None, *, deep: bool, hull: Any, pool: KnownPhases | None,
          cif_href: str | None) -> str:
    e = html.escape
    try:
        structure = c.structure()
    except (TesseraError, ValueError):
        structure = None
    pic = structure_png(c) if deep else None
    nums = [
        ("id", c.id), ("formula", c.formula), ("space group", f"{c.spacegroup or '–'} ({c.spacegroup_number or '–'})"),
        ("atoms", c.n_atoms), ("round", c.round), ("energy (eV/atom)", c.energy_per_atom),
        ("E_hull (eV/atom)", c.e_hull), ("stable", c.stable), ("E_hull ≤ 0", c.on_hull),
        ("E_hull, second judge (eV/atom)", c.e_hull_confirm), ("confirmed", c.confirmed),
        ("unique", c.unique), ("novel", c.novel), ("prototype-novel", c.novel_prototype),
        ("plausible composition", c.plausible),
        ("constraints met", c.constraints_satisfied), ("prescreen", "passed" if c.prescreen_passed else
         (f"failed at {c.prescreen_failed_stage}" if c.prescreen_failed_stage else "–")),
        ("relaxation converged", c.converged), ("error", c.error),
        ("review", f"{c.review_status}" + (f" by {c.reviewer}" if c.reviewer else "")
         + (f": {c.review_note}" if c.review_note else "")),
        ("content hash", (c.content_hash or "")[:16]),
    ]
    table = "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in nums) + "</table>"
    img = f"<img alt='structure of {e(c.formula or '')}' src='{pic}'>" if pic else ""
    if structure is not None:
        ox, how = oxidation_states(structure, guess=deep)
        oxidation = f"<div class='oxidation'><b>Oxidation states:</b> {e(ox)} <span class='muted'>({e(how)})</span></div>"
    else:
        oxidation = "<div class='oxidation'><b>Oxidation states:</b> none found (no readable structure)</div>"
    if cif_href:
        cif = f"<p><a class='cif' href='{e(cif_href)}'>CIF (symmetrised, with id and E_hull)</a></p>"
    else:
        cif = "<p class='cif muted'>CIF: not written (written beside the report by write_run_report)</p>"
    details = (
        "<div class='details'><p class='muted'>Final structure (relaxed when relaxation ran):</p>"
        + _cell_html(structure) + oxidation + _prescreen_html(rec, c)
        + _known_phase_html(rec, structure, pool, search=deep)
        + _decomposition_html(c, structure, hull, deep) + cif + "</div>"
    )
    return (f"<div class='card' id='c-{e(c.id)}'><h3>{e(c.formula or '?')} <code>{e(c.id)}</code></h3>"
            f"<div class='cardbody'>{img}{table}{details}</div></div>")


# ---------------------------------------------------------------------------------------------- the page


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;max-width:1300px;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3} .ok{color:#176f2c;font-weight:bold} .bad{color:#b00020;font-weight:bold}
.card{border:1px solid #ddd;margin:.6em 0;padding:.5em;border-radius:6px} .card h3{margin:.1em 0 .4em 0;font-size:1em}
.cardbody{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} .details{font-size:.9em;flex:1;min-width:320px}
.details div{margin:.35em 0}
.card img{width:420px} pre{white-space:pre-wrap;font-size:.8em;background:#f8f8f8;padding:.5em;margin:0}
.muted{color:#666;font-size:.85em}
"""


def _reference_hull(run: RunRecord) -> Any:
    """The hull the run was judged on (its params' hull sources and held-out ids); a string when it cannot be
    built (the reason, shown in place of each decomposition)."""
    from tessera.tools.hull import ReferenceHull

    params = run.params or {}
    sources = params.get("hull_sources")
    exclude = params.get("exclude_ids") or []
    try:
        return ReferenceHull.default(sources=sources if isinstance(sources, list) else None,
                                     exclude_ids=[str(x) for x in exclude] if isinstance(exclude, list) else [])
    except TesseraError as exc:
        return str(exc)


def render_run_report(
    *,
    run: RunRecord,
    events: list[AuditEvent],
    verdict: VerifyResult,
    candidates: list[StoredCandidate],
    max_pictures: int = 60,
    intro_html: str = "",
    cif_links: dict[str, str] | None = None,
) -> str:
    """The report as one HTML string. ``candidates`` should be sorted (most stable first) and fetched
    with their records; pictures, decompositions and the nearest-phase search are done for the first
    ``max_pictures``. ``intro_html`` (already escaped HTML, e.g. :func:`session_section`) goes after the
    run's header table. ``cif_links``: candidate id -> relative URL of its CIF (:func:`write_run_report`
    writes them)."""
    e = html.escape
    out: list[str] = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Tessera run {e(run.run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Tessera run <code>{e(run.run_id)}</code></h1>",
    ]
    cls = "ok" if verdict.ok else "bad"
    out.append(f"<p class='{cls}'>Audit log: {e(verdict.line())}</p>")
    info = [
        ("kind", run.kind), ("status", run.status), ("goal", run.goal), ("started", run.created_at),
        ("finished", run.finished_at), ("code version", run.code_version), ("DesignSpec hash", run.spec_hash),
        ("checkpoint hash", run.checkpoint_hash), ("seed", run.seed), ("user@host", f"{run.user}@{run.host}"),
    ]
    out.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in info) + "</table>")
    if intro_html:
        out.append(intro_html)
    if run.params:
        out.append(f"<details><summary>parameters</summary><pre>{e(json.dumps(run.params, indent=1))}</pre></details>")
    if run.summary:
        out.append(f"<details open><summary>summary</summary><pre>{e(json.dumps(run.summary, indent=1))}</pre></details>")

    recs = [_record(c) for c in candidates]
    gated = run_gated(run)
    n = len(candidates)
    ehull = [c.e_hull for c in candidates if c.e_hull is not None]
    stats = [
        ("candidates", n),
        ("with E_hull", len(ehull)),
        (f"stable (E_hull ≤ {STABLE_E_HULL} eV/atom)", sum(1 for x in ehull if x <= STABLE_E_HULL)),
        ("on or below the hull (E_hull ≤ 0)", sum(1 for x in ehull if x <= 0)),
        ("second judge asked (SevenNet)", sum(c.confirmed is not None for c in candidates)),
        ("confirmed (both judges within the threshold)", sum(bool(c.confirmed) for c in candidates)),
        ("stable, unique and novel (S.U.N.)", sum(bool(c.stable and c.unique and c.novel) for c in candidates)),
        ("S.U.N. with prototype novelty (not an element substitution)",
         sum(bool(c.stable and c.unique and c.novel_prototype) for c in candidates)),
        ("S.U.N. confirmed", sum(bool(c.confirmed and c.unique and c.novel) for c in candidates)),
        ("implausible compositions flagged", sum(c.plausible is False for c in candidates)),
        ("meet the design constraints", sum(bool(c.constraints_satisfied) for c in candidates)),
        ("approved / rejected / pending",
         " / ".join(str(sum(c.review_status == s for c in candidates)) for s in ("approved", "rejected", "pending"))),
        ("prescreen gated relaxation", {True: "yes: every stage", False: "no: geometry only", None: "not recorded"}[gated]),
    ]
    out.append("<h2 id='numbers'>Numbers</h2><p class='muted'>Energies are CHGNet-relaxed (a machine-learned "
               "potential, not DFT); E_hull against the shipped reference hull.</p>")
    out.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in stats) + "</table>")
    if candidates:
        out.append("<h2 id='plots'>Plots</h2>")
        if ehull:
            out.append(f"<img alt='E_hull histogram' src='{_png(ehull_histogram_figure(ehull))}'>")
        out.append(_funnel_section(candidates, recs, gated))

    deep_n = min(max_pictures, n)
    hull: Any = _reference_hull(run) if any(c.energy_per_atom is not None for c in candidates[:deep_n]) else None
    pool: KnownPhases | None = None
    if deep_n or any(r is not None and (r.matched_id or r.prototype_matched_id) for r in recs):
        exclude = (run.params or {}).get("exclude_ids") or []
        try:
            pool = _known_phases(tuple(sorted(str(x) for x in exclude)) if isinstance(exclude, list) else ())
        except TesseraError:
            pool = None  # no shipped pool (a developer checkout without data): each card says not searched
    out.append(f"<h2 id='candidates'>Candidates</h2><p class='muted'>Most stable first; pictures, hull "
               f"decompositions and the nearest-phase search for the first {max_pictures}. CIF links point into "
               f"the folder written beside this file.</p>")
    links = cif_links or {}
    for i, (c, rec) in enumerate(zip(candidates, recs)):
        out.append(_card(c, rec, deep=i < deep_n, hull=hull, pool=pool, cif_href=links.get(c.id)))

    out.append("<h2 id='timeline'>Timeline</h2><p class='muted'>Every event of the run in order; each stores the "
               "hash of the one before it (SHA-256 chain).</p><table><tr><th>#</th><th>time (UTC)</th><th>kind</th>"
               "<th>actor</th><th>what</th><th>hash</th></tr>")
    for ev in events:
        detail = e(json.dumps(ev.payload, indent=1, ensure_ascii=False))
        if len(detail) > 20000:
            detail = detail[:20000] + " …"
        out.append(
            f"<tr><td>{ev.seq}</td><td>{e(ev.ts[:19].replace('T', ' '))}</td><td>{e(ev.kind)}</td>"
            f"<td>{e(ev.actor)}</td><td>{e(summarize_event(ev))}<details><summary>details</summary>"
            f"<pre>{detail}</pre></details></td><td><code>{e(ev.hash[:12])}</code></td></tr>"
        )
    out.append("</table></body></html>")
    return "\n".join(out)


def cif_folder(path: Path) -> Path:
    """The folder beside a report that holds its CIFs: ``<folder>/<stem>_files``."""
    path = Path(path)
    return path.parent / f"{path.stem}_files"


def write_cifs(candidates: Sequence[StoredCandidate], folder: Path) -> dict[str, str]:
    """Each candidate's final structure as a symmetrised CIF with its metadata
    (:func:`tessera.store.export.symmetrized_cif`), ``<folder>/<id>.cif``; returns id -> file name (a
    candidate without a readable structure gets none)."""
    from tessera.store.export import export_metadata, symmetrized_cif

    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for c in candidates:
        try:
            structure = c.structure()
        except (TesseraError, ValueError):
            continue
        name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", c.id) + ".cif"
        (folder / name).write_text(symmetrized_cif(structure, metadata=export_metadata(c)).text, encoding="utf-8")
        names[c.id] = name
    return names


def write_run_report(path: Path, **kwargs: Any) -> Path:
    """Render and write the report, and the candidates' CIFs into :func:`cif_folder` beside it (linked
    relatively); returns the report's path. ``kwargs``: those of :func:`render_run_report`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = cif_folder(path)
    names = write_cifs(kwargs.get("candidates") or [], folder)
    links = {cid: f"{quote(folder.name)}/{quote(name)}" for cid, name in names.items()}
    path.write_text(render_run_report(**kwargs, cif_links=links), encoding="utf-8")
    return path


def run_events(store: Any, run_id: str, verdict: VerifyResult) -> list[AuditEvent]:
    """The run's audit events; on a log that failed verification, the lines that still parse (the verdict
    at the top of the report names the problem)."""
    from tessera.tools.errors import DataError

    log = store.audit_log(run_id)
    if verdict.ok:
        return log.events()
    try:
        return log.events()
    except DataError:
        events = []
        for line in log.path.read_text(errors="replace").splitlines():
            try:
                events.append(AuditEvent.model_validate_json(line))
            except ValueError:
                continue
        return events


def export_run_report(store: Any, run_id: str, path: Path, *, max_pictures: int = 60, intro_html: str = "") -> Path:
    """Fetch a run from ``store`` (verdict, events, candidates most stable first) and write its report."""
    verdict = store.verify_run(run_id)
    return write_run_report(Path(path), run=store.get_run(run_id), events=run_events(store, run_id, verdict),
                            verdict=verdict, candidates=store.search(run_id=run_id, limit=None, with_record=True),
                            max_pictures=max_pictures, intro_html=intro_html)


def _rounds_plot(rounds: list[dict[str, Any]]) -> str:
    """Per round: relaxed, stable and hit counts (bars) and the relaxation hit rate (line)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    idx = np.arange(len(rounds))
    for j, (key, label) in enumerate((("n_relaxed", "relaxed"), ("n_stable", "stable"), ("n_sun", "S.U.N."))):
        ax.bar(idx + (j - 1) * 0.27, [r.get(key) or 0 for r in rounds], width=0.27, label=label)
    ax.set_xticks(idx, [str(r["round"]) for r in rounds])
    count_axis(ax.yaxis)
    ax.set_xlabel("round")
    ax.set_ylabel("candidates")
    ax.legend(loc="upper left", fontsize=8)
    rates = [r.get("hit_rate") for r in rounds]
    if any(x is not None for x in rates):
        ax2 = ax.twinx()
        ax2.plot(idx, [x if x is not None else np.nan for x in rates], "k.-", label="hit rate")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("stable / relaxed")
    fig.tight_layout()
    return _png(fig)


def session_section(
    *,
    goal: str | None,
    spec: dict[str, Any] | None,
    plan: dict[str, Any] | None,
    rounds: list[dict[str, Any]],
    stop_reason: str | None,
) -> str:
    """The design session's part of the report: the goal, how it was read, the spec, the rounds' timeline."""
    e = html.escape
    out = ["<h2>Design session</h2>"]
    if goal:
        out.append(f"<p><b>Goal</b> (as given): <q>{e(goal)}</q></p>")
    if plan:
        out.append(f"<p class='muted'>Planned by {e(str(plan.get('backend', '?')))}.</p>")
        if plan.get("used"):
            out.append("<p>Read from the goal: " + "; ".join(e(str(u)) for u in plan["used"]) + "</p>")
        if plan.get("unused"):
            out.append("<p>Not used: " + ", ".join(e(str(u)) for u in plan["unused"]) + "</p>")
        for note in plan.get("notes") or []:
            out.append(f"<p class='muted'>{e(str(note))}</p>")
    if spec:
        out.append(f"<details open><summary>DesignSpec</summary><pre>{e(json.dumps(spec, indent=1))}</pre></details>")
    if rounds:
        head = ("round", "seed", "sampled", "motif exact", "guidance met", "passed prescreen", "relaxed",
                "motif retained", "stable (<= 0.1)", "E_hull <= 0", "S.U.N.", "S.U.N.-C", "hit rate (stable / relaxed)",
                "model", "seconds")
        keys = ("round", "seed", "n_sampled", "n_motif_exact", "n_guidance_met", "n_prescreen_passed", "n_relaxed",
                "n_motif_retained", "n_stable", "n_on_hull", "n_sun", "n_sun_c", "hit_rate", "model_version", "seconds")
        out.append("<h3>Rounds</h3><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        for r in rounds:
            out.append("<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k in keys) + "</tr>")
        out.append("</table>")
        out.append(f"<img alt='rounds' src='{_rounds_plot(rounds)}'>")
    if stop_reason:
        out.append(f"<p><b>Stopped:</b> {e(stop_reason)}</p>")
    return "\n".join(out)
