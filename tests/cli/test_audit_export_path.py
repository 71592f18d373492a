"""`tessera audit export RUN --html PATH` refuses a path it cannot or should not write with one line and a
non-zero exit, before it opens the store or renders anything (rendering takes seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tessera.cli.store_cmds  # noqa: F401  (registers the commands on the app)
from tessera.cli.common import app
from tessera.store import Store
from tests.store.conftest import make_candidates

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture()
def run_in_store(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    with Store.open(root).start_run("evaluate", {"n": 3}) as run:
        run.add_candidates(make_candidates(3))
    return root, run.run_id


def _one_line(code: int, out: str, err: str) -> str:
    assert code == 1 and out == "", (code, out, err)
    assert err.startswith("error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # one line, perhaps wrapped by the console
    return " ".join(err.split())


def test_existing_folder_file_and_bad_parent(run_in_store: tuple[Path, str], tmp_path: Path) -> None:
    root, run_id = run_in_store
    folder = tmp_path / "reports"
    folder.mkdir()
    line = _one_line(*_run("audit", "export", run_id, "--html", str(folder), "--store", str(root)))
    assert "is a folder" in line and "report.html" in line
    assert list(folder.iterdir()) == []

    existing = tmp_path / "old.html"
    existing.write_text("keep me")
    line = _one_line(*_run("audit", "export", run_id, "--html", str(existing), "--store", str(root)))
    assert "exists" in line and "--force" in line
    assert existing.read_text() == "keep me"

    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    line = _one_line(*_run("audit", "export", run_id, "--html", str(blocker / "sub" / "r.html"), "--store", str(root)))
    assert "is a file, not a folder" in line

    # --json: the same line as a JSON error object on stdout.
    res = runner.invoke(app, ["audit", "export", run_id, "--html", str(folder), "--store", str(root), "--json"])
    assert res.exit_code == 1 and "is a folder" in json.loads(res.stdout)["error"]

    # --force overwrites a file (never a folder); a fresh path in a new folder is created.
    code, out, _ = _run("audit", "export", run_id, "--html", str(existing), "--store", str(root), "--force")
    assert code == 0 and "<html" in existing.read_text() and run_id in existing.read_text()
    assert _one_line(*_run("audit", "export", run_id, "--html", str(folder), "--store", str(root), "--force"))
    fresh = tmp_path / "new" / "deeper" / "r.html"
    assert _run("audit", "export", run_id, "--html", str(fresh), "--store", str(root))[0] == 0 and fresh.is_file()


def test_refused_before_any_work(tmp_path: Path) -> None:
    """The path is checked first: no store is opened (the store given does not exist) and the report
    renderer (matplotlib, pymatgen) is never imported."""
    folder = tmp_path / "reports"
    folder.mkdir()
    code = (
        "import sys\n"
        "from tessera.cli import main\n"
        f"sys.argv = ['tessera', 'audit', 'export', 'no-such-run', '--html', {str(folder)!r},"
        f" '--store', {str(tmp_path / 'no-store')!r}]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    heavy = [m for m in ('tessera.agents.report', 'tessera.store', 'lancedb', 'matplotlib')"
        " if m in sys.modules]\n"
        "    print('imported:', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "imported: []", proc.stderr
    assert "is a folder" in " ".join(lines[:-1]) and "Traceback" not in proc.stderr
    assert not (tmp_path / "no-store").exists()
