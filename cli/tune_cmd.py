"""``tessera tune``: Optuna chooses guidance strengths for a DesignSpec (tools/tune.py does the work)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, out_console, progress, run_opener

DEFAULT_OUT = Path("runs") / "tune"  # tools.tune.DEFAULT_OUT (not imported: optuna must stay out of --help)


@app.command("tune")
def tune_command(
    spec: Path = typer.Option(..., "--spec", help="the DesignSpec file (JSON or YAML) whose strengths are tuned"),
    trials: int = typer.Option(..., "--trials", min=0, help="trials this process adds to the study (0: report the "
                               "study as it is, e.g. with --save-spec)"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL shared by workers, e.g. "
                                          "postgresql://user@host/db (default: sqlite:///OUT/STUDY.sqlite3)"),
    study: Optional[str] = typer.Option(None, "--study", help="study name (default: tune-OBJECTIVE-<spec hash>)"),
    objective: str = typer.Option("yield", "--objective", help="yield (S.U.N.-C per CPU-second) or pareto "
                                  "(constraint share vs unrelaxed E_hull estimate, no relaxation)"),
    pilot: int = typer.Option(8, "--pilot", min=1, max=256, help="crystals sampled per trial"),
    steps: int = typer.Option(100, "--steps", min=1, help="reverse sampling steps per trial"),
    relax: int = typer.Option(4, "--relax", min=0, help="relaxations per trial at most, best-first (yield)"),
    relax_steps: Optional[int] = typer.Option(None, "--relax-steps", min=1,
                                              help="FIRE steps per relaxation (default: configs/relax.yaml)"),
    seed: int = typer.Option(0, "--seed", help="Optuna sampler seed; give each worker of a shared study its own "
                             "(the pilot crystals always use the spec's seed)"),
    space: Optional[Path] = typer.Option(None, "--space", help="search-space bounds (default: configs/tune.yaml)"),
    out: Path = typer.Option(DEFAULT_OUT, "--out", help="folder for the SQLite study, pilot crystals and the plot"),
    save_spec: Optional[Path] = typer.Option(None, "--save-spec", help="write the spec with the chosen guidance "
                                             "options (and motif.release_below) here, .json or .yaml"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the run in a store"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Tune a spec's guidance strengths with Optuna on small pilot batches; print the chosen values.

    Each trial samples --pilot crystals at --steps with the trial's strengths (the spec's seed, so trials
    differ only in them). yield: prescreen, relax at most --relax best-first in this process, assess;
    objective S.U.N.-C per CPU-second; a trial whose constraint share after sampling is hopeless is pruned
    before any relaxation. pareto: constraint share vs mean unrelaxed CHGNet E_hull estimate, plotted to
    OUT/STUDY_pareto.png. A second run with the same spec and options adds trials to the same study.
    Look at a study in optuna-dashboard (a separate package: pip install optuna-dashboard):

    \b
      optuna-dashboard sqlite:///runs/tune/STUDY.sqlite3
    """
    from tessera.tools.errors import InputError
    from tessera.tools.spec import load_spec
    from tessera.tools.tune import TuneParams, load_tune_space, tune

    if objective not in ("yield", "pareto"):
        raise InputError(f"--objective {objective}: choose yield or pareto")
    design = load_spec(spec)
    params = TuneParams(spec=design, trials=trials, objective=objective, study=study, storage=storage, out=out,  # type: ignore[arg-type]
                        pilot=pilot, steps=steps, relax=relax, relax_steps=relax_steps, seed=seed, threads=threads,
                        space=load_tune_space(space), save_spec=save_spec)
    opener = run_opener(store, no_store=no_store)
    warn = lambda m: err_console.print(f"[yellow]warning:[/] {m}", highlight=False)  # noqa: E731
    bar = progress(transient=True)
    task = bar.add_task("tune", total=trials)

    def on_stage(number: int, what: str) -> None:
        bar.update(task, description=what if number < 0 else f"trial {number}: {what}")

    def on_trial(report: Any) -> None:
        bar.advance(task)
        if not json_out:
            bar.console.print(_trial_line(report, objective), highlight=False)

    if not json_out:  # under --json stderr stays quiet but for warnings and errors
        bar.start()
    try:
        result = tune(params, open_run=opener, on_trial=on_trial, on_stage=on_stage, on_warning=warn)
    finally:
        bar.stop()
    if json_out:
        emit_json(result.payload())
        return
    _print_result(result)


