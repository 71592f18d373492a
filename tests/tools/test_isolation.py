"""Per-item isolation at every tool boundary (issue 19): one item's failure is its error, never the batch's.

The boundary itself (``tools.isolation.attempt``), a prescreen stage that raises for one structure, a
Dask worker that dies of memory in the middle of a relaxation (a real LocalCluster), and the evaluation
pipeline with a candidate whose structure cannot be rebuilt.
"""

from __future__ import annotations

import sys
import time
from typing import Sequence

import cloudpickle
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from tests.conftest import rattled
from tessera.tools.candidate import Candidate, StageOutcome
from tessera.tools.evaluate import EvaluateParams, iter_evaluate
from tessera.tools.isolation import attempt, describe
from tessera.tools.prescreen import Prescreen, PrescreenParams
from tessera.tools.relax import EMTRelaxer, RelaxParams, relax_many

# Stand-ins below travel to Dask workers (fresh processes) by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _fcc(element: str, a: float, seed: int) -> Structure:
    s = Structure(Lattice.cubic(a), [element] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return rattled(s, amplitude=0.05, seed=seed)


# ---------------------------------------------------------------------------------------------- the boundary


def test_attempt_names_the_exception_type_and_keeps_one_line() -> None:
    def boom(exc: BaseException) -> None:
        raise exc

    assert attempt(boom, MemoryError()).error == "MemoryError"
    assert attempt(boom, ZeroDivisionError("integer modulo by zero")).error == "ZeroDivisionError: integer modulo by zero"
    assert attempt(boom, UserWarning("Cannot parse coordinates on this line:\n0.5 0.5")).error == (
        "UserWarning: Cannot parse coordinates on this line: 0.5 0.5")
    assert attempt(int, "7").value == 7 and attempt(int, "7").ok
    with pytest.raises(KeyboardInterrupt):
        attempt(boom, KeyboardInterrupt())
    assert "\n" not in describe(RuntimeError("a\nb\nc")) and len(describe(RuntimeError("x" * 10_000))) == 300


# ---------------------------------------------------------------------------------------------- prescreen


class _FragileStage:
    """A batched stage (like a model) that raises for the whole batch when it holds a Au structure."""

    name = "fragile"

    def check(self, structure: Structure) -> StageOutcome:
        return self.check_many([structure])[0]

    def check_many(self, structures: Sequence[Structure]) -> list[StageOutcome]:
        if any("Au" in s.composition for s in structures):
            raise ZeroDivisionError("float division by zero")
        return [StageOutcome(passed=True, value=float(len(s))) for s in structures]


@pytest.mark.parametrize("gate", [True, False])
def test_a_stage_that_raises_for_one_structure_fails_only_that_one(gate: bool) -> None:
    batch = [_fcc("Cu", 3.6, 0), _fcc("Au", 4.1, 1), _fcc("Ni", 3.5, 2)]
    results = Prescreen(stages=[_FragileStage()], gate=gate).run(batch)
    assert [r.passed for r in results] == [True, False, True]
    assert results[1].failed_stage == "fragile"
    assert results[1].outcomes["fragile"].reason == "fragile check raised ZeroDivisionError: float division by zero"
    assert results[0].outcomes["fragile"].value == 4.0


# ---------------------------------------------------------------------------------------------- relax on Dask


class MemoryHogRelaxer(EMTRelaxer):
    """EMT, except that a Au structure makes the relaxation grow without bound (64 MB a step, up to 8 GB)."""

    def relax(self, structure: Structure):
        if "Au" in structure.composition:
            held = []
            for _ in range(128):
                held.append(np.ones(8 * 1024 * 1024))  # 64 MB, touched
                time.sleep(0.02)
            raise AssertionError("the nanny should have killed this worker long before")
        return super().relax(structure)


@pytest.mark.slow
def test_a_worker_that_runs_out_of_memory_is_restarted_and_only_its_structure_fails() -> None:
    batch = [_fcc("Cu", 3.6, 0), _fcc("Au", 4.1, 1), _fcc("Ni", 3.5, 2), _fcc("Pd", 3.9, 3), _fcc("Pt", 3.9, 4)]
    t0 = time.perf_counter()
    results = dict(relax_many(batch, workers=2, relaxer=MemoryHogRelaxer(params=RelaxParams(steps=100)),
                              worker_memory="1GB"))
    assert sorted(results) == list(range(len(batch)))
    assert not results[1].converged and "KilledWorker" in (results[1].error or ""), results[1].error
    for i in (0, 2, 3, 4):
        assert results[i].error is None and results[i].converged, (i, results[i].error)
    assert time.perf_counter() - t0 < 120


# ---------------------------------------------------------------------------------------------- evaluate


def test_evaluate_goes_on_past_a_candidate_whose_structure_cannot_be_rebuilt() -> None:
    good = [Candidate.from_structure(_fcc("Cu", 3.6, k), source=f"cu{k}.cif") for k in range(2)]
    broken = Candidate(source="broken.cif", cif="data_x\nloop_\n_atom_site_label\n")  # no error set: it looks live
    candidates = [good[0], broken, good[1]]
    params = EvaluateParams(prescreen=PrescreenParams.model_validate({"ehull": {"enabled": False}}),
                            relax=RelaxParams(steps=50), workers=0, novelty=False)
    steps = list(iter_evaluate(candidates, params, relaxer=EMTRelaxer(params=RelaxParams(steps=50))))
    assert steps[-1].stage == "done"
    assert broken.error is not None and broken.error.startswith("prescreen: cannot rebuild the structure: ")
    assert not broken.relaxed and broken.e_hull is None
    for c in good:
        assert c.error is None and c.relaxed and c.e_hull is not None and c.spacegroup == "Fm-3m"


def test_the_geometry_stage_applies_the_sanity_bounds_to_generated_cells() -> None:
    """A sampled cell never passed a reader: a runaway c is refused by the bound, not by a 150 GB search."""
    from tessera.tools.prescreen import GeometryStage

    runaway = Structure(Lattice.from_parameters(4, 4, 1e9, 90, 90, 90), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0]])
    t0 = time.perf_counter()
    out = GeometryStage().check(runaway)
    assert not out.passed and "cell length c = 1e+09 A: longer than the limit" in (out.reason or "")
    assert time.perf_counter() - t0 < 1.0
