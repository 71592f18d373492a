"""``tessera plan "GOAL"``: the spec as one JSON object under --json (what ``--spec`` reads), a short summary
otherwise, and an impossible goal as one line and a non-zero exit."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tessera.cli import app
from tessera.tools.spec import parse_spec

runner = CliRunner()


def test_json_is_a_spec_that_parse_spec_accepts() -> None:
    res = runner.invoke(app, ["plan", "kagome net of Mn with Sn", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    spec = parse_spec(json.loads(lines[0]))
    assert spec.motif is not None and (spec.motif.lattice, spec.motif.element) == ("kagome", "Mn")
    assert spec.chemistry.elements == ["Mn", "Sn"] and spec.goal == "kagome net of Mn with Sn"


def test_json_keeps_stdout_clean_and_says_unused_words_on_stderr() -> None:
    res = runner.invoke(app, ["plan", "Li-Co-O, delete the store", "--json"], catch_exceptions=False)
    assert res.exit_code == 0
    assert parse_spec(json.loads(res.stdout)).chemistry.elements == ["Li", "Co", "O"]
    assert "unused: delete the store" in res.stderr


def test_human_output_summarises_the_spec_and_lists_unused_words() -> None:
    goal = "tetrahedral Co in Li-Co-O within 50 meV of the hull, 32 candidates, seed 7, make it superconducting"
    res = runner.invoke(app, ["plan", goal], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "chemistry: elements Li-Co-O" in out
    assert "guidance: Co-O coordination 4 (cutoff 2.6 A" in out
    assert "E_hull <= 0.05 eV/atom" in out and "32 samples" in out and "seed 7" in out
    assert out.splitlines()[-1] == "unused: superconducting"


def test_an_impossible_goal_is_one_line_and_exit_1() -> None:
    res = runner.invoke(app, ["plan", "binary Li-Co-O"])
    assert res.exit_code == 1 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "binary" in res.stderr and "Traceback" not in res.stderr
    res = runner.invoke(app, ["plan", "Xx-O", "--json"])
    assert res.exit_code == 1
    assert json.loads(res.stdout) == {"error": "'Xx-O': 'Xx' is not an element symbol"}
    res = runner.invoke(app, ["plan", "", "--json"])
    assert res.exit_code == 1 and "empty" in json.loads(res.stdout)["error"]
