"""`tessera store ...`, `tessera review ...`, `tessera audit ...`: the candidate store and the audit trail.

Every command takes ``--store DIR`` (default: ``$TESSERA_STORE``, else ``~/.local/share/tessera/store``)
and ``--json``. Results (tables, verdicts) go to stdout, diagnostics to stderr (see tessera.cli.common); ``--json``
prints one object on stdout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, fail, out_console
from tessera.tools.errors import TesseraError

if TYPE_CHECKING:
    from rich.table import Table

store_app = typer.Typer(help="Search and export the candidate store.", no_args_is_help=True)
review_app = typer.Typer(help="Record a chemist's decision on a candidate (also an audit event).", no_args_is_help=True)
audit_app = typer.Typer(help="Read, verify and export a run's tamper-evident audit log.", no_args_is_help=True)
app.add_typer(store_app, name="store")
app.add_typer(review_app, name="review")
app.add_typer(audit_app, name="audit")

STORE_OPTION = typer.Option(
    None, "--store", help="store directory or URI (default: $TESSERA_STORE, else ~/.local/share/tessera/store)"
)


def _open(store: Optional[str]):  # noqa: ANN202 - returns store.Store; imported lazily to keep `tessera --help` fast
    from tessera.store import Store

    return Store.open(store, create=False)


SUN_LEGEND = ("S U N: stable (E_hull <= 0.1 eV/atom, CHGNet vs the reference hull), unique in its run, novel "
              "against the reference pool; y yes, n no, - not reached (the candidate stopped earlier: see 'stopped')")


def _stopped(c) -> str:  # noqa: ANN001 - a StoredCandidate
    """Why a candidate went no further: its failed prescreen stage or its error, shortened."""
    if c.prescreen_failed_stage:
        return f"{c.prescreen_failed_stage} prescreen"
    if c.error:
        return c.error if len(c.error) <= 60 else c.error[:57] + "..."
    return ""


def _candidates_table(rows: list, *, title: str, show_distance: bool = False) -> "Table":
    from rich.table import Table

    runs = {c.run_id for c in rows}
    show_run = len(runs) > 1
    if len(runs) == 1:
        title += f" (run {next(iter(runs))})"
    t = Table(title=title, show_lines=False, caption=SUN_LEGEND, caption_justify="left")
    columns = (["id"] + (["run"] if show_run else [])
               + ["formula", "sg", "atoms", "E (eV/at)", "E_hull", "S U N", "stopped", "review"]
               + (["distance"] if show_distance else []))
    for col in columns:
        t.add_column(col, overflow="fold")

    def f(x, d=3):  # noqa: ANN001, ANN202
        return "-" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))

    def flag(x):  # noqa: ANN001, ANN202
        return "-" if x is None else ("y" if x else "n")

    for c in rows:
        review = c.review_status + (f": {c.review_note}" if c.review_note else "")
        cells = [c.id] + ([c.run_id] if show_run else []) + [
            c.formula or "-", c.spacegroup or "-", f(c.n_atoms), f(c.energy_per_atom),
            f(c.e_hull), f"{flag(c.stable)} {flag(c.unique)} {flag(c.novel)}", _stopped(c), review,
        ]
        if show_distance:
            cells.append(f(c.distance, 4))
        t.add_row(*cells)
    return t


def _filters(formula, elements, chemsys, within, max_e_hull, run, status) -> dict:
    return dict(
        formula=formula, elements=elements, chemsys=chemsys, within=within, max_e_hull=max_e_hull, run_id=run,
        review_status=status,
    )


FORMULA = typer.Option(None, "--formula", help="reduced formula, e.g. LiCoO2")
ELEMENTS = typer.Option(None, "--elements", help="contains all of these, e.g. Li,O")
CHEMSYS = typer.Option(None, "--chemsys", help="exactly this chemical system, e.g. Li-Co-O")
WITHIN = typer.Option(None, "--within", help="any subsystem of this chemical system, e.g. Li-Co-O")
MAX_EHULL = typer.Option(None, "--max-e-hull", help="E_hull ceiling, eV/atom")
RUN = typer.Option(None, "--run", help="run id")
STATUS = typer.Option(None, "--status", help="review status: pending, approved or rejected")


@store_app.command("search")
def store_search(
    formula: Optional[str] = FORMULA,
    elements: Optional[str] = ELEMENTS,
    chemsys: Optional[str] = CHEMSYS,
    within: Optional[str] = WITHIN,
    max_e_hull: Optional[float] = MAX_EHULL,
    run: Optional[str] = RUN,
    status: Optional[str] = STATUS,
    like: Optional[Path] = typer.Option(None, "--like", help="structure file: nearest neighbours of it"),
    limit: int = typer.Option(20, "--limit", "-k", min=1, help="how many to show"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Find candidates by formula, elements, chemical system, E_hull, run or review status.

    With --like FILE: the most similar stored structures (fingerprint distance, 0 = identical).
    """
    try:
        st = _open(store)
        filt = _filters(formula, elements, chemsys, within, max_e_hull, run, status)
        if like is not None:
            from tessera.tools.io import read_structures

            if not like.exists():
                fail(f"--like {like}: no such file")
            read = read_structures([like])  # the hardened reader: one line for a bad file, never a traceback
            if not read.structures:
                fail(f"--like {read.errors[0] if read.errors else f'{like}: not a structure file'}")
            query = read.structures[0]
            rows = st.nearest(query, k=limit, **filt)
            total = None
        else:
            rows = st.search(limit=limit, **filt)
            total = st.count(**filt)
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json({"store": st.location, "total": total, "candidates": [r.model_dump(mode="json") for r in rows]})
        return
    if not rows:
        asked = ", ".join(f"{k}={v}" for k, v in filt.items() if v is not None) or "no filter"
        out_console.print(f"no candidates match ({asked}) in {st.location}", highlight=False)
        return
    title = f"{len(rows)} nearest to {like.name}" if like is not None else f"{len(rows)} of {total} matching"
    out_console.print(_candidates_table(rows, title=title, show_distance=like is not None))


