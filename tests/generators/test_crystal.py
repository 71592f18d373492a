"""Representation: batching, edges, and the invariant lattice code."""

from __future__ import annotations

import numpy as np
import torch

from tessera.generators.crystal import LatticeCoder, collate, full_edges

from tests.generators.conftest import rocksalt


def _rotation(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def test_full_edges_cover_every_pair_within_crystals() -> None:
    n = torch.tensor([1, 3, 2])
    src, dst = full_edges(n)
    assert len(src) == 1 + 9 + 4
    pairs = set(zip(src.tolist(), dst.tolist()))
    assert (0, 0) in pairs and (1, 3) in pairs and (5, 4) in pairs
    assert (0, 1) not in pairs and (3, 4) not in pairs  # never across crystals


def test_lattice_code_round_trip_keeps_metric_and_volume() -> None:
    lat, frac, z = rocksalt()
    lats = torch.tensor(np.stack([lat, 1.3 * lat @ _rotation(0).numpy().T, np.diag([3.0, 4.0, 9.0])]))
    n = torch.tensor([2, 2, 5])
    coder = LatticeCoder.fit(lattice=lats, n_atoms=n)
    code = coder.encode(lats, n)
    back = coder.decode(code, n)
    g0 = lats @ lats.transpose(-1, -2)
    g1 = back @ back.transpose(-1, -2)
    assert torch.allclose(g0, g1, rtol=1e-6, atol=1e-6)
    assert torch.allclose(torch.det(back).abs(), torch.det(lats).abs(), rtol=1e-6)


def test_lattice_code_is_rotation_invariant_and_any_code_is_a_valid_cell() -> None:
    lat, _, _ = rocksalt()
    lat_t = torch.tensor(lat)[None]
    n = torch.tensor([2])
    coder = LatticeCoder(mean=torch.zeros(6), std=torch.ones(6))
    rotated = lat_t @ _rotation(3).T
    assert torch.allclose(coder.encode(lat_t, n), coder.encode(rotated, n), atol=1e-9)
    codes = 3 * torch.randn(100, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cells = coder.decode(codes, torch.full((100,), 4))
    assert bool((torch.linalg.eigvalsh(cells) > 0).all())  # symmetric positive-definite: never degenerate
    # volume per atom = exp(trace of the code) exactly (unit statistics).
    vpa = torch.det(cells).abs() / 4
    assert torch.allclose(torch.log(vpa), codes[:, :3].sum(-1), atol=1e-8)


def test_collate_and_split_round_trip() -> None:
    lat, frac, z = rocksalt()
    b = collate([lat, lat * 2], [frac, frac[:1]], [np.array([0, 1]), np.array([2])])
    assert b.batch.tolist() == [0, 0, 1] and b.n_atoms.tolist() == [2, 1]
    parts = b.split()
    assert np.allclose(parts[1][0], lat * 2) and parts[1][2].tolist() == [2]


def test_n_elements_counts_distinct_elements_per_crystal() -> None:
    eye = np.eye(3)
    batch = collate([eye] * 3, [np.zeros((3, 3)), np.zeros((1, 3)), np.zeros((4, 3))],
                    [np.array([1, 1, 2]), np.array([4]), np.array([0, 3, 2, 0])])
    assert batch.n_elements.tolist() == [2, 1, 3]
