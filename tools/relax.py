"""Structure relaxation: CHGNet (model 0.3.0, weights shipped inside the chgnet wheel), FIRE with a cell filter.

- :class:`Relaxer` is the one-method protocol (``relax(structure) -> RelaxOutcome``).
- :class:`CalculatorRelaxer` relaxes with any ASE calculator; :class:`CHGNetRelaxer` is the real one,
  :class:`EMTRelaxer` a cheap stand-in (ASE EMT: Al, Cu, Ag, Au, Ni, Pd, Pt) for fast tests.
- :func:`relax_one` relaxes one structure with CHGNet, in-process.
- :func:`relax_many` fans out over Dask (a LocalCluster with one single-threaded worker process per core,
  or an existing cluster by ``address``) and yields ``(index, RelaxOutcome)`` as each finishes.
- :func:`static_energies` gives batched CHGNet single-point energies (eV/atom) for the prescreen and hull.
- :class:`SevenNetRelaxer` is the second judge (SevenNet-0 from the sevenn wheel, same limits, same fan-out);
  its energies are raw GGA/GGA+U and need the ``mp2020`` scheme (tools/energy_scale.py).

A relaxation that explodes (volume per atom grows beyond ``max_volume_ratio`` x or shrinks below
``min_volume_ratio`` x its start, or two atoms come closer than ``min_distance``), gives a non-finite
energy or force, or runs past ``max_seconds`` is marked failed with the reason; the batch goes on. One
that only runs out of ``steps`` is returned unconverged without an error. Energies are CHGNet's
uncorrected total energies per atom (eV/atom).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import warnings
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure

from tessera.tools.candidate import RelaxOutcome
from tessera.tools.config import load_config
from tessera.tools.io import min_periodic_distance
from tessera.tools.isolation import attempt

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator
    from chgnet.model import CHGNet

CHGNET_MODEL = "0.3.0"


class RelaxParams(BaseModel):
    """Relaxation settings (``configs/relax.yaml``). Echo them into the audit log with the outcomes."""

    model_config = ConfigDict(extra="forbid")

    fmax: float = Field(0.05, gt=0, description="eV/A: converged when every generalized force (atoms and cell) is below")
    steps: int = Field(500, ge=1, description="FIRE steps at most")
    max_seconds: float = Field(120.0, gt=0, description="wall-time limit per structure, s")
    cell_filter: Literal["frechet", "exp", "none"] = Field("frechet", description="ASE cell filter; none = fixed cell")
    max_volume_ratio: float = Field(5.0, gt=1, description="fail when volume/atom grows beyond this x the start")
    min_volume_ratio: float = Field(0.2, gt=0, lt=1, description="fail when volume/atom shrinks below this x the start")
    min_distance: float = Field(0.5, ge=0, description="A: fail when two atoms come closer (collapse)")
    check_every: int = Field(10, ge=1, description="steps between the (costlier) interatomic-distance checks")
    model: str = Field(CHGNET_MODEL, description="CHGNet weights shipped in the chgnet package")
    threads: int | None = Field(
        1, ge=1, description="torch and BLAS threads during a relaxation (None: leave as is). Small cells gain "
        "nothing from more; on shared cores extra threads spin, and a 3x3 solve in the cell filter went from "
        "0.01 ms to 5 ms with OpenBLAS's default thread pool here",
    )


def load_relax_params(path: str | Path | None = None) -> RelaxParams:
    """Settings from YAML (default ``configs/relax.yaml``; built-in defaults when that file is absent)."""
    return load_config(RelaxParams, "relax", path)


@runtime_checkable
class Relaxer(Protocol):
    """Anything that relaxes one structure. Must not raise for a bad structure: return a failed outcome."""

    def relax(self, structure: Structure) -> RelaxOutcome: ...


# ---------------------------------------------------------------------------------------------- CHGNet model


@contextlib.contextmanager
def compute_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads and ``n`` BLAS/OpenMP threads, restoring both after.

    ``None`` changes nothing.
    """
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_chgnet() -> Iterator[None]:
    """Silence CHGNet 0.3.8's per-call "Converting a tensor with requires_grad=True" UserWarning.

    Applied where CHGNet runs (here and in Dask worker processes), so no entry point has to filter it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True", category=UserWarning)
        yield


_MODELS: dict[str, "CHGNet"] = {}
_MODEL_LOCK = threading.Lock()


def load_chgnet(model: str = CHGNET_MODEL) -> "CHGNet":
    """The CHGNet model, loaded once per process (a Dask worker loads it at its first task).

    The weights ship inside the chgnet package; nothing is downloaded.
    """
    with _MODEL_LOCK:
        if model not in _MODELS:
            from chgnet.model import CHGNet

            # CHGNet.load prints its parameter count and device; keep stdout clean for --json callers.
            with contextlib.redirect_stdout(io.StringIO()):
                _MODELS[model] = CHGNet.load(model_name=model, use_device="cpu", verbose=False)
            _MODELS[model].eval()
        return _MODELS[model]


def static_energies(
    structures: Sequence[Structure], *, model: str = CHGNET_MODEL, batch_size: int = 16, threads: int | None = 1
) -> list[float]:
    """CHGNet single-point energies of the structures as given (no relaxation).

    Returns:
        One energy per structure, eV/atom (uncorrected), NaN where CHGNet could not evaluate it.
    """
    if not structures:
        return []
    net = load_chgnet(model)
    with compute_threads(threads), quiet_chgnet():
        out = _static_energies(net, structures, batch_size)
    return [e if math.isfinite(e) else float("nan") for e in out]


def _static_energies(net: "CHGNet", structures: Sequence[Structure], batch_size: int) -> list[float]:
    out: list[float] = []
    for start in range(0, len(structures), batch_size):
        chunk = list(structures[start:start + batch_size])
        try:
            preds = net.predict_structure(chunk, task="e", batch_size=batch_size)
            preds = preds if isinstance(preds, list) else [preds]
            out.extend(float(np.asarray(p["e"]).reshape(-1)[0]) for p in preds)
        except (RuntimeError, ValueError, IndexError, TypeError):
            # One bad structure spoils a batched graph; evaluate this chunk one by one.
            for s in chunk:
                try:
                    p = net.predict_structure(s, task="e")
                    out.append(float(np.asarray(p["e"]).reshape(-1)[0]))
                except (RuntimeError, ValueError, IndexError, TypeError):
                    out.append(float("nan"))
    return out


# ---------------------------------------------------------------------------------------------- relaxation


def _filtered(atoms: "Atoms", cell_filter: str):
    if cell_filter == "none":
        return atoms
    from ase.filters import ExpCellFilter, FrechetCellFilter

    return FrechetCellFilter(atoms) if cell_filter == "frechet" else ExpCellFilter(atoms)


def _to_structure(atoms: "Atoms") -> Structure:
    from pymatgen.io.ase import AseAtomsAdaptor

    s = AseAtomsAdaptor.get_structure(atoms)
    for key in list(s.site_properties):
        s.remove_site_property(key)
    return s


def _max_atomic_force(atoms: "Atoms") -> float:
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def relax_with_calculator(structure: Structure, calculator: "Calculator", params: RelaxParams) -> RelaxOutcome:
    """Relax ``structure`` with an ASE calculator: FIRE on the cell-filtered atoms, with the limits of ``params``.

    Never raises for a bad structure or a failing calculator: the outcome carries ``error``.
    ``max_force`` is the largest atomic force (eV/A) at the end; convergence is ASE's test on the
    filtered (atoms + cell) forces, so a converged outcome has ``max_force <= fmax``.
    """
    with compute_threads(params.threads), quiet_chgnet():
        return _relax(structure, calculator, params)


def _relax(structure: Structure, calculator: "Calculator", params: RelaxParams) -> RelaxOutcome:
    from ase.optimize import FIRE
    from pymatgen.io.ase import AseAtomsAdaptor

    t0 = time.perf_counter()
    n = len(structure)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    for key in list(atoms.arrays):
        if key not in ("numbers", "positions"):
            del atoms.arrays[key]
    atoms.calc = calculator
    v0 = atoms.get_volume() / n
    e_init: float | None = None
    e_last: float | None = None
    steps = 0

    def failed(reason: str, *, keep_structure: bool = False) -> RelaxOutcome:
        cif = None
        fmax_now = None
        if keep_structure:
            cif = _to_structure(atoms).to(fmt="cif")
            with contextlib.suppress(Exception):  # forces are a courtesy here; the reason is already known
                fmax_now = _max_atomic_force(atoms)
        return RelaxOutcome(converged=False, steps=steps, energy_per_atom=e_last, initial_energy_per_atom=e_init,
                            max_force=fmax_now, seconds=time.perf_counter() - t0, cif=cif, error=reason)

    try:
        e_init = float(atoms.get_potential_energy()) / n
        if not math.isfinite(e_init):
            return failed("non-finite energy at the start")
        e_last = e_init
        opt = FIRE(_filtered(atoms, params.cell_filter), logfile=None)
        converged = False
        for converged in opt.irun(fmax=params.fmax, steps=params.steps):
            steps = opt.nsteps
            e = float(atoms.get_potential_energy()) / n
            if not math.isfinite(e) or not np.all(np.isfinite(atoms.get_forces())):
                return failed(f"non-finite energy or forces at step {steps}")
            e_last = e
            if converged:
                break
            ratio = atoms.get_volume() / n / v0
            if not math.isfinite(ratio) or ratio > params.max_volume_ratio:
                return failed(f"exploded: volume/atom grew {ratio:.1f}x at step {steps}")
            if ratio < params.min_volume_ratio:
                return failed(f"collapsed: volume/atom shrank to {ratio:.2f}x at step {steps}")
            if steps % params.check_every == 0:
                d, _, _ = min_periodic_distance(_to_structure(atoms), cutoff=max(params.min_distance, 1e-3))
                if d < params.min_distance:
                    return failed(f"collapsed: two atoms {d:.2f} A apart at step {steps}")
            if time.perf_counter() - t0 > params.max_seconds:
                return failed(f"time limit {params.max_seconds:g} s reached after {steps} steps",
                              keep_structure=True)
        final = _to_structure(atoms)
        d, _, _ = min_periodic_distance(final, cutoff=max(params.min_distance, 1e-3))
        if d < params.min_distance:
            return failed(f"collapsed: two atoms {d:.2f} A apart at the end")
        return RelaxOutcome(
            converged=bool(converged),
            steps=steps,
            energy_per_atom=e_last,
            initial_energy_per_atom=e_init,
            max_force=_max_atomic_force(atoms),
            seconds=time.perf_counter() - t0,
            cif=final.to(fmt="cif"),
        )
    except Exception as exc:  # noqa: BLE001 - a calculator blowing up on one structure is that item's failure
        msg = str(exc).splitlines()[0] if str(exc) else ""
        return failed(f"calculator failed at step {steps}: {type(exc).__name__}: {msg}"[:300])


class CalculatorRelaxer:
    """A :class:`Relaxer` around any ASE calculator; ``calculator_factory`` builds one per relaxation."""

    def __init__(self, *, calculator_factory: Callable[[], "Calculator"], params: RelaxParams | None = None) -> None:
        self.calculator_factory = calculator_factory
        self.params = params or RelaxParams()

    def relax(self, structure: Structure) -> RelaxOutcome:
        return relax_with_calculator(structure, self.calculator_factory(), self.params)


_EMT_ELEMENTS = frozenset({"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"})


def _emt() -> "Calculator":
    from ase.calculators.emt import EMT

    return EMT()


class EMTRelaxer(CalculatorRelaxer):
    """Cheap stand-in: ASE's effective-medium potential for Al, Cu, Ag, Au, Ni, Pd, Pt (fast tests, demos)."""

    def __init__(self, *, params: RelaxParams | None = None) -> None:
        super().__init__(calculator_factory=_emt, params=params)

    def relax(self, structure: Structure) -> RelaxOutcome:
        other = sorted({el.symbol for el in structure.composition.elements} - _EMT_ELEMENTS)
        if other:
            return RelaxOutcome(converged=False, steps=0, seconds=0.0,
                                error=f"EMT stand-in has no parameters for {', '.join(other)}")
        return super().relax(structure)


