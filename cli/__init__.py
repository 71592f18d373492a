"""The ``tessera`` console script (Typer + Rich).

Each command group lives in its own module and registers itself on ``app``; this module composes
them. Every command takes ``--json`` (one JSON object on stdout, nothing else there); a command that
cannot do its job prints one clear line on stderr and exits non-zero.
"""

from __future__ import annotations

from tessera.cli import agent_cmds, chat_cmd, demo_cmd, evaluate_cmd, generator_cmds, schedule_cmd, store_cmds, tune_cmd  # noqa: F401 - each registers its commands
from tessera.cli import plan_cmd  # noqa: F401 - registers `tessera plan`
from tessera.cli.common import app


def main() -> None:
    """Console-script entry point (failures become one line inside the app: see common.OneLineErrors)."""
    app()


__all__ = ["app", "main"]
