"""``tessera evaluate PATH... [--out DIR] [--store DIR] [--json]``: judge structures from files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, fail, progress
from contextlib import nullcontext

from tessera.agents.recording import evaluation_run, finish_evaluation
from tessera.tools.candidate import Candidate
from tessera.tools.errors import TesseraError
from tessera.tools.evaluate import EvalStep, EvaluateParams, EvaluateSummary, candidates_from_paths, evaluate
from tessera.tools.prescreen import load_prescreen_params
from tessera.tools.relax import load_relax_params


def run_evaluation(
    candidates: list[Candidate],
    params: EvaluateParams,
    *,
    out_dir: Path,
    quiet: bool,
    also: "Callable[[EvalStep], None] | None" = None,
) -> EvaluateSummary:
    """Evaluate with Rich progress bars (one per stage) on stderr."""
    with progress(transient=False) as bar:
        n = len(candidates)
        tasks = {
            "prescreen": bar.add_task("prescreen", total=n),
            "relax": bar.add_task("relax (CHGNet)", total=None),
            "hull": bar.add_task("hull", total=None),
            "analyze": bar.add_task("analyze", total=None),
        }
        if quiet:
            bar.stop()
        relax_total = 0

        def on_step(step: EvalStep) -> None:
            nonlocal relax_total
            if step.stage == "prescreen":
                bar.advance(tasks["prescreen"])
                if step.candidate is not None and step.candidate.error is None:
                    relax_total += 1
                    bar.update(tasks["relax"], total=relax_total)
                    bar.update(tasks["hull"], total=relax_total)
            elif step.stage in tasks:
                bar.advance(tasks[step.stage])
            if step.stage == "analyze":
                bar.update(tasks["analyze"], total=n)
            if also is not None:
                also(step)

        return evaluate(candidates, params, out_dir=out_dir, on_step=on_step)


@app.command("evaluate")
def evaluate_command(
    paths: list[Path] = typer.Argument(..., help="structure files or folders (CIF, POSCAR, extxyz, pymatgen JSON)"),
    out: Path = typer.Option(Path("tessera_eval"), "--out", help="output folder for candidates.jsonl and summary.json"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the run in a store"),
    gate: bool = typer.Option(False, "--gate", help="every prescreen stage gates relaxation (default: only geometry)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="local Dask workers (default one per core; 0 = serial)"),
    address: Optional[str] = typer.Option(None, "--address", help="join an existing Dask cluster at this scheduler address"),
    fmax: Optional[float] = typer.Option(None, "--fmax", help="relaxation force threshold, eV/A"),
    steps: Optional[int] = typer.Option(None, "--steps", help="relaxation step limit"),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="wall-time limit per relaxation, s"),
    stable_threshold: float = typer.Option(0.1, "--stable-threshold", help="E_hull ceiling for 'stable', eV/atom"),
    exclude_id: list[str] = typer.Option([], "--exclude-id", help="material id to leave out of hull and novelty pool"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Prescreen, relax (CHGNet), hull and analyze the given structures; write OUT/candidates.jsonl."""
    payload, candidates, summary = evaluate_paths(
        paths, out=out, store=store, no_store=no_store, gate=gate, workers=workers, address=address, fmax=fmax,
        steps=steps, max_seconds=max_seconds, stable_threshold=stable_threshold, exclude_id=exclude_id,
        quiet=json_out,
    )
    if json_out:
        emit_json(payload)
    else:
        print_table(candidates, summary, out, payload["run_id"])


def evaluate_paths(
    paths: list[Path],
    *,
    out: Path,
    store: Optional[str],
    no_store: bool = False,
    gate: bool = False,
    workers: Optional[int] = None,
    address: Optional[str] = None,
    fmax: Optional[float] = None,
    steps: Optional[int] = None,
    max_seconds: Optional[float] = None,
    stable_threshold: float = 0.1,
    exclude_id: list[str] | None = None,
    quiet: bool = False,
) -> tuple[dict, list[Candidate], EvaluateSummary]:
    """Evaluate structure files, recording the run unless ``no_store``; exits with one line on a TesseraError.

    Returns the --json payload, the candidates and the summary.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    relax = load_relax_params()
    overrides = {k: v for k, v in {"fmax": fmax, "steps": steps, "max_seconds": max_seconds}.items() if v is not None}
    try:
        params = EvaluateParams(
            gate=gate,
            prescreen=load_prescreen_params(),
            relax=relax.model_copy(update=overrides),
            stable_threshold=stable_threshold,
            exclude_ids=list(exclude_id or []),
            workers=workers,
            address=address,
        )
        candidates = candidates_from_paths(paths)
        if not candidates:
            fail(f"no structure files found in {', '.join(str(p) for p in paths)}")
        for c in candidates:
            if c.error is not None and not quiet:
                err_console.print(f"[yellow]skipped:[/] {c.error}", highlight=False, soft_wrap=True)
        run_id = None
        recording = (nullcontext(None) if no_store
                     else evaluation_run(store, params, inputs=[str(p) for p in paths]))
        with recording as recorder:
            summary = run_evaluation(
                candidates, params, out_dir=out, quiet=quiet, also=recorder.on_step if recorder else None
            )
            if recorder is not None:
                run_id = finish_evaluation(recorder, candidates, summary, out_dir=out)
    except TesseraError as exc:
        fail(str(exc))
    payload = {"out": str(out / "candidates.jsonl"), "run_id": run_id, **summary.model_dump(exclude={"params"})}
    return payload, candidates, summary


def print_table(candidates: list[Candidate], summary: EvaluateSummary, out: Path, run_id: str | None) -> None:
    from rich.table import Table

    table = Table(title=f"tessera evaluate: {summary.n_inputs} inputs in {summary.seconds:.0f} s")
    for col in ("source", "formula", "relaxed", "E_hull (eV/atom)", "stable", "novel", "spacegroup", "error"):
        table.add_column(col, overflow="fold")
    for c in candidates:
        table.add_row(
            Path(c.source).name,
            c.formula or "",
            "yes" if c.relaxed else "no",
            f"{c.e_hull:.3f}" if c.e_hull is not None else "",
            {True: "yes", False: "no", None: ""}[c.stable],
            {True: "yes", False: "no", None: ""}[c.novel],
            c.spacegroup or "",
            (c.error or "").replace(c.source + ": ", "").replace(c.source, Path(c.source).name),
        )
    err_console.print(table)
    err_console.print(
        f"stable {summary.n_stable}/{summary.n_inputs} (E_hull <= {summary.params.stable_threshold} eV/atom, CHGNet), "
        f"S.U.N. {summary.n_sun}; written {out / 'candidates.jsonl'}" + (f"; run {run_id}" if run_id else "")
    )
