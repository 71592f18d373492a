"""The ``tessera`` console script (Typer + Rich).

Each command group lives in its own module and registers itself on ``app``; this module composes
them. Every command takes ``--json`` (one JSON object on stdout, nothing else there); a command that
cannot do its job prints one clear line on stderr and exits non-zero.
"""

from __future__ import annotations

import importlib

from agents.cli.common import app, run_app

# Command modules, each registering its commands on ``app`` when imported.
_COMMAND_MODULES = [
    "agents.cli.evaluate_cmd",
    "agents.cli.generator_cmds",
    "agents.cli.store_cmds",
    "agents.cli.demo_cmd",
]

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a group still being built must not break the others
        if exc.name != _name:
            raise


def main() -> None:
    """Console-script entry point."""
    run_app()


__all__ = ["app", "main"]
