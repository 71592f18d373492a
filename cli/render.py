"""Rendering shared by the commands: progress bars for an evaluation and the result table (stderr)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from rich.progress import Progress

from tessera.cli.common import err_console, out_console, progress

if TYPE_CHECKING:
    from tessera.tools.evaluate import EvalStep, EvaluateFilesResult


class EvaluationProgress:
    """An ``on_step`` for :func:`tessera.tools.evaluate.evaluate_files`: one Rich bar per stage on stderr,
    and one line per file that could not be read. Use as a context manager around the job."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Progress = progress(transient=False)
        self.tasks: dict[str, int] = {}
        self.relax_total = 0

    def __enter__(self) -> "EvaluationProgress":
        if not self.quiet:
            self.bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.bar.stop()

    def _task(self, stage: str, label: str, total: int | None) -> int:
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(label, total=total)
        return self.tasks[stage]

    def __call__(self, step: "EvalStep") -> None:
        if step.stage == "read":
            if step.candidate is not None and step.candidate.error is not None and not self.quiet:
                err_console.print(f"[yellow]unreadable:[/] {step.candidate.error}", highlight=False, soft_wrap=True)
            return
        prescreen = self._task("prescreen", "prescreen", step.total)
        relax = self._task("relax", "relax (CHGNet)", None)
        hull = self._task("hull", "hull", None)
        analyze = self._task("analyze", "analyze", None)
        if step.stage == "prescreen":
            self.bar.advance(prescreen)
            if step.candidate is not None and step.candidate.error is None:
                self.relax_total += 1
                self.bar.update(relax, total=self.relax_total)
                self.bar.update(hull, total=self.relax_total)
        elif step.stage == "relax":
            self.bar.advance(relax)
        elif step.stage == "hull":
            self.bar.advance(hull)
        elif step.stage == "confirm":
            self.bar.advance(self._task("confirm", "confirm (SevenNet)", None))
        elif step.stage == "analyze":
            self.bar.update(analyze, total=step.total)
            self.bar.advance(analyze)


def print_evaluation(result: "EvaluateFilesResult") -> None:
    """The per-candidate table and the one-line summary of an evaluation."""
    from rich.table import Table

    summary = result.summary
    table = Table(title=f"tessera evaluate: {summary.n_inputs} inputs in {summary.seconds:.0f} s")
    confirm = summary.params.confirm is not None
    cols = ["source", "formula", "relaxed", "E_hull (eV/atom)", "stable"]
    cols += ["E_hull 2nd judge", "confirmed"] if confirm else []
    cols += ["novel", "proto-novel", "plausible", "spacegroup", "error"]
    for col in cols:
        table.add_column(col, overflow="fold")
    yes = {True: "yes", False: "no", None: ""}
    for c in result.candidates:
        second = [f"{c.e_hull_confirm:.3f}" if c.e_hull_confirm is not None else "", yes[c.confirmed]] if confirm else []
        table.add_row(
            Path(c.source).name,
            c.formula or "",
            "yes" if c.relaxed else "no",
            f"{c.e_hull:.3f}" if c.e_hull is not None else "",
            yes[c.stable],
            *second,
            yes[c.novel],
            yes[c.novel_prototype],
            yes[c.plausible],
            c.spacegroup or "",
            (c.error or "").replace(c.source + ": ", "").replace(c.source, Path(c.source).name),
        )
    out_console.print(table)
    skipped = f"; {len(result.skipped)} files skipped as not structures" if result.skipped else ""
    out_console.print(
        f"stable {summary.n_stable}/{summary.n_inputs} (E_hull <= {summary.params.stable_threshold} eV/atom, CHGNet), "
        f"<= 0: {summary.n_stable_le0}"
        + (f", confirmed by SevenNet {summary.n_confirmed}" if confirm else "")
        + f"; S.U.N. {summary.n_sun} (prototype-novel {summary.n_sun_prototype}"
        + (f", confirmed {summary.n_sun_confirmed}" if confirm else "") + ")"
        + (f"; {summary.n_implausible} implausible composition(s) flagged" if summary.n_implausible else "")
        + f"; written {result.candidates_path}"
        + (f"; run {result.run_id}" if result.run_id else "") + skipped
    )
    if result.constraints is not None:
        cs = result.constraints
        out_console.print(
            f"motif: exact at the end of sampling {cs.n_motif_exact}/{cs.n_constrained}, retained after relaxation "
            f"{cs.n_motif_retained}/{cs.n_relaxed} relaxed; S.U.N.-C {cs.n_sun_c} (stable, unique, novel, motif kept)",
            highlight=False,
        )
