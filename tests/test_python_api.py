"""The Python API (``import tessera``): the README's example runs as a plain script without a main guard,
``import tessera`` loads nothing heavy, and the three entry points behave as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pymatgen.core import Structure

import tessera
from tessera.tools.candidate import Candidate
from tessera.tools.errors import InputError, StoreError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "python_api.py"


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TESSERA_STORE": str(tmp_path / "default-store")}


@pytest.mark.slow
def test_example_script_runs_without_a_main_guard(tmp_path: Path) -> None:
    """The example samples 2 crystals, judges them in-process (one relaxation) and finds them in a store.
    Under the default Dask LocalCluster this shape of script failed with "Nanny failed to start"."""
    source = EXAMPLE.read_text()
    assert "__main__" not in source.replace('`if __name__ == "__main__":`', "")  # really unguarded
    assert len([line for line in source.splitlines() if line.strip() and not line.startswith("#")]) <= 10
    proc = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nanny" not in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4, proc.stdout  # two judged candidates, then the same two from the store
    judged, stored = lines[:2], lines[2:]
    assert sorted(line.split()[2] for line in judged) == ["not", "relaxed"]  # max_relaxations=1: one relaxed
    assert {line.split()[0] for line in judged} == {line.split()[0] for line in stored}  # one id throughout
    assert all(line.split()[0].startswith("gen-s0-") for line in stored)  # the sample's ids and seed
    assert all(line.split()[-1] == "0" for line in stored)  # seed 0 recorded in the store
    assert (tmp_path / "example-store").is_dir() and not (tmp_path / "default-store").exists()


def test_import_tessera_is_cheap_and_the_rooms_still_import() -> None:
    code = (
        "import sys, json\n"
        "import tessera\n"
        "heavy = [m for m in ('torch', 'chgnet', 'lancedb', 'dask', 'pymatgen.core.structure', 'pydantic', 'numpy')"
        " if m in sys.modules]\n"
        "import tessera.tools.evaluate, tessera.store, tessera.cli, tessera.generators, tessera.agents\n"
        "print(json.dumps({'heavy': heavy, 'api': tessera.__file__, 'tools': tessera.tools.evaluate.__file__,"
        " 'all': tessera.__all__, 'store_class': tessera.Store.__mro__[1].__module__}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["heavy"] == []
    assert Path(got["api"]) == REPO / "api" / "__init__.py" and Path(got["tools"]) == REPO / "tools" / "evaluate.py"
    assert {"sample", "evaluate_structures", "Store", "StoredCandidate", "Candidate"} <= set(got["all"])
    assert got["store_class"] == "tessera.store.store"


def test_store_opens_when_constructed(tmp_path: Path) -> None:
    from tessera.store import Store as RoomStore

    store = tessera.Store(tmp_path / "s")
    assert isinstance(store, tessera.Store) and isinstance(store, RoomStore)
    assert store.location == str((tmp_path / "s").resolve()) and store.runs() == []
    again = tessera.Store.open(tmp_path / "s", create=False)
    assert isinstance(again, tessera.Store) and again.location == store.location
    with pytest.raises(StoreError):
        tessera.Store(tmp_path / "missing", create=False)
    assert "tessera.Store(" in repr(store)
    with pytest.raises(AttributeError):
        tessera.no_such_name  # noqa: B018


@pytest.mark.slow
def test_evaluate_structures_takes_structures_candidates_and_paths(tmp_path: Path, nacl: Structure) -> None:
    mine = Candidate.from_structure(nacl, id="keep-this-id", provenance={"seed": 5, "checkpoint_hash": "abc"})
    before = mine.model_dump()
    path = tmp_path / "NaCl.cif"
    nacl.to(filename=str(path))
    store = tessera.Store(tmp_path / "store")
    # No relaxation: the prescreen (charge, geometry, CHGNet single-point E_hull estimate) still runs.
    result = tessera.evaluate_structures([path, nacl, mine], out=tmp_path / "out", max_relaxations=0, store=store)
    assert isinstance(result, tessera.EvaluateResult) and isinstance(result.summary, tessera.EvaluateSummary)
    assert result.summary.n_inputs == 3 and result.summary.n_relaxed == 0
    ids = [c.id for c in result.candidates]
    assert ids[1] == "keep-this-id" and result.candidates[1].provenance["seed"] == 5  # objects first, in order
    assert result.candidates[2].source.endswith("NaCl.cif")  # then the files
    assert all(c.prescreen for c in result.candidates)
    assert mine.model_dump() == before  # the caller's object is not modified
    assert result.params.evaluate.workers == 0 and result.params.out == tmp_path / "out"
    rows = store.search(run_id=result.run_id)
    assert {r.id for r in rows} == set(ids) and store.get("keep-this-id").seed == 5

    with pytest.raises(InputError, match="nothing to judge"):
        tessera.evaluate_structures([])
    with pytest.raises(InputError, match="item 0 is a dict"):
        tessera.evaluate_structures([{"not": "a structure"}])