class CHGNetRelaxer:
    """The real relaxer: CHGNet (cached per process) + FIRE + cell filter."""

    def __init__(self, *, params: RelaxParams | None = None) -> None:
        self.params = params or RelaxParams()

    def relax(self, structure: Structure) -> RelaxOutcome:
        from chgnet.model.dynamics import CHGNetCalculator

        try:
            model = load_chgnet(self.params.model)
        except (OSError, RuntimeError, ValueError) as exc:
            return RelaxOutcome(converged=False, steps=0, seconds=0.0, error=f"cannot load CHGNet: {exc}")
        with contextlib.redirect_stdout(io.StringIO()):
            calc = CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="ignore")
        return relax_with_calculator(structure, calc, self.params)


# ---------------------------------------------------------------------------------------------- SevenNet

SEVENNET_MODELS: tuple[str, ...] = ("7net-0", "7net-l3i5")
SEVENNET_MODEL = "7net-0"
"""The second judge's weights (shipped in the sevenn wheel). Chosen by measurement (benchmarks/README.md, Judge):
on 8 held-out MP ground states (10 and 20 atoms, from their DFT geometry, 1 thread) the two agree on energy
to 0.02 eV/atom at the DFT geometry and on E_hull to 0.02 eV/atom after relaxation, while l3i5 costs 2-12x
more per FIRE step (20 atoms: 13.2 s vs 2.7 s for 4 steps; 8.7 s vs 0.7 s). l3i5's better Matbench
Discovery F1 (0.76 vs 0.72) does not pay for that when the judge runs on every hit of a campaign."""

