"""Run (or resume) a tiny design session in its own process: the SIGKILL/resume test drives this file.

usage: python session_runner.py WORK STORE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tessera.agents.session import DesignSession, SessionOptions, rank_candidates, session_candidates
from tessera.tools.spec import parse_spec

TINY_SPEC = {"chemistry": {"elements": ["Li", "Co", "O"], "n_elements": 3, "atoms": 8},
             "budgets": {"samples": 4, "relaxations": 4}, "seed": 1}
TINY_OPTIONS = SessionOptions(rounds=2, steps=20, relax_steps=40, threads=1, max_pictures=2)


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
    print(json.dumps(run(Path(sys.argv[1]), sys.argv[2])))
