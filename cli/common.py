"""Shared CLI plumbing: the Typer app, results on stdout, JSON output, one-line errors, progress bars on stderr."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click
import typer
from typer.core import TyperGroup
from rich.console import Console

from tessera.tools.errors import TesseraError

if TYPE_CHECKING:
    from rich.progress import Progress

    from tessera.tools.runlog import RunOpener

# Typer 0.2x parses with its own copy of click: bad options raise its exceptions, not click's.
_USAGE_ERRORS: tuple[type[Exception], ...] = (click.ClickException, typer.exceptions.TyperException)
_ABORTS: tuple[type[BaseException], ...] = (click.exceptions.Abort, typer.Abort)


class OneLineErrors(TyperGroup):
    """The command group that makes every failure a user can cause one line on stderr (and, under
    ``--json``, a JSON error object on stdout): a TesseraError escaping a command exits 1, a bad option
    or number exits 2 with click's message instead of a boxed panel. It works the same for the console
    script and for Typer's test runner."""

    def invoke(self, ctx: click.Context) -> Any:
        global _json_mode
        _json_mode = False  # set again by the --json option's callback of the command now being parsed
        try:
            return super().invoke(ctx)
        except TesseraError as exc:
            report_error(str(exc))
            raise typer.Exit(1) from None

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _USAGE_ERRORS as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `tessera` or `tessera store`: the help
                ctx = getattr(exc, "ctx", None)
                err_console.print(ctx.get_help() if ctx is not None else exc.format_message(), highlight=False)
                sys.exit(0)
            argv = kwargs.get("args", args[0] if args else None)
            _remember_json("--json" in (sys.argv[1:] if argv is None else list(argv)))  # parsing stopped early
            report_error(exc.format_message())
            sys.exit(getattr(exc, "exit_code", 2))
        except _ABORTS:
            report_error("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    name="tessera",
    help="Steered discovery of crystalline materials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain (click) help: Typer's Rich help formatter imports rich.markdown, markdown-it and pygments, about
    # 0.1-0.2 s of every `--help` (issue 20: help must answer at once). Every command group inherits this.
    rich_markup_mode=None,
)

# Results (tables, summaries) go to stdout, where `> hits.txt` and `| head` find them; progress bars,
# warnings and errors go to stderr. Under --json stdout carries only the one JSON object.
out_console = Console()
err_console = Console(stderr=True)
if not err_console.is_terminal:
    # Logs and CI captures: wide enough that result tables do not fold every file name.
    err_console = Console(stderr=True, width=140)
if not out_console.is_terminal:
    out_console = Console(width=140)

_json_mode = False


def _remember_json(value: bool) -> bool:
    global _json_mode
    _json_mode = bool(value)
    return value


JSON_OPTION = typer.Option(False, "--json", help="print one JSON object on stdout and nothing else there",
                           callback=_remember_json)


def emit_json(payload: dict[str, Any]) -> None:
    """Write the single JSON object of a --json command to stdout."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")
    sys.stdout.flush()


def report_error(message: str) -> None:
    """One clear line on stderr; under --json also ``{"error": message}`` on stdout, so a script that
    reads stdout learns what went wrong instead of finding it empty."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    if _json_mode:
        emit_json({"error": message})


def fail(message: str, code: int = 1) -> NoReturn:
    """Report one clear line (see :func:`report_error`) and exit non-zero."""
    report_error(message)
    raise typer.Exit(code)


def run_opener(store: str | None, *, no_store: bool = False) -> "RunOpener | None":
    """The store's ``start_run`` for a job to record its run in (None with ``--no-store``).

    The store is opened here, before any work, so a bad ``--store`` is one line, not an hour lost.
    """
    if no_store:
        return None
    from tessera.store import Store

    return Store.open(store).start_run


def progress(*, transient: bool = False) -> "Progress":
    """A Rich progress bar on stderr (quiet when stderr is not a terminal unless forced)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )
