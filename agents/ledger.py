"""The tool-call ledger of a design session: each finished tool call, once, durably.

LangGraph checkpoints the session state after every node, so a resumed session never re-enters a node that
finished. A process killed *inside* a node re-runs that node; the ledger closes that gap: a node asks
:meth:`ToolLedger.once` to run its tool call, and a call whose "finished" line is already on disk returns
its recorded result instead of running again. Relaxations inside a node have their own journal
(``tools.evaluate.RelaxJournal``), so a killed relaxation step loses at most the relaxations in flight.

File: ``<work>/tool_calls.jsonl``, one JSON object per finished call (round, tool, seconds, result),
appended and fsync'd before the node returns.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

LEDGER_FILE: str = "tool_calls.jsonl"


class ToolLedger:
    """Finished tool calls of one session, keyed by (round, tool)."""

    def __init__(self, work_dir: Path) -> None:
        self.path = Path(work_dir) / LEDGER_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def entries(self) -> list[dict[str, Any]]:
        """Every finished call in order (a torn last line from a kill is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the line being written when the process died
        return out

    def finished(self, round_index: int, tool: str) -> dict[str, Any] | None:
        """The recorded entry of (round, tool), or None when that call has not finished."""
        for entry in self.entries():
            if entry.get("round") == round_index and entry.get("tool") == tool:
                return entry
        return None

    def once(self, round_index: int, tool: str, call: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """Run ``call`` unless (round, tool) already finished; returns (result, ran_now).

        ``call`` returns a JSON-able dict (paths, counts): what later nodes need from it.
        """
        done = self.finished(round_index, tool)
        if done is not None:
            return dict(done.get("result") or {}), False
        t0 = time.perf_counter()
        result = call()
        entry = {"round": round_index, "tool": tool, "seconds": round(time.perf_counter() - t0, 3),
                 "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid(),
                 "result": result}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return result, True
