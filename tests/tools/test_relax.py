"""Relaxation physics and failure handling: CHGNet and the EMT stand-in, limits, and the Dask fan-out."""

from __future__ import annotations

import os
import socket
import sys

import cloudpickle
import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones
from pymatgen.core import Lattice, Structure

from tests.conftest import rattled
from tessera.tools.dask_cluster import dask_client
from tessera.tools.relax import (
    CalculatorRelaxer,
    CHGNetRelaxer,
    EMTRelaxer,
    Relaxer,
    RelaxParams,
    load_chgnet,
    load_relax_params,
    relax_many,
    relax_one,
    static_energies,
)

# Stand-ins below are defined here, so Dask workers (fresh processes) get them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class NaNCalculator(Calculator):
    """An ASE calculator whose model 'breaks': energy and forces are NaN."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        n = len(self.atoms)
        self.results = {"energy": float("nan"), "forces": np.full((n, 3), np.nan), "stress": np.full(6, np.nan)}


class MisbehavingRelaxer(EMTRelaxer):
    """EMT, except that a Au-containing structure kills its worker process and a Ag one raises."""

    def relax(self, structure: Structure):
        if "Au" in structure.composition:
            os._exit(17)  # a hard crash: no exception, no cleanup (like the OOM killer)
        if "Ag" in structure.composition:
            raise RuntimeError("model exploded on Ag")
        return super().relax(structure)


def _has_chgnet() -> bool:
    """Runs on a worker: has this process loaded CHGNet (the per-process cache)?"""
    from tessera.tools import relax

    return bool(relax._MODELS)


def _fcc(element: str, a: float, seed: int) -> Structure:
    s = Structure(Lattice.cubic(a), [element] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return rattled(s, amplitude=0.08, seed=seed)


# ---------------------------------------------------------------------------------------------- CHGNet


def test_chgnet_loads_offline_from_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from chgnet.model import CHGNet

    net = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    assert net.version == "0.3.0"
    assert load_chgnet() is load_chgnet()  # cached per process


def test_chgnet_relaxation_lowers_energy_and_ends_below_fmax(nacl: Structure) -> None:
    start = rattled(nacl, amplitude=0.1, seed=0)
    start.scale_lattice(start.volume * 1.08)
    params = RelaxParams(fmax=0.05, steps=300, max_seconds=90)
    out = relax_one(start, params)
    assert out.error is None and out.converged, out
    assert out.steps > 0
    assert out.energy_per_atom < out.initial_energy_per_atom - 1e-3
    assert out.max_force <= params.fmax
    final = Structure.from_str(out.cif, fmt="cif")
    assert final.composition == start.composition
    assert final.volume < start.volume  # the expanded cell shrinks back
    # The single-point energy of the relaxed structure agrees with the relaxation's last energy.
    e_final, e_start = static_energies([final, start])
    assert e_final == pytest.approx(out.energy_per_atom, abs=2e-3)
    assert e_start == pytest.approx(out.initial_energy_per_atom, abs=1e-4)


def test_static_energies_batched_equal_single_and_invariant(si: Structure, nacl: Structure) -> None:
    batch = static_energies([si, nacl, si * (1, 1, 2)], batch_size=2)
    singles = [static_energies([s])[0] for s in (si, nacl)]
    assert batch[:2] == pytest.approx(singles, abs=1e-5)
    assert batch[2] == pytest.approx(batch[0], abs=1e-4)  # per-atom energy is supercell invariant
    moved = si.copy()
    moved.translate_sites(list(range(len(si))), [0.31, 0.2, 0.77])
    assert static_energies([moved])[0] == pytest.approx(batch[0], abs=1e-5)


# ---------------------------------------------------------------------------------------------- EMT stand-in


def test_emt_relaxation_finds_the_fcc_minimum(cu_fcc: Structure) -> None:
    start = rattled(cu_fcc, amplitude=0.08, seed=2)  # a = 3.70 A, EMT's minimum is near 3.59 A
    relaxer: Relaxer = EMTRelaxer(params=RelaxParams(fmax=0.01, steps=400))
    out = relaxer.relax(start)
    assert out.converged and out.error is None
    assert out.energy_per_atom < out.initial_energy_per_atom
    assert out.max_force <= 0.01
    final = Structure.from_str(out.cif, fmt="cif")
    assert (final.volume / 4) ** (1 / 3) * 4 ** (1 / 3) == pytest.approx(3.59, abs=0.03)


def test_failures_are_marked_not_raised(cu_fcc: Structure) -> None:
    nan = CalculatorRelaxer(calculator_factory=NaNCalculator).relax(cu_fcc)
    assert not nan.converged and "non-finite" in (nan.error or "")

    crushed = Structure(Lattice.cubic(2.0), ["Ar"] * 4, cu_fcc.frac_coords)  # Lennard-Jones gas squeezed hard
    lj = CalculatorRelaxer(calculator_factory=lambda: LennardJones(sigma=2.3, epsilon=0.4, rc=6.0))
    boom = lj.relax(crushed)
    assert not boom.converged and "exploded" in (boom.error or "")

    overlapping = cu_fcc.copy()
    overlapping.replace(3, "Cu", [0.04, 0.0, 0.0])
    collapsed = EMTRelaxer().relax(overlapping)
    assert not collapsed.converged and "apart" in (collapsed.error or "")

    slow = EMTRelaxer(params=RelaxParams(max_seconds=1e-4)).relax(rattled(cu_fcc, seed=4))
    assert not slow.converged and "time limit" in (slow.error or "") and slow.cif is not None

    short = EMTRelaxer(params=RelaxParams(steps=2)).relax(rattled(cu_fcc, seed=5))
    assert not short.converged and short.error is None and short.steps == 2  # out of steps is not a failure

    unsupported = EMTRelaxer().relax(Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    assert "no parameters for Cl, Na" in (unsupported.error or "")


def test_serial_batch_goes_on_past_a_bad_item(cu_fcc: Structure) -> None:
    batch = [_fcc("Cu", 3.7, 0), _fcc("Ag", 4.2, 1), _fcc("Ni", 3.6, 2)]
    results = dict(relax_many(batch, workers=0, relaxer=MisbehavingRelaxer()))
    assert sorted(results) == [0, 1, 2]
    assert results[0].converged and results[2].converged
    assert "relaxer raised RuntimeError: model exploded on Ag" == results[1].error


def test_shipped_relax_config_is_fmax_0_05_500_steps_120_s_frechet_chgnet_0_3_0() -> None:
    p = load_relax_params()
    assert (p.fmax, p.steps, p.max_seconds, p.cell_filter, p.model) == (0.05, 500, 120.0, "frechet", "0.3.0")


# ---------------------------------------------------------------------------------------------- Dask


@pytest.mark.slow
def test_dask_two_workers_survive_a_killed_worker_and_a_raising_task() -> None:
    batch = [_fcc("Cu", 3.7, 0), _fcc("Au", 4.2, 1), _fcc("Ni", 3.6, 2), _fcc("Ag", 4.2, 3), _fcc("Pd", 4.0, 4),
             _fcc("Pt", 4.0, 5)]
    results = {}
    for i, outcome in relax_many(batch, workers=2, relaxer=MisbehavingRelaxer()):
        assert i not in results
        results[i] = outcome
    assert sorted(results) == list(range(len(batch)))
    assert "KilledWorker" in (results[1].error or "") and not results[1].converged
    assert "model exploded on Ag" in (results[3].error or "")
    for i in (0, 2, 4, 5):
        assert results[i].converged and results[i].energy_per_atom < results[i].initial_energy_per_atom


@pytest.mark.slow
def test_dask_chgnet_matches_in_process(nacl: Structure, si: Structure) -> None:
    batch = [rattled(nacl, amplitude=0.1, seed=7), rattled(si, amplitude=0.05, seed=8)]
    params = RelaxParams(fmax=0.05, steps=200, max_seconds=120)
    with dask_client(workers=2) as client:  # an "existing cluster", joined by address
        remote = dict(relax_many(batch, params, address=client.scheduler.address))
        workers_with_model = client.run(_has_chgnet)
    assert sum(workers_with_model.values()) >= 1  # the model stays loaded in the workers (cached per process)
    local = {i: CHGNetRelaxer(params=params).relax(s) for i, s in enumerate(batch)}
    for i in range(len(batch)):
        assert remote[i].converged and remote[i].error is None
        # same model, same start, same optimizer: the same answer (one torch thread both sides)
        assert remote[i].energy_per_atom == pytest.approx(local[i].energy_per_atom, abs=1e-4)
        assert remote[i].steps == local[i].steps