_SEVENNET: dict[str, "Calculator"] = {}


def load_sevennet(model: str = SEVENNET_MODEL) -> "Calculator":
    """The SevenNet ASE calculator, built once per process (a Dask worker builds it at its first task).

    The weights ship inside the sevenn wheel; nothing is downloaded. Raises ValueError for an unknown model.
    """
    if model not in SEVENNET_MODELS:
        raise ValueError(f"unknown SevenNet model '{model}' (choose from {', '.join(SEVENNET_MODELS)})")
    with _MODEL_LOCK:
        if model not in _SEVENNET:
            with warnings.catch_warnings():
                # "No tensor product accelerator": the CPU path is the one we measure and use.
                warnings.simplefilter("ignore")
                from sevenn.calculator import SevenNetCalculator

                with contextlib.redirect_stdout(io.StringIO()):
                    _SEVENNET[model] = SevenNetCalculator(model, device="cpu")
        return _SEVENNET[model]


class SevenNetRelaxer:
    """The second judge: SevenNet (``7net-0`` by default, or ``7net-l3i5``) + FIRE + cell filter, on CPU.

    Same limits as the CHGNet relaxer (``params``: fmax, steps, max_seconds, explosion/collapse checks);
    ``params.model`` (a CHGNet name) is ignored, ``model`` names the SevenNet weights. Energies are SevenNet's
    raw total energies per atom (eV/atom): uncorrected GGA/GGA+U like its MPtrj training labels, so they meet
    the hull through the ``mp2020`` scheme (tools/energy_scale.py), unlike CHGNet's.
    Picklable: a Dask worker builds its own calculator once.
    """

    def __init__(self, *, params: RelaxParams | None = None, model: str = SEVENNET_MODEL) -> None:
        if model not in SEVENNET_MODELS:
            raise ValueError(f"unknown SevenNet model '{model}' (choose from {', '.join(SEVENNET_MODELS)})")
        self.params = params or RelaxParams()
        self.model = model

    def relax(self, structure: Structure) -> RelaxOutcome:
        try:
            calc = load_sevennet(self.model)
        except (OSError, RuntimeError, ValueError, ImportError) as exc:
            return RelaxOutcome(converged=False, steps=0, seconds=0.0, error=f"cannot load SevenNet: {exc}")
        return relax_with_calculator(structure, calc, self.params)


