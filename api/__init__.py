"""Tessera from Python: sample crystals, judge structures, search the store.

::

    import tessera

    crystals = tessera.sample(n=4, elements=["Li", "Co", "O"], seed=0)    # SampleResult
    judged = tessera.evaluate_structures(crystals)                         # EvaluateResult (in this process)
    print(judged.summary.n_stable, "stable of", judged.summary.n_inputs)  # CHGNet, E_hull <= 0.1 eV/atom
    store = tessera.Store()                                                # $TESSERA_STORE or the default store
    hits = store.search(max_e_hull=0.1, limit=10)                          # list[StoredCandidate]

- :func:`sample` (``tessera._api.sample``): the shipped diffusion model, seeded; returns a
  :class:`SampleResult` whose ``candidates`` are :class:`Candidate` records (``.structure()`` gives the
  pymatgen Structure).
- :func:`evaluate_structures` (``tessera._api.evaluate_structures``): prescreen, CHGNet relaxation, hull,
  symmetry, uniqueness and novelty for pymatgen Structures, files or folders, Candidates or a SampleResult;
  returns an :class:`EvaluateResult`. It runs in this process by default (``workers=0``), so a plain script
  without an ``if __name__ == "__main__":`` guard, or a notebook, works; ``workers=N`` fans out over a Dask
  LocalCluster, and then a script needs the guard.
- :class:`Store` (``tessera._store.Store``): the candidate store, opened when constructed
  (``Store()``, ``Store("path/or/uri")``); ``search`` returns :class:`StoredCandidate` rows.

``import tessera`` is cheap: each name above is imported the first time it is used (PEP 562), so the heavy
stack (torch, CHGNet, LanceDB) loads only when a job needs it. The rooms are subpackages:
``tessera.tools``, ``tessera.store``, ``tessera.generators``, ``tessera.agents``, ``tessera.cli``.
"""

# This folder (api/) installs as the package ``tessera`` itself (pyproject.toml package-dir), so a module
# here named like a room (store.py, tools.py, ...) would shadow that room: keep helpers named _*.py.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tessera._api import evaluate_structures, sample
    from tessera._store import Store
    from tessera.store.schema import StoredCandidate
    from tessera.tools.candidate import Candidate
    from tessera.tools.evaluate import EvaluateFilesResult as EvaluateResult
    from tessera.tools.evaluate import EvaluateSummary
    from tessera.tools.sample import SampleResult

_LAZY: dict[str, tuple[str, str]] = {
    "sample": ("tessera._api", "sample"),
    "evaluate_structures": ("tessera._api", "evaluate_structures"),
    "Store": ("tessera._store", "Store"),
    "StoredCandidate": ("tessera.store.schema", "StoredCandidate"),
    "Candidate": ("tessera.tools.candidate", "Candidate"),
    "SampleResult": ("tessera.tools.sample", "SampleResult"),
    "EvaluateResult": ("tessera.tools.evaluate", "EvaluateFilesResult"),
    "EvaluateSummary": ("tessera.tools.evaluate", "EvaluateSummary"),
}

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("tessera")
        except PackageNotFoundError:
            value = "0+unknown"
    else:
        raise AttributeError(f"module 'tessera' has no attribute {name!r}")
    globals()[name] = value  # once resolved, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
