"""``tessera schedule``: run campaigns on their cron schedules (persistent SQLite job store under --root).

Without ``--once`` the scheduler runs until Ctrl-C; ``--once`` runs what is due now (missed runs
included), waits for it and exits, for a cron job or a systemd timer; ``--list`` shows the jobs and their
next run times. Each decision is a line on stderr and in ``<root>/schedule_log.jsonl``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, fail, out_console

if TYPE_CHECKING:
    from tessera.agents.schedule import ScheduledJob, ScheduleEvent, SyncReport


class _StderrLines(logging.Handler):
    """The scheduler's log lines on stderr, time-stamped (UTC)."""

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime(record.created))
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{stamp}[/] {record.getMessage()}", highlight=False, soft_wrap=True)


def _say_progress() -> None:
    logger = logging.getLogger("tessera.agents.schedule")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    # APScheduler's own warnings (a run skipped for max instances) repeat what our log already says.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def _when(job: "ScheduledJob") -> str:
    if job.next_run_time is None:
        return "paused"
    text = job.next_run_time.strftime("%Y-%m-%d %H:%M")
    return f"{text} (due now)" if job.due else text


def _jobs_table(jobs: list["ScheduledJob"], *, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("campaign", "cron (UTC)", "next run (UTC)", "running", "file"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        table.add_row(j.campaign, j.schedule, _when(j), "yes" if j.running else "", j.file)
    return table


def _say_problems(report: "SyncReport | None") -> None:
    for line in report.problems if report is not None else ():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def _event_line(e: "ScheduleEvent") -> str:
    sid = f" {e.session_id}" if e.session_id else ""
    return f"{e.time[:19].replace('T', ' ')}  {e.campaign}  {e.action}{sid}: {e.message}"


@app.command("schedule")
def schedule_command(
    campaigns: Path = typer.Option(Path("configs/campaigns"), "--campaigns",
                                   help="folder of campaign YAML files; those with a `schedule` get a job"),
    root: Optional[Path] = typer.Option(None, "--root", help="campaign sessions, the job store (schedule.sqlite) "
                                        "and schedule_log.jsonl (default: 'campaigns' beside the default store)"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the "
                                        "user data dir)"),
    once: bool = typer.Option(False, "--once", help="run what is due now (missed runs included), wait, exit"),
    list_jobs: bool = typer.Option(False, "--list", help="print the jobs and their next run times, run nothing"),
    workers: int = typer.Option(1, "--workers", min=1, help="campaigns running at the same time at most"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Run campaigns on their cron schedules (UTC); a running campaign is never started twice."""
    from tessera.agents import schedule as sched
    from tessera.agents.campaign import default_campaign_root

    if once and list_jobs:
        fail("--once and --list: choose one", 2)
    if json_out and not (once or list_jobs):
        fail("--json needs --once or --list (the running scheduler reports on stderr)", 2)
    root = root if root is not None else default_campaign_root()

    if list_jobs:
        report, jobs = sched.list_jobs(campaigns, root, store)
        if json_out:
            emit_json({"jobs": [j.model_dump(mode="json") for j in jobs],
                       "sync": None if report is None else report.model_dump(mode="json")})
            return
        _say_problems(report)
        if report is None:
            err_console.print(f"a scheduler is running on {root}: the jobs as it stored them", highlight=False)
        if not jobs:
            out_console.print(f"No scheduled campaigns (no file in {campaigns} has a schedule).", highlight=False)
            return
        out_console.print(_jobs_table(jobs, title="Scheduled campaigns"))
        return

    _say_progress()
    if once:
        result = sched.run_due(campaigns, root, store, workers=workers)
        failed = [e for e in result.events if e.action == "failed"]
        if json_out:
            emit_json(result.model_dump(mode="json"))
        else:
            _say_problems(result.sync)
            if not result.events:
                out_console.print("Nothing was due.")
            for e in result.events:
                out_console.print(_event_line(e), highlight=False, soft_wrap=True)
            for j in result.jobs:
                out_console.print(f"next: {j.campaign} at {_when(j)} UTC", highlight=False)
        if failed:
            raise typer.Exit(1)
        return

    def ready(report: "SyncReport", jobs: list["ScheduledJob"]) -> None:
        _say_problems(report)
        err_console.print(f"scheduler on {root} ({sched.SCHEDULE_DB}, log {sched.SCHEDULE_LOG}); Ctrl-C stops it",
                          highlight=False, soft_wrap=True)
        if jobs:
            err_console.print(_jobs_table(jobs, title="Scheduled campaigns"))
        else:
            err_console.print(f"no file in {campaigns} has a schedule: nothing will run", highlight=False)

    try:
        sched.serve(campaigns, root, store, workers=workers, on_ready=ready)
    except KeyboardInterrupt:
        _stop(sched, root)


def _stop(sched: Any, root: Path) -> None:
    """After Ctrl-C: let runs in progress finish (a second Ctrl-C leaves them resumable and exits now)."""
    running = sched.running_here()
    if not running:
        err_console.print("scheduler stopped", highlight=False)
        return
    names = ", ".join(f"{name} ({sid})" for name, sid in running.items())
    err_console.print(f"scheduler stopped; waiting for {names} to finish (Ctrl-C again to stop now)",
                      highlight=False, soft_wrap=True)
    try:
        while sched.running_here():
            time.sleep(0.5)
    except KeyboardInterrupt:
        for name, sid in sched.running_here().items():
            err_console.print(f"{name} stopped mid-run: tessera campaign resume {sid} --root {root} continues it", highlight=False,
                              soft_wrap=True)
        # The run's thread cannot be interrupted; its checkpoints make the session resumable, and its
        # campaign lock goes with the process.
        os._exit(130)
    err_console.print("scheduler stopped", highlight=False)