def sevennet_static_energies(structures: Sequence[Structure], *, model: str = SEVENNET_MODEL,
                             threads: int | None = 1) -> list[float]:
    """SevenNet single-point energies of the structures as given (eV/atom), NaN where it fails."""
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = load_sevennet(model)
    out: list[float] = []
    with compute_threads(threads):
        for s in structures:
            try:
                atoms = AseAtomsAdaptor.get_atoms(s)
                atoms.calc = calc
                e = float(atoms.get_potential_energy()) / len(s)
            except (RuntimeError, ValueError, IndexError) as exc:  # one bad structure is that item's NaN
                del exc
                e = float("nan")
            out.append(e if math.isfinite(e) else float("nan"))
    return out


def relax_one(structure: Structure, params: RelaxParams | None = None) -> RelaxOutcome:
    """Relax one structure with CHGNet in this process (no Dask). Never raises for a bad structure."""
    return CHGNetRelaxer(params=params).relax(structure)


# ---------------------------------------------------------------------------------------------- fan-out


def _safe_relax(relaxer: Relaxer, structure: Structure) -> RelaxOutcome:
    """The per-item boundary of a relaxation: a Relaxer that raises (any type) fails its item, not the batch."""
    t0 = time.perf_counter()
    done = attempt(relaxer.relax, structure)
    if done.ok and done.value is not None:
        return done.value
    return RelaxOutcome(converged=False, steps=0, seconds=time.perf_counter() - t0,
                        error=f"relaxer raised {done.error}")


