"""An offline HTML report of one run for a chemist: verdict, numbers, plots, structures, timeline.

Everything is in one file (pictures are base64 PNG from matplotlib), so it opens without a network
and can be archived next to the lab notebook. It reads the store only through ``tessera.store``'s
public records (RunRecord, StoredCandidate, AuditEvent, VerifyResult); the caller fetches them.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is written on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tessera.store import AuditEvent, RunRecord, StoredCandidate, VerifyResult  # noqa: E402
from tessera.tools.measures import STABLE_E_HULL  # noqa: E402


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


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def structure_png(candidate: StoredCandidate) -> str | None:
    """A picture of the cell (two projections, jmol colours) as a data URI; None without a structure."""
    from ase.visualize.plot import plot_atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        atoms = AseAtomsAdaptor.get_atoms(candidate.structure())
    except (ValueError, TypeError, KeyError):
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


def _ehull_histogram(values: list[float]) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 3.0))
    arr = np.clip(np.asarray(values, dtype=float), -0.5, 1.5)
    ax.hist(arr, bins=40, color="#4472c4", edgecolor="white")
    ax.axvline(0.0, color="k", lw=1, label="on the hull")
    ax.axvline(STABLE_E_HULL, color="#c00000", lw=1, ls="--", label=f"{STABLE_E_HULL} eV/atom")
    ax.set_xlabel("E_hull (eV/atom, CHGNet-relaxed; clipped to [-0.5, 1.5])")
    ax.set_ylabel("candidates")
    ax.legend(fontsize=8)
    return _png(fig)


def _funnel(cands: list[StoredCandidate]) -> str:
    stages: dict[str, int] = {}
    for c in cands:
        if c.prescreen_failed_stage:
            stages[c.prescreen_failed_stage] = stages.get(c.prescreen_failed_stage, 0) + 1
    labels = ["candidates", *[f"failed {s}" for s in stages], "relaxed", "E_hull known", "stable", "E_hull <= 0",
              "confirmed", "S.U.N.", "S.U.N. confirmed"]
    counts = [
        len(cands), *stages.values(), sum(bool(c.relaxed) for c in cands), sum(c.e_hull is not None for c in cands),
        sum(bool(c.stable) for c in cands), sum(bool(c.on_hull) for c in cands), sum(bool(c.confirmed) for c in cands),
        sum(bool(c.stable and c.unique and c.novel) for c in cands),
        sum(bool(c.confirmed and c.unique and c.novel) for c in cands),
    ]
    fig, ax = plt.subplots(figsize=(5.5, 0.35 * len(labels) + 0.8))
    ax.barh(labels[::-1], counts[::-1], color="#70ad47")
    for y, v in enumerate(counts[::-1]):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("count")
    return _png(fig)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3} .ok{color:#176f2c;font-weight:bold} .bad{color:#b00020;font-weight:bold}
.card{display:flex;gap:1em;border:1px solid #ddd;margin:.6em 0;padding:.5em;border-radius:6px}
.card img{width:420px} pre{white-space:pre-wrap;font-size:.8em;background:#f8f8f8;padding:.5em;margin:0}
.muted{color:#666;font-size:.85em}
"""


def render_run_report(
    *,
    run: RunRecord,
    events: list[AuditEvent],
    verdict: VerifyResult,
    candidates: list[StoredCandidate],
    max_pictures: int = 60,
    intro_html: str = "",
) -> str:
    """The report as one HTML string. ``candidates`` should be sorted (most stable first) and fetched
    with their records; pictures are drawn for the first ``max_pictures``. ``intro_html`` (already
    escaped HTML, e.g. :func:`session_section`) goes after the run's header table."""
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
    ]
    out.append("<h2>Numbers</h2><p class='muted'>Energies are CHGNet-relaxed (a machine-learned potential, "
               "not DFT); E_hull against the shipped reference hull.</p>")
    out.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in stats) + "</table>")
    if candidates:
        out.append("<h2>Plots</h2>")
        if ehull:
            out.append(f"<img alt='E_hull histogram' src='{_ehull_histogram(ehull)}'>")
        out.append(f"<img alt='funnel' src='{_funnel(candidates)}'>")

    out.append(f"<h2>Candidates</h2><p class='muted'>Most stable first; pictures for the first {max_pictures}.</p>")
    for i, c in enumerate(candidates):
        pic = structure_png(c) if i < max_pictures else None
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
        out.append(f"<div class='card' id='c-{e(c.id)}'>{img}{table}</div>")

    out.append("<h2>Timeline</h2><p class='muted'>Every event of the run in order; each stores the hash of "
               "the one before it (SHA-256 chain).</p><table><tr><th>#</th><th>time (UTC)</th><th>kind</th>"
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


def write_run_report(path: Path, **kwargs: Any) -> Path:
    """Render and write the report; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_run_report(**kwargs), encoding="utf-8")
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
    ax.yaxis.get_major_locator().set_params(integer=True)  # counts, not fractions
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