def _trial_line(report: Any, objective: str) -> str:
    if report.state != "complete":
        share = f", share {report.share:.2f}" if report.share is not None else ""
        return f"trial {report.number}: {report.state}{share}"
    if objective == "yield":
        return (f"trial {report.number}: {report.n_sun_c} S.U.N.-C in {report.cpu_seconds:.1f} CPU s "
                f"({report.values[0]:.4f}/s), share {report.share:.2f}")
    return f"trial {report.number}: share {report.values[0]:.2f}, E_hull estimate {report.values[1]:.3f} eV/atom"


def _print_result(result: Any) -> None:
    from rich.table import Table

    yield_mode = result.params.objective == "yield"
    table = Table(title=f"tessera tune: study {result.study}, trials of this run", title_justify="left")
    cols = ["trial", "state", "share"] + (["relaxed", "S.U.N.-C", "CPU s", "S.U.N.-C / CPU-h"] if yield_mode
                                          else ["E_hull est. (eV/atom)", "CPU s"])
    for col in cols:
        table.add_column(col, justify="right" if col not in ("state",) else "left")

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for t in result.trials:
        row = [str(t.number) + (" (spec)" if t.baseline else ""), t.state, num(t.share, ".2f")]
        if yield_mode:
            row += [num(t.n_relaxed, "d"), num(t.n_sun_c, "d"), num(t.cpu_seconds, ".1f"), num(t.sun_c_per_cpu_hour, ".1f")]
        else:
            row += [num(t.mean_ehull_estimate, ".3f"), num(t.cpu_seconds, ".1f")]
        table.add_row(*row)
    if result.trials:  # --trials 0 reports the study as it is
        out_console.print(table)
    out_console.print(f"study {result.study}: {result.n_trials} trials ({result.n_complete} complete, "
                      f"{result.n_pruned} pruned, {result.n_failed} failed) in {result.storage}",
                      highlight=False, soft_wrap=True)
    c = result.chosen
    if c is not None:
        what = (f"{c.values[0] * 3600:.1f} S.U.N.-C per CPU-hour" if yield_mode
                else f"share {c.values[0]:.2f}, E_hull estimate {c.values[1]:.3f} eV/atom")
        out_console.print(f"chosen: trial {c.trial} ({what})", highlight=False)
        if c.guidance_options is not None:
            g = c.guidance_options
            out_console.print(f"  guidance: scale {g.scale:.3g}, backward_steps {g.backward_steps}, backward_lr "
                              f"{g.backward_lr:.3g}, recurrence {g.recurrence}, every {g.every}, schedule {g.schedule}",
                              highlight=False)
        if c.release_below is not None:
            out_console.print(f"  motif.release_below {c.release_below:.3f}", highlight=False)
        if c.ehull_ceiling is not None:
            out_console.print(f"  prescreen E_hull ceiling {c.ehull_ceiling:.2f} eV/atom (ehull.ceiling in "
                              f"configs/prescreen.yaml)", highlight=False)
    b = result.baseline
    if b is not None and b.values is not None and yield_mode:
        out_console.print(f"spec's own values: trial {b.number}, {b.values[0] * 3600:.1f} S.U.N.-C per CPU-hour",
                          highlight=False)
    if result.saved_spec is not None:
        out_console.print(f"wrote {result.saved_spec} (spec {result.saved_spec_hash[:12]})", highlight=False)
    if result.plot is not None:
        out_console.print(f"Pareto front: {result.plot}", highlight=False)
    out_console.print(f"dashboard: {result.dashboard}" + (f"; run {result.run_id}" if result.run_id else ""),
                      highlight=False, soft_wrap=True)