def _worker_task(relaxer: Relaxer, structure: Structure) -> RelaxOutcome:
    """Runs inside a Dask worker process: one torch/BLAS thread (the worker shares cores with its siblings)."""
    with compute_threads(1):
        return _safe_relax(relaxer, structure)


def relax_many(
    structures: Sequence[Structure],
    params: RelaxParams | None = None,
    *,
    workers: int | None = None,
    address: str | None = None,
    relaxer: Relaxer | None = None,
    worker_memory: str | int | None = None,
) -> Iterator[tuple[int, RelaxOutcome]]:
    """Relax a batch, yielding ``(index, outcome)`` in completion order.

    Args:
        structures: the batch.
        params: relaxation settings for the default CHGNet relaxer (ignored when ``relaxer`` is given).
        workers: local Dask worker processes (default one per core); ``0`` runs serially in this process
            without Dask. Ignored when ``address`` is given.
        address: scheduler address of an existing Dask cluster to use instead of a LocalCluster.
        relaxer: any picklable :class:`Relaxer` (default :class:`CHGNetRelaxer`).
        worker_memory: memory limit per local worker (default ``tools.dask_cluster.WORKER_MEMORY_LIMIT``); a
            worker that passes it is restarted by its nanny and its structure recorded as failed.

    Every index is yielded exactly once. A structure whose task dies with its worker (killed, out of
    memory) is yielded as a failed outcome naming that; the rest of the batch goes on. At most one task
    per worker thread is in flight, so a dying worker takes only its own structure with it.
    """
    relaxer = relaxer if relaxer is not None else CHGNetRelaxer(params=params)
    if not structures:
        return
    if workers == 0 and address is None:
        for i, s in enumerate(structures):
            yield i, _safe_relax(relaxer, s)
        return

    from distributed import as_completed

    from tessera.tools.dask_cluster import dask_client, total_threads

    with dask_client(workers=workers, address=address, memory_limit=worker_memory) as client:
        window = total_threads(client)
        pending = list(enumerate(structures))[::-1]
        submitted: dict[str, tuple[int, float, object]] = {}

        def submit_next(ac: "as_completed | None" = None):
            i, s = pending.pop()
            fut = client.submit(_worker_task, relaxer, s, key=f"relax-{i}-{os.urandom(4).hex()}", pure=False)
            submitted[fut.key] = (i, time.perf_counter(), fut)
            if ac is not None:
                ac.add(fut)
            return fut

        first = [submit_next() for _ in range(min(window, len(pending)))]
        ac = as_completed(first)
        try:
            for fut in ac:
                i, t_sub, _ = submitted.pop(fut.key)
                # KilledWorker (the worker died: killed, or past its memory limit, and was restarted), a lost
                # connection: whatever the future raises, this item fails and the batch goes on.
                got = attempt(fut.result)
                outcome = got.value if got.ok and got.value is not None else RelaxOutcome(
                    converged=False, steps=0, seconds=time.perf_counter() - t_sub,
                    error=f"task lost with its worker ({got.error})",
                )
                fut.release()
                if pending:
                    submit_next(ac)
                yield i, outcome
        finally:
            # The caller stopped early (or we are done): drop whatever is still queued or running.
            if submitted:
                client.cancel([f for _, _, f in submitted.values()])
