"""The one boundary between a tool's job and wherever its run is recorded.

Tools never import the store (it sits above them and stores their records). A job that should be
recorded takes ``open_run``: any callable that starts a run and returns a :class:`RunLog`. The store's
``Store.start_run`` is one; a test may pass its own. The job opens the run before any work (so a bad
store fails fast, before an hour of CHGNet), logs each tool call as it completes, adds its candidates
and closes the run. An exception escaping the ``with run:`` block marks the run failed.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # the protocol is imported by the CLI at start-up, which must not pay for pymatgen
    from tessera.tools.candidate import Candidate


@runtime_checkable
class RunLog(Protocol):
    """An open run: an audit log that takes tool calls and candidates, closed by ``finish``."""

    @property
    def run_id(self) -> str: ...

    def log_tool_call(
        self, *, tool: str, arguments: Any, result_summary: Any, seconds: float, error: str | None = None
    ) -> Any: ...

    def add_candidates(self, candidates: Sequence["Candidate"], *, provenance: dict[str, Any] | None = None) -> Any: ...

    def finish(self, summary: dict[str, Any] | None = None) -> Any: ...

    def __enter__(self) -> "RunLog": ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


class RunOpener(Protocol):
    """Starts a run of ``kind`` with its parameters echoed (``Store.start_run`` has this shape)."""

    def __call__(
        self, kind: str, params: dict[str, Any], *, checkpoint_hash: str | None = None, seed: int | None = None
    ) -> RunLog: ...
