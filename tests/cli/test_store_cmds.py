"""The store, review and audit commands, run through the real Typer app on a real store."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tessera.cli.store_cmds  # noqa: F401  (registers the commands on the app)
from tessera.cli.common import app
from tessera.store import Store
from tessera.tools.measures import STABLE_E_HULL
from tests.store.conftest import make_candidates

runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args), catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture()
def populated(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "store"
    store = Store.open(root)
    with store.start_run("evaluate", {"n": 12}, goal="stable rock salts") as run:
        run.log_plan({"steps": ["relax", "hull"]}, reasoning="cheap first")
        run.log_tool_call(tool="relax", arguments={"n": 12}, result_summary={"converged": 9}, seconds=1.5)
        run.add_candidates(make_candidates(12))
    return root, run.run_id


def test_search_filters_and_like(populated: tuple[Path, str], tmp_path: Path) -> None:
    root, run_id = populated
    code, out, _ = _run("store", "search", "--store", str(root), "--elements", "O", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["total"] == 3 and all("O" in c["elements"] for c in data["candidates"])
    code, out, _ = _run("store", "search", "--store", str(root), "--max-e-hull", "0.0", "--run", run_id, "--json")
    assert all(c["e_hull"] <= 0 for c in json.loads(out)["candidates"])
    # --like: c0005 (rock-salt NaCl) rattled by 0.01 A. The fingerprint ignores volume, as StructureMatcher
    # does, so the three stored rock-salt NaCl cells (c0000, c0005, c0010; different lattice constants)
    # are the three nearest, and everything else is far behind.
    target = Store.open(root).get("c0005").structure()
    target.perturb(0.01)
    path = tmp_path / "query.cif"
    target.to(filename=str(path))
    code, out, _ = _run("store", "search", "--store", str(root), "--like", str(path), "-k", "4", "--json")
    hits = json.loads(out)["candidates"]
    assert code == 0 and {h["id"] for h in hits[:3]} == {"c0000", "c0005", "c0010"}
    assert max(h["distance"] for h in hits[:3]) < 0.01 < 0.3 < hits[3]["distance"]
    code, out, _ = _run("store", "search", "--store", str(root))
    assert code == 0 and "c00" in out  # the human table is a result: stdout


def test_review_and_audit(populated: tuple[Path, str], tmp_path: Path) -> None:
    root, run_id = populated
    code, out, _ = _run("review", "approve", "c0002", "--note", "make it", "--reviewer", "ada", "--store", str(root), "--json")
    assert code == 0 and json.loads(out)["review_status"] == "approved"
    code, _, _ = _run("review", "reject", "c0003", "--note", "unstable", "--store", str(root))
    assert code == 0
    code, out, _ = _run("audit", "show", run_id, "--store", str(root), "--json")
    kinds = [e["kind"] for e in json.loads(out)["events"]]
    assert kinds == ["run_started", "plan", "tool_call", "candidates_recorded", "run_finished", "human_decision",
                     "human_decision"]
    code, out, _ = _run("audit", "verify", run_id, "--store", str(root))
    assert code == 0 and out.startswith("ok")  # a verdict is a result: stdout

    report = tmp_path / "report.html"
    code, _, _ = _run("audit", "export", run_id, "--html", str(report), "--store", str(root))
    assert code == 0
    html = report.read_text()
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(pngs) >= 12 + 1  # a picture per candidate plus the plots
    assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "make it" in html and "cheap first" in html and "chain intact" in html
    # The report counts "stable" with the one threshold the rest of Tessera uses.
    n_stable = Store.open(root).count(run_id=run_id, max_e_hull=STABLE_E_HULL)
    assert f"<th>stable (E_hull ≤ {STABLE_E_HULL} eV/atom)</th><td>{n_stable}</td>" in html
    assert "http://" not in html and "https://" not in html  # offline: nothing fetched when opened

    log = root / "audit" / f"{run_id}.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:2] + lines[3:]))  # delete event 2 by hand
    code, out, err = _run("audit", "verify", run_id, "--store", str(root))
    assert code != 0 and "event 2" in out and "Traceback" not in out + err


def test_exports(populated: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = populated
    args = ["store", "export", "--store", str(root), "--limit", "3"]
    assert _run(*args, "--format", "cif", "--out", str(tmp_path / "cif"))[0] == 0
    cifs = sorted((tmp_path / "cif").glob("*.cif"))
    assert len(cifs) == 3
    assert _run(*args, "--format", "csv", "--out", str(tmp_path / "x.csv"))[0] == 0
    assert len((tmp_path / "x.csv").read_text().splitlines()) == 4
    assert _run(*args, "--format", "json", "--out", str(tmp_path / "x.json"))[0] == 0
    assert len(json.loads((tmp_path / "x.json").read_text())) == 3
    assert _run(*args, "--format", "extxyz", "--out", str(tmp_path / "x.xyz"))[0] == 0
    from ase.io import read

    frames = read(str(tmp_path / "x.xyz"), index=":")
    assert len(frames) == 3 and all(len(f) == 8 for f in frames)
    code, out, _ = _run(*args, "--format", "vasp", "--out", str(tmp_path / "vasp"))
    assert code == 0 and "POTCAR.spec" in out
    folders = sorted((tmp_path / "vasp").iterdir())
    assert len(folders) == 3
    for f in folders:
        assert {p.name for p in f.iterdir()} == {"INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"}
        assert "ENCUT = 520" in (f / "INCAR").read_text()
        poscar_species = (f / "POSCAR").read_text().splitlines()[5].split()
        spec = (f / "POTCAR.spec").read_text().split()
        assert [s.split("_")[0] for s in spec] == poscar_species
    assert _run(*args, "--format", "pdf", "--out", str(tmp_path / "x.pdf"))[0] != 0


@pytest.mark.parametrize("kind", ["foreign", "missing", "corrupt", "file"])
def test_bad_store_gets_one_line(tmp_path: Path, kind: str) -> None:
    target = tmp_path / kind
    if kind == "foreign":
        target.mkdir()
        (target / "data.csv").write_text("a,b\n")
    elif kind == "corrupt":
        Store.open(target)
        (target / "runs.lance" / "_versions").rename(target / "runs.lance" / "gone")
        for f in (target / "candidates.lance" / "_versions").iterdir():
            f.write_bytes(b"\x00" * 7)
    elif kind == "file":
        target.write_text("not a dir")
    for args in (["store", "search"], ["audit", "verify", "run-x"], ["review", "approve", "abc"]):
        code, out, err = _run(*args, "--store", str(target))
        assert code == 1 and out == ""
        assert err.startswith("error:") and "Traceback" not in err
        assert len(err.strip().splitlines()) <= 2  # one line, perhaps wrapped by the console


def test_unknown_run_and_candidate(populated: tuple[Path, str]) -> None:
    root, _ = populated
    code, _, err = _run("audit", "verify", "nope", "--store", str(root))
    assert code == 1 and "no run" in err
    code, _, err = _run("review", "approve", "nope", "--store", str(root))
    assert code == 1 and "no candidate" in err


def test_json_failures_print_a_json_error_and_bad_numbers_one_line(tmp_path: Path) -> None:
    """Under --json a failure still leaves one JSON object on stdout; a bad number is our one line
    (exit 2), never Typer's boxed panel or a traceback."""
    code, out, err = _run("audit", "verify", "nope", "--store", str(tmp_path / "s"), "--json")
    assert code == 1 and "no Tessera store" in json.loads(out)["error"] and err.startswith("error:")
    res = runner.invoke(app, ["store", "search", "--limit", "0"])
    assert res.exit_code == 2 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert "╭" not in res.stderr and "Traceback" not in res.stderr
    res = runner.invoke(app, ["store", "search", "--limit", "0", "--json"])
    assert res.exit_code == 2 and "--limit" in json.loads(res.stdout)["error"]


def test_search_says_why_a_candidate_stopped_explains_sun_and_reports_no_match(tmp_path: Path) -> None:
    """A prescreen-rejected candidate shows its stage (not '???'/'pending' alone), the S U N columns carry a
    legend, a review note is shown, and an empty result is a sentence, not an empty table."""
    from tessera.tools.candidate import StageOutcome

    root = tmp_path / "store"
    store = Store.open(root)
    cands = make_candidates(2)
    cands[1].prescreen = {"charge": StageOutcome(passed=False, reason="no charge-neutral assignment")}
    cands[1].e_hull = cands[1].stable = cands[1].unique = cands[1].novel = None
    cands[1].relaxed = False
    with store.start_run("evaluate", {"n": 2}) as run:
        run.add_candidates(cands)
    store.review(cands[0].id, "approved", reviewer="ada", note="send to DFT")
    code, out, _ = _run("store", "search", "--store", str(root))
    assert code == 0
    assert "charge prescreen" in out and "S U N: stable" in out and "send to DFT" in out
    code, out, _ = _run("store", "search", "--store", str(root), "--formula", "Xe2")
    assert code == 0 and out.startswith("no candidates match") and "formula=Xe2" in out
