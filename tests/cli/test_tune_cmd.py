"""``tessera tune`` as a user runs it: a study resumes in a second process; bad input is one line.

Real components: the console script in fresh processes, Optuna on a SQLite file in a temp folder, the shipped
generator (5 reverse steps, 2 crystals per trial), CHGNet single points (pareto: no relaxation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from tessera.cli import app

TESSERA = [str(Path(sys.executable).with_name("tessera"))]
SPEC = {"chemistry": {"elements": ["Li", "Co", "O"], "n_elements": 3, "atoms": 8},
        "guidance": [{"kind": "coordination", "elements": ["Co", "O"], "cutoff": 2.6, "target": 4, "tolerance": 0.5}],
        "seed": 3}
runner = CliRunner()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TESSERA_STORE": str(cwd / "default_store")}
    return subprocess.run([*TESSERA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _trials(url: str, study: str) -> list[tuple[int, str, dict, list[float] | None]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = optuna.load_study(study_name=study, storage=url)
    return [(t.number, t.state.name, t.params, t.values) for t in loaded.trials]


def test_a_study_resumes_in_a_second_process(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    common = ["tune", "--spec", "spec.json", "--objective", "pareto", "--pilot", "2", "--steps", "5", "--study", "s",
              "--out", "tune", "--store", "store", "--json"]
    first = run_cli(*common, "--trials", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    out1 = json.loads(first.stdout)  # stdout is exactly one JSON object
    url = f"sqlite:///{tmp_path / 'tune' / 's.sqlite3'}"
    assert out1["n_trials"] == 2 and out1["storage"] == url and out1["run_id"].startswith("tune-")
    before = _trials(url, "s")

    second = run_cli(*common, "--trials", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    out2 = json.loads(second.stdout)
    after = _trials(url, "s")
    assert out2["n_trials"] == 4 and [t["number"] for t in out2["trials"]] == [2, 3]
    assert [t[0] for t in after] == [0, 1, 2, 3] and all(t[1] == "COMPLETE" for t in after)
    assert after[:2] == before  # the first process's trials are untouched
    assert all(t[2] not in (before[0][2], before[1][2]) for t in after[2:])  # the sampler moved on, no redraws
    assert out2["dashboard"] == f"optuna-dashboard {url}"


def test_help_says_how_to_open_the_dashboard() -> None:
    res = runner.invoke(app, ["tune", "--help"])
    assert res.exit_code == 0 and "optuna-dashboard sqlite:///" in res.stdout


@pytest.mark.parametrize(("spec_text", "args", "needle"), [
    (None, [], "no such file"),
    ("{not json", [], "not valid JSON"),
    (json.dumps({"chemistry": {"elements": ["Xx"]}}), [], "'Xx' is not an element symbol"),
    (json.dumps({"chemistry": {"elements": ["Li"]}}), [], "no strengths to tune"),
    (json.dumps(SPEC), ["--storage", "notaurl"], "--storage notaurl: cannot open it"),
    (json.dumps(SPEC), ["--storage", "postgresql://me:secret@127.0.0.1:1/db"], "--storage postgresql://me:***@"),
    (json.dumps(SPEC), ["--objective", "best"], "--objective best"),
])
def test_bad_input_is_one_line(tmp_path: Path, spec_text: str | None, args: list[str], needle: str) -> None:
    spec = tmp_path / "spec.json"
    if spec_text is not None:
        spec.write_text(spec_text)
    res = runner.invoke(app, ["tune", "--spec", str(spec), "--trials", "1", "--out", str(tmp_path / "tune"),
                              "--no-store", *args])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert "secret" not in res.stderr
