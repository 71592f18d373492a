"""A real writer process for the SIGKILL and concurrent-writer tests (not a test module itself).

Usage: python writer_child.py STORE TAG N_BATCHES BATCH_SIZE [SEED]

Starts a run, then per batch records BATCH_SIZE small real crystals (rock-salt and CsCl cells with
random lattice constants), one audit event and one review decision, printing ``ACK <ids...>``,
``EVT <seq>`` and ``REV <id>`` only after each write has returned. Prints ``RUN <run_id>`` first and ``DONE`` at the end.
"""

from __future__ import annotations

import sys

import numpy as np
from pymatgen.core import Lattice, Structure

from tessera.store import Store
from tessera.tools.candidate import Candidate

_PAIRS = [("Na", "Cl"), ("Mg", "O"), ("K", "Br"), ("Ca", "S"), ("Li", "F"), ("Cs", "I")]


def make(rng: np.random.Generator, tag: str, k: int) -> Candidate:
    a_el, b_el = _PAIRS[int(rng.integers(len(_PAIRS)))]
    a = float(rng.uniform(3.0, 6.0))
    if rng.random() < 0.5:
        fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
        s = Structure(Lattice.cubic(a), [a_el] * 4 + [b_el] * 4, np.vstack([fcc, fcc + 0.5]) % 1.0)
    else:
        s = Structure(Lattice.cubic(a), [a_el, b_el], [[0, 0, 0], [0.5, 0.5, 0.5]])
    c = Candidate.from_structure(s, source=f"writer:{tag}")
    c.id = f"{tag}-{k:05d}"
    c.e_hull = float(rng.normal(0.1, 0.1))
    c.stable = c.e_hull <= 0.1
    return c


def main() -> None:
    store_dir, tag, n_batches, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    rng = np.random.default_rng(seed)
    store = Store.open(store_dir)
    run = store.start_run("test_writer", {"tag": tag, "batches": n_batches})
    print("RUN", run.run_id, flush=True)
    k = 0
    for b in range(n_batches):
        batch = [make(rng, tag, k + i) for i in range(batch_size)]
        k += batch_size
        ids = run.add_candidates(batch, round=b)
        print("ACK", *ids, flush=True)
        ev = run.log_event("note", {"batch": b, "tag": tag})
        print("EVT", ev.seq, flush=True)
        store.review(ids[0], "approved", reviewer=tag, note=f"batch {b}", run_id=run.run_id)
        print("REV", ids[0], flush=True)
    run.finish({"batches": n_batches})
    print("CONFLICTS", store.conflicts_retried, flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
