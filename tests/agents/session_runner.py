"""Run (or resume) a tiny design session in its own process: the SIGKILL/resume test drives this file.

usage: python session_runner.py WORK STORE

With TESSERA_TEST_STALL_AFTER=ROUND:TOOL the process sleeps once that tool call has finished (and is on the
ledger), so the killer cannot miss the window: on a fast machine the rest of a round can take milliseconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tessera.agents.session import DesignSession, SessionOptions, rank_candidates, session_candidates
from tessera.tools.spec import parse_spec

TINY_SPEC = {"chemistry": {"elements": ["Li", "Co", "O"], "n_elements": 3, "atoms": 8},
             "budgets": {"samples": 4, "relaxations": 4}, "seed": 1}
TINY_OPTIONS = SessionOptions(rounds=2, steps=20, relax_steps=40, threads=1, max_pictures=2)


def stall_after(round_and_tool: str, seconds: float = 300.0) -> None:
    """Sleep ``seconds`` right after the tool call ROUND:TOOL finishes for the first time (a test hook)."""
    from tessera.agents.ledger import ToolLedger

    round_text, tool = round_and_tool.split(":")
    original = ToolLedger.once

    def once(self, round_index, tool_name, call):  # type: ignore[no-untyped-def]
        result = original(self, round_index, tool_name, call)
        if round_index == int(round_text) and tool_name == tool and result[1]:
            time.sleep(seconds)
        return result

    ToolLedger.once = once  # type: ignore[method-assign]


def run(work: Path, store: str) -> dict:
    session = DesignSession(work, store=store)
    try:
        if session.meta() is None:
            outcome = session.start(spec=parse_spec(TINY_SPEC), options=TINY_OPTIONS)
        else:
            outcome = session.resume()
    finally:
        session.close()
    ranked = rank_candidates(session_candidates(work))
    return {"outcome": outcome.model_dump(mode="json"),
            "candidates": [[c.id, c.formula, None if c.e_hull is None else round(c.e_hull, 5), c.error] for c in ranked]}


if __name__ == "__main__":
    if os.environ.get("TESSERA_TEST_STALL_AFTER"):
        stall_after(os.environ["TESSERA_TEST_STALL_AFTER"])
    print(json.dumps(run(Path(sys.argv[1]), sys.argv[2])))
