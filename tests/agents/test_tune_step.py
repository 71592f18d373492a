"""The tuning step of a session: Optuna trials before round 0, the chosen strengths used by every round."""

from __future__ import annotations

from pathlib import Path

import optuna

from tessera.agents.ledger import ToolLedger
from tessera.agents.session import DesignSession, SessionOptions
from tessera.tools.spec import parse_spec
from tessera.tools.tune import tuned_spec

SPEC = {"chemistry": {"elements": ["B"], "n_elements": 1, "atoms": 6},
        "guidance": [{"kind": "volume_per_atom", "target": 7.0, "tolerance": 0.5}],
        "budgets": {"samples": 2, "relaxations": 0}, "seed": 2}


def test_tune_step_runs_its_trials_once_and_the_rounds_use_the_chosen_values(tmp_path: Path) -> None:
    session = DesignSession(tmp_path / "s", store=str(tmp_path / "store"))
    opts = SessionOptions(rounds=1, steps=10, threads=1, tune_trials=3, tune_pilot=2, tune_steps=5, max_pictures=0)
    outcome = session.start(spec=parse_spec(SPEC), options=opts)
    session.close()
    assert outcome.status == "finished"
    entries = ToolLedger(tmp_path / "s").entries()
    tuned = [e for e in entries if e["tool"] == "tune"]
    assert len(tuned) == 1 and tuned[0]["result"]["n_trials"] == 3
    study = optuna.load_study(study_name=tuned[0]["result"]["study"], storage=tuned[0]["result"]["storage"])
    assert len(study.trials) == 3
    chosen = tuned[0]["result"]["chosen"]
    expected = tuned_spec(parse_spec(SPEC), chosen["params"])
    assert outcome.spec == expected.model_dump(mode="json")  # every round sampled with the chosen strengths
    sample = next(e for e in entries if e["tool"] == "sample")
    assert entries.index(tuned[0]) < entries.index(sample)


def test_a_spec_without_guidance_or_motif_skips_tuning(tmp_path: Path) -> None:
    lines: list[str] = []
    from tessera.agents.session import SessionHooks

    session = DesignSession(tmp_path / "s", store=str(tmp_path / "store"), hooks=SessionHooks(on_message=lines.append))
    spec = parse_spec({"chemistry": {"elements": ["Li", "O"], "n_elements": 2, "atoms": 4},
                       "budgets": {"samples": 1, "relaxations": 0}})
    outcome = session.start(spec=spec, options=SessionOptions(rounds=1, steps=5, threads=1, tune_trials=2,
                                                              max_pictures=0))
    session.close()
    assert outcome.status == "finished" and any("nothing to tune" in line for line in lines)
    assert not [e for e in ToolLedger(tmp_path / "s").entries() if e["tool"] == "tune"]
