"""Shared CLI plumbing: the Typer app, JSON output, one-line errors, progress bars on stderr."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tessera.tools.errors import TesseraError

if TYPE_CHECKING:
    from tessera.tools.runlog import RunOpener

class OneLineErrors(TyperGroup):
    """The command group that turns any TesseraError escaping a command into one line on stderr and exit 1
    (for the console script and for Typer's test runner alike)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TesseraError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=OneLineErrors,
    name="tessera",
    help="Steered discovery of crystalline materials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Human output and progress go to stderr so that stdout carries only the --json object.
err_console = Console(stderr=True)
if not err_console.is_terminal:
    # Logs and CI captures: wide enough that result tables do not fold every file name.
    err_console = Console(stderr=True, width=140)

JSON_OPTION = typer.Option(False, "--json", help="print one JSON object on stdout and nothing else there")


def emit_json(payload: dict[str, Any]) -> None:
    """Write the single JSON object of a --json command to stdout."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line on stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_opener(store: str | None, *, no_store: bool = False) -> "RunOpener | None":
    """The store's ``start_run`` for a job to record its run in (None with ``--no-store``).

    The store is opened here, before any work, so a bad ``--store`` is one line, not an hour lost.
    """
    if no_store:
        return None
    from tessera.store import Store

    return Store.open(store).start_run


def progress(*, transient: bool = False) -> Progress:
    """A Rich progress bar on stderr (quiet when stderr is not a terminal unless forced)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )


def run_app() -> None:
    """Run the app, turning any TesseraError that escapes a command into one line and exit 1."""
    try:
        app()
    except TesseraError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
