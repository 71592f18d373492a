"""``tessera chat`` through Typer's test runner, input lines fed on stdin: a goal, an edit, approve (one real
tiny session: the shipped generator and prescreen, no relaxation), a follow-up from the store, quit."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tessera.cli import app
from tessera.store import Store

runner = CliRunner()


def test_chat_goal_approve_follow_up_quit(tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "chat"
    lines = ["hello", "Li-Co-O, 8 atoms, 1 candidate", "set budgets.relaxations 0", "approve",
             "why was gen-s0-00000 stopped", "quit", "never read"]
    res = runner.invoke(app, ["chat", "--store", str(store), "--out", str(out), "--planner", "offline", "--steps", "20"],
                        input="\n".join(lines) + "\n", catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = res.output
    assert "Tessera chat (planner: offline)" in text
    assert "nothing in the goal sets a design constraint" in text
    assert "proposed spec (offline planner" in text and "budgets.relaxations: none -> 0" in text
    assert "ran session chat-" in text and "report:" in text
    assert "gen-s0-00000 (" in text and "stopped at the" in text  # the follow-up, answered from the store
    assert text.rstrip().endswith("bye")
    (session,) = [p for p in out.iterdir() if p.is_dir()]
    rows = Store.open(str(store)).search(run_id=session.name, limit=None)
    assert [r.id for r in rows] == ["gen-s0-00000"] and not rows[0].relaxed


def test_chat_ends_at_end_of_input_and_rejects_a_bad_planner(tmp_path: Path) -> None:
    res = runner.invoke(app, ["chat", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "chat"),
                              "--planner", "offline"], input="help\n")
    assert res.exit_code == 0 and "Before a run" in res.output
    bad = runner.invoke(app, ["chat", "--planner", "gpt", "--out", str(tmp_path / "chat")], input="quit\n")
    assert bad.exit_code == 1 and "--planner gpt" in bad.output and "Traceback" not in bad.output
