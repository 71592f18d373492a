"""``tessera.sample`` and ``tessera.evaluate_structures``: the sampling and evaluation jobs of
``tessera.tools`` with defaults that work from a plain script or a notebook. Heavy modules are imported
inside the functions, so ``import tessera`` stays cheap."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from tessera.store.store import Store
    from tessera.tools.candidate import Candidate
    from tessera.tools.evaluate import EvaluateFilesResult
    from tessera.tools.runlog import RunOpener
    from tessera.tools.sample import SampleResult

    StoreLike = Union[Store, str, os.PathLike[str], bool, None]
    Judgeable = Union[Structure, Candidate, str, os.PathLike[str]]


def _run_opener(store: "StoreLike") -> "RunOpener | None":
    """``store.start_run`` of the store named (a Store, a path or URI, True for the default), or None."""
    if store is None or store is False:
        return None
    from tessera.store.store import Store

    if isinstance(store, Store):
        return store.start_run
    return Store.open(None if store is True else store).start_run


def _elements(elements: "str | Iterable[str] | None") -> list[str]:
    if elements is None:
        return []
    if isinstance(elements, str):
        return [e for e in elements.replace("-", ",").replace(" ", ",").split(",") if e]
    return [str(e) for e in elements]


def sample(
    n: int = 8,
    *,
    elements: "str | Iterable[str] | None" = None,
    seed: int = 0,
    out: "str | os.PathLike[str] | None" = None,
    store: "StoreLike" = None,
    **options: Any,
) -> "SampleResult":
    """Sample ``n`` crystals with the shipped diffusion model (offline, CPU; the same seed gives the same
    crystals).

    Args:
        n: number of crystals.
        elements: allowed elements, ``["Li", "Co", "O"]`` or ``"Li,Co,O"`` / ``"Li-Co-O"`` (None: any).
        seed: random seed.
        out: folder for ``candidates.jsonl`` and one CIF per crystal (None: a new temporary folder).
        store: record a ``sample`` run in this store (a :class:`tessera.Store`, a path or URI, or True for
            the default store); None records nothing.
        **options: any other field of :class:`tessera.tools.sample.SampleParams`, e.g. ``atoms`` (per
            cell), ``n_elements``, ``steps`` (reverse steps; fewer is faster and rougher), ``motif``
            (a :class:`tessera.tools.spec.MotifSpec`), ``guidance``, ``checkpoint``, ``threads``.

    Returns:
        :class:`tessera.SampleResult`: ``candidates`` (a :class:`tessera.Candidate` per crystal, with id,
        formula, ``structure()`` and provenance: seed, index, checkpoint hash, sample run), ``cif_paths``,
        ``seconds``, ``run_id`` and the parameters used (``params``). Warnings about doubtful options are
        also issued as Python warnings.

    Raises:
        InputError: a bad option (unknown element, missing checkpoint, ...), one line.
    """
    from tessera.tools.sample import SampleParams, sample_crystals

    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="tessera-sample-"))
    params = SampleParams(out=folder, n=n, seed=seed, elements=_elements(elements), **options)
    return sample_crystals(params, open_run=_run_opener(store),
                           on_warning=lambda message: warnings.warn(message, UserWarning, stacklevel=3))


def evaluate_structures(
    items: "Judgeable | SampleResult | Iterable[Judgeable]",
    *,
    out: "str | os.PathLike[str] | None" = None,
    workers: int = 0,
    store: "StoreLike" = None,
    **options: Any,
) -> "EvaluateFilesResult":
    """Judge crystals: prescreen, CHGNet relaxation, E_hull against the shipped reference hull, space
    group, uniqueness within the batch and novelty against the reference pool.

    Args:
        items: pymatgen Structures, :class:`tessera.Candidate` records (they keep their id and lineage),
            structure files or folders (CIF, POSCAR, extxyz, pymatgen JSON, a sample's folder), or a
            :class:`tessera.SampleResult`; one item or a list. The caller's objects are not modified.
        out: folder for ``candidates.jsonl``, ``summary.json`` and the relaxation journal (None: a new
            temporary folder).
        workers: 0 (default) relaxes one structure after another in this process, no Dask, so a script
            without an ``if __name__ == "__main__":`` guard or a notebook works. N > 0 starts a Dask
            LocalCluster of N worker processes: faster for many structures, and then a script must
            guard its top-level code.
        store: record an ``evaluate`` run (audit log, candidates) in this store (a :class:`tessera.Store`,
            a path or URI, or True for the default store); None records nothing.
        **options: any other field of :class:`tessera.tools.evaluate.EvaluateParams`, e.g. ``gate=True``
            (every prescreen stage gates relaxation), ``max_relaxations`` (relax at most this many,
            best-first by the prescreen's E_hull estimate), ``confirm="sevennet"`` (a second judge),
            ``stable_threshold``, ``relax`` (a :class:`tessera.tools.relax.RelaxParams`), ``address``
            (an existing Dask scheduler).

    Returns:
        :class:`tessera.EvaluateResult`: ``candidates`` (a :class:`tessera.Candidate` per input, in the
        given order, except that files and folders follow the Structures and Candidates: ``id``,
        ``formula``, ``e_hull`` in eV/atom, ``stable``, ``unique``, ``novel``, ``confirmed``, ``spacegroup``,
        ``error`` and ``structure()``, the relaxed one), ``summary`` (:class:`tessera.EvaluateSummary`:
        counts and rates, ``n_stable``, ``n_sun``, ...; CHGNet-evaluated), ``run_id`` and the parameters used.

    Raises:
        InputError: nothing to judge, a missing path or an unusable ``out``, one line. A bad structure
        does not raise: its candidate carries ``error`` and the batch goes on.
    """
    from pymatgen.core import Structure

    from tessera.tools.candidate import Candidate
    from tessera.tools.errors import InputError
    from tessera.tools.evaluate import EvaluateFilesParams, EvaluateParams, evaluate_files
    from tessera.tools.sample import SampleResult

    if isinstance(items, SampleResult):
        items = list(items.candidates)
    elif isinstance(items, (Structure, Candidate, str, os.PathLike)):
        items = [items]
    items = list(items)
    if not items:
        raise InputError("evaluate_structures: nothing to judge (an empty list)")
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="tessera-evaluate-"))
    records: list[dict[str, Any]] = []
    paths: list[Path] = []
    for k, item in enumerate(items):
        if isinstance(item, Structure):
            c = Candidate.from_structure(item)
            records.append({"id": c.id, "cif": c.cif, "provenance": {"python_index": k}})
        elif isinstance(item, Candidate):
            cif = item.initial_cif or item.cif
            if not cif:
                raise InputError(f"evaluate_structures: candidate {item.id} has no structure")
            records.append({"id": item.id, "cif": cif, "provenance": dict(item.provenance)})
        elif isinstance(item, (str, os.PathLike)):
            paths.append(Path(item))
        else:
            raise InputError(f"evaluate_structures: item {k} is a {type(item).__name__}; give pymatgen "
                             "Structures, tessera Candidates, or paths to structure files or folders")
    if records:
        # Objects go through the same reader as a sample's folder (tessera.tools.lineage): one code path,
        # the same checks, and each Candidate keeps its id and provenance.
        inputs = folder / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        with open(inputs / "candidates.jsonl", "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(r, default=str) + "\n")
        paths.insert(0, inputs / "candidates.jsonl")
    evaluate = EvaluateParams(workers=workers, **options)
    return evaluate_files(EvaluateFilesParams(paths=paths, out=folder, evaluate=evaluate),
                          open_run=_run_opener(store))
