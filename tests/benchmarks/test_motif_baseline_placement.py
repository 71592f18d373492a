"""The motif baseline's random placement (benchmarks/bench_motifs.py): the vectorised search takes exactly the
point, and leaves the generator in exactly the state, of trying uniform points one at a time, so a baseline
made before the speed-up is reproduced byte for byte; placed atoms keep the minimum-distance rule."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice

from benchmarks.bench_motifs import _first_free_point, _min_periodic_distance, place_baseline


def _one_by_one(lattice: Lattice, frac: np.ndarray, rule: float, rng: np.random.Generator) -> np.ndarray | None:
    for _ in range(1000):
        p = rng.random(3)
        if _min_periodic_distance(lattice, frac, p) >= rule:
            return p
    return None


def test_vectorised_search_matches_trying_points_one_at_a_time() -> None:
    lattice = Lattice.hexagonal(5.08, 9.0)
    for seed in range(4):
        slow, fast = np.random.default_rng(seed), np.random.default_rng(seed)
        frac_slow = frac_fast = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])
        for _ in range(14):  # until the cell is full: the failing search (1000 tries) is covered too
            slow.shuffle(list(range(5)))  # an integer draw leaves a buffered half-draw in the generator
            fast.shuffle(list(range(5)))
            a, b = _one_by_one(lattice, frac_slow, 1.8, slow), _first_free_point(lattice, frac_fast, 1.8, fast)
            assert (a is None) == (b is None)
            assert slow.bit_generator.state == fast.bit_generator.state
            if a is None:
                break
            assert np.array_equal(a, b)
            frac_slow, frac_fast = np.vstack([frac_slow, a]), np.vstack([frac_fast, b])
        assert slow.integers(1 << 30) == fast.integers(1 << 30)


def test_placed_atoms_keep_the_rule_and_the_net() -> None:
    from tessera.generators.inpainting import MotifConstraint
    from tessera.tools.spec import MotifSpec

    template = MotifSpec(lattice="kagome", element="Mn").template()
    con = MotifConstraint.build(lattice="kagome", element="Mn")
    s, record = place_baseline(template, "Mn", con.bond_length, con.c_range, ["Sn", "Sn", "Ge"],
                               np.random.default_rng(3))
    assert [sp.symbol for sp in s.species] == ["Mn"] * 3 + ["Sn", "Sn", "Ge"]
    assert record["min_distance"] == 1.8 and con.c_range[0] <= record["c"] <= con.c_range[1]
    assert all(len(n) == 0 for n in s.get_all_neighbors(1.8 - 1e-6))  # periodic: no pair closer than the rule