@store_app.command("export")
def store_export(
    fmt: str = typer.Option(..., "--format", help="cif, extxyz, csv, json or vasp"),
    out: Path = typer.Option(..., "--out", "-o", help="file (extxyz, csv, json) or directory (cif, vasp)"),
    ids: Optional[str] = typer.Option(None, "--ids", help="comma-separated candidate ids (else: the filters)"),
    formula: Optional[str] = FORMULA,
    elements: Optional[str] = ELEMENTS,
    chemsys: Optional[str] = CHEMSYS,
    within: Optional[str] = WITHIN,
    max_e_hull: Optional[float] = MAX_EHULL,
    run: Optional[str] = RUN,
    status: Optional[str] = STATUS,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most this many (most stable first)"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Export candidates (most stable first) as CIF, extended XYZ, CSV, JSON or VASP inputs.

    vasp: MPRelaxSet INCAR, KPOINTS, POSCAR per candidate plus POTCAR.spec (POTCARs are VASP-licensed
    and not shipped: assemble them from the symbols listed).
    """
    from tessera.store.export import export_candidates

    try:
        st = _open(store)
        if ids:
            rows = [st.get(i.strip(), run_id=run) for i in ids.split(",") if i.strip()]
        else:
            filt = _filters(formula, elements, chemsys, within, max_e_hull, run, status)
            rows = st.search(limit=limit, with_record=True, **filt)
        if not rows:
            fail("no candidates match; nothing exported")
        result = export_candidates(rows, fmt=fmt, out=out)
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json(result.model_dump(mode="json"))
        return
    out_console.print(f"exported {result.n_written} candidates as {fmt} to {result.out}")
    for s in result.skipped:
        out_console.print(f"  skipped {s}")
    if result.note:
        out_console.print(f"note: {result.note}")


@store_app.command("runs")
def store_runs(
    limit: int = typer.Option(30, "--limit", min=1),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """List runs, newest first."""
    try:
        st = _open(store)
        runs = st.runs(limit=limit)
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json({"store": st.location, "runs": [r.model_dump(mode="json") for r in runs]})
        return
    from rich.table import Table

    t = Table(title=f"runs in {st.location}")
    for col in ("run", "kind", "status", "started (UTC)", "goal"):
        t.add_column(col, overflow="fold")
    for r in runs:
        t.add_row(r.run_id, r.kind, r.status, f"{r.created_at:%Y-%m-%d %H:%M}" if r.created_at else "–", r.goal or "")
    out_console.print(t)


@store_app.command("optimize")
def store_optimize(
    index: Optional[bool] = typer.Option(
        None, "--index/--no-index",
        help="(re)build the IVF_PQ vector and scalar indexes (default: once the store holds 100k candidates)",
    ),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Compact the tables, drop versions older than 10 minutes, index large stores."""
    try:
        st = _open(store)
        built = st.optimize(index=index)
        versions = st.table_versions()
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json({"store": st.location, "versions": versions, **built})
        return
    extra = " and built the indexes" if built["vector_index"] else ""
    out_console.print(f"optimized {st.location}{extra} (table versions {versions})")


def _review(decision: str, candidate_id: str, note: Optional[str], reviewer: Optional[str], run: Optional[str],
            store: Optional[str], json_out: bool) -> None:
    try:
        st = _open(store)
        row = st.review(candidate_id, decision, reviewer=reviewer, note=note, run_id=run)  # type: ignore[arg-type]
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json(row.model_dump(mode="json"))
        return
    out_console.print(
        f"{decision} {row.id} ({row.formula}, run {row.run_id}) by {row.reviewer}"
        + (f": {row.review_note}" if row.review_note else "")
    )


NOTE = typer.Option(None, "--note", help="why (kept in the audit log)")
REVIEWER = typer.Option(None, "--reviewer", help="who decides (default: $USER)")


@review_app.command("approve")
def review_approve(
    candidate_id: str = typer.Argument(..., help="candidate id"),
    note: Optional[str] = NOTE,
    reviewer: Optional[str] = REVIEWER,
    run: Optional[str] = typer.Option(None, "--run", help="run id, when the id is in several runs"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Approve a candidate (e.g. for synthesis or DFT)."""
    _review("approved", candidate_id, note, reviewer, run, store, json_out)


@review_app.command("reject")
def review_reject(
    candidate_id: str = typer.Argument(..., help="candidate id"),
    note: Optional[str] = NOTE,
    reviewer: Optional[str] = REVIEWER,
    run: Optional[str] = typer.Option(None, "--run", help="run id, when the id is in several runs"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Reject a candidate."""
    _review("rejected", candidate_id, note, reviewer, run, store, json_out)


@audit_app.command("show")
def audit_show(
    run: str = typer.Argument(..., help="run id"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """The run's timeline: every event in order."""
    from tessera.agents.report import summarize_event

    try:
        st = _open(store)
        events = st.audit_log(run).events()
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json({"run_id": run, "events": [ev.model_dump(mode="json") for ev in events]})
        return
    from rich.table import Table

    t = Table(title=f"audit log of {run} ({len(events)} events)")
    for col in ("#", "time (UTC)", "kind", "actor", "what"):
        t.add_column(col, overflow="fold")
    for ev in events:
        t.add_row(str(ev.seq), ev.ts[:19].replace("T", " "), ev.kind, ev.actor, summarize_event(ev))
    out_console.print(t)


@audit_app.command("verify")
def audit_verify(
    run: str = typer.Argument(..., help="run id"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Check the hash chain and that stored candidates and reviews match the log.

    Exit 0 and 'ok', or exit 2 naming the first bad event or record.
    """
    try:
        st = _open(store)
        result = st.verify_run(run)
    except TesseraError as exc:
        fail(str(exc))
    if json_out:
        emit_json(result.model_dump(mode="json"))
    elif result.ok:
        out_console.print(result.line(), highlight=False)
    else:
        out_console.print(f"[bold red]{result.line()}[/]", highlight=False, soft_wrap=True)
    if not result.ok:
        raise typer.Exit(2)


@audit_app.command("export")
def audit_export(
    run: str = typer.Argument(..., help="run id"),
    html_path: Path = typer.Option(..., "--html", help="report file to write (not an existing folder)"),
    max_pictures: int = typer.Option(60, "--max-pictures", min=0, help="structure pictures for the most stable N"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing report file"),
    store: Optional[str] = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """An offline HTML report of a run: verdict, numbers, plots, structures, timeline."""
    _check_report_path(html_path, force=force)  # before seconds of rendering, not after
    from tessera.agents.report import write_run_report

    try:
        st = _open(store)
        record = st.get_run(run)
        verdict = st.verify_run(run)
        events = st.audit_log(run).events() if verdict.ok else _events_lenient(st, run)
        cands = st.search(run_id=run, limit=None, with_record=True)
        write_run_report(html_path, run=record, events=events, verdict=verdict, candidates=cands,
                         max_pictures=max_pictures)
    except TesseraError as exc:
        fail(str(exc))
    except OSError as exc:  # e.g. the disk filled up or the folder vanished while the report was rendered
        fail(f"--html {html_path}: cannot write the report ({exc.strerror or exc})")
    if json_out:
        emit_json({"run_id": run, "html": str(html_path), "verified": verdict.ok, "n_candidates": len(cands)})
        return
    out_console.print(f"wrote {html_path} ({len(cands)} candidates, audit {'ok' if verdict.ok else 'FAILED'})")


def _check_report_path(path: Path, *, force: bool) -> None:
    """Fail with one line when the report cannot or should not be written at ``path``: an existing folder,
    an existing file (unless ``force``), a parent that is a file, or a folder we may not write in."""
    if path.is_dir():
        fail(f"--html {path} is a folder; name the report file, e.g. --html {path / 'report.html'}")
    if path.exists() and not force:
        fail(f"--html {path} exists; pass --force to overwrite it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the report writer creates missing folders below the nearest existing one
    if not parent.is_dir():
        fail(f"--html {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        fail(f"--html {path}: no permission to write in {parent}")


def _events_lenient(st, run: str) -> list:  # noqa: ANN001
    """Events that still parse, for a report on a log that failed verification (the verdict says so)."""
    from tessera.store.audit import AuditEvent
    from tessera.tools.errors import DataError

    try:
        return st.audit_log(run).events()
    except DataError:
        out = []
        for line in st.audit_log(run).path.read_text(errors="replace").splitlines():
            try:
                out.append(AuditEvent.model_validate_json(line))
            except ValueError:
                continue  # unreadable lines are what the verdict at the top of the report names
        return out
