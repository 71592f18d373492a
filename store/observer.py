"""AuditObserver: feeds a long loop's steps and tool calls into a run's audit log.

Long loops in Tessera are generators that yield each step (ASE ``Dynamics.irun`` style); ``run()``
consumes them and hands each step to observers. This observer writes a step as an audit event (every
``every``-th one, plus any step ``important`` flags), and times tool calls::

    obs = AuditObserver(run, kind="round", every=1)
    for step in obs.watch(campaign.irun()):   # or: for step in loop: obs(step)
        ...
    with obs.tool_call("relax", {"n": 32}) as call:
        result = relax_batch(...)
        call.result = {"converged": 30, "failed": 2}
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

from pydantic import BaseModel

from tessera.store.audit import AuditEvent, to_jsonable
from tessera.store.provenance import tool_versions
from tessera.store.runs import RunHandle

_T = TypeVar("_T")


def compact(obj: Any, *, max_list: int = 50, max_str: int = 4000) -> Any:
    """A JSON-able summary of a step: long lists become {len, head}, long strings are cut."""
    obj = to_jsonable(obj)
    if isinstance(obj, dict):
        return {k: compact(v, max_list=max_list, max_str=max_str) for k, v in obj.items()}
    if isinstance(obj, list):
        if len(obj) > max_list:
            return {"len": len(obj), "head": [compact(v, max_list=max_list, max_str=max_str) for v in obj[:5]]}
        return [compact(v, max_list=max_list, max_str=max_str) for v in obj]
    if isinstance(obj, str) and len(obj) > max_str:
        return obj[:max_str] + f"... [{len(obj) - max_str} more characters]"
    return obj


class ToolCallRecord:
    """Set ``result`` inside a ``tool_call`` block to the summary the log should keep."""

    def __init__(self, tool: str, arguments: Any) -> None:
        self.tool = tool
        self.arguments = arguments
        self.result: Any = None
        self.seconds: float | None = None
        self.event: AuditEvent | None = None


class AuditObserver:
    """Writes loop steps and tool calls of one run to its audit log, durably, in order."""

    def __init__(
        self,
        run: RunHandle,
        *,
        kind: str = "step",
        every: int = 1,
        summarize: Callable[[Any], dict[str, Any]] | None = None,
        actor: str = "tessera",
    ) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.run = run
        self.kind = kind
        self.every = every
        self.summarize = summarize
        self.actor = actor
        self.n_seen = 0

    def _payload(self, step: Any) -> dict[str, Any]:
        if self.summarize is not None:
            return dict(self.summarize(step))
        if isinstance(step, BaseModel):
            return compact(step.model_dump(mode="json"))
        if isinstance(step, dict):
            return compact(step)
        return {"step": compact(step)}

    def __call__(self, step: Any, *, important: bool = False) -> AuditEvent | None:
        """Log a step (every ``every``-th, or always when ``important``). Returns the event if written."""
        self.n_seen += 1
        if not important and (self.n_seen - 1) % self.every:
            return None
        payload = self._payload(step)
        payload.setdefault("index", self.n_seen - 1)
        return self.run.log_event(self.kind, payload, actor=self.actor)

    def watch(self, steps: Iterable[_T]) -> Iterator[_T]:
        """Yield each step of a loop after it has been logged (logged before the caller acts on it)."""
        for step in steps:
            self(step)
            yield step

    @contextmanager
    def tool_call(self, tool: str, arguments: Any, *, versions: dict[str, str] | None = None) -> Iterator[ToolCallRecord]:
        """Time a tool call and log it with its arguments, result summary (``record.result``), duration
        and versions; an exception is logged with the call and re-raised."""
        record = ToolCallRecord(tool, arguments)
        start = time.perf_counter()
        try:
            yield record
        except Exception as exc:
            record.seconds = time.perf_counter() - start
            record.event = self.run.log_tool_call(
                tool=tool, arguments=compact(arguments), result_summary=compact(record.result),
                seconds=record.seconds, versions=versions or tool_versions(), error=f"{type(exc).__name__}: {exc}",
            )
            raise
        record.seconds = time.perf_counter() - start
        record.event = self.run.log_tool_call(
            tool=tool, arguments=compact(arguments), result_summary=compact(record.result),
            seconds=record.seconds, versions=versions or tool_versions(),
        )
