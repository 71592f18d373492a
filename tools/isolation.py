"""Per-item isolation: whatever one item of a batch raises becomes that item's one-line error, never the batch's.

Every tool that works through a batch (read, check, prescreen, relax, hull, analyze) runs each item's step
through :func:`attempt` at the per-item boundary. That is isolation by construction: it does not depend on
knowing which exception types a parser or a model can raise (pymatgen's CIF parser raised ZeroDivisionError,
ase's reader XYZError, a neighbour search MemoryError, none of them on any list). Only ``Exception`` is
caught: ``KeyboardInterrupt`` and ``SystemExit`` still stop the run, as a user expects.

Nothing is swallowed: the caller must put :attr:`Attempt.error` on the item (``Candidate.error``,
``ReadItem.error``, a failed ``StageOutcome``), where it lands in candidates.jsonl and the audit log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Generic, ParamSpec, TypeVar

from tessera.tools.errors import TesseraError

T = TypeVar("T")
P = ParamSpec("P")

MAX_ERROR_CHARS: int = 300
"""An error line is for a person reading a table row; the audit log keeps the run's detail."""


def describe(exc: BaseException) -> str:
    """One line for an exception: ``"TypeName: message"`` (only the message for our own :class:`TesseraError`).

    Multi-line messages (pymatgen puts the offending input line on the second line) are joined into one.
    """
    msg = re.sub(r"\s+", " ", str(exc)).strip()
    if isinstance(exc, TesseraError) and msg:
        line = msg
    else:
        line = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 3] + "..."


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """The result of one item's step: ``value`` when it returned, ``error`` (one line) when it raised."""

    value: T | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def attempt(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Attempt[T]:
    """Run one item's step; an exception of any type becomes :attr:`Attempt.error` (see module docstring)."""
    try:
        return Attempt(value=fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the per-item boundary: the caller records the error on the item
        return Attempt(error=describe(exc))
