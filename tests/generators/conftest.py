"""Small crystals and tiny models shared by the generator tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.generators.crystal import LatticeCoder, collate
from tessera.generators.model import DiffusionModel, ModelConfig
from tessera.generators.training import CrystalArrays

# Vocabulary of the tiny models: atomic numbers.
VOCAB = [3, 8, 11, 17, 26]


def rocksalt() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NaCl primitive cell: lattice (3, 3) A, frac (2, 3), atomic numbers (2,)."""
    a = 5.64
    lat = 0.5 * a * np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    return lat, np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]), np.array([11, 17])


def random_crystals(n: int, seed: int) -> CrystalArrays:
    """Random but physical-looking cells (volume ~ 10-30 A^3 per atom), 1-6 atoms, types from VOCAB."""
    rng = np.random.default_rng(seed)
    lattices, fracs, numbers = [], [], []
    for _ in range(n):
        k = int(rng.integers(1, 7))
        scale = (k * rng.uniform(10, 30)) ** (1 / 3)
        lat = scale * (np.eye(3) + 0.15 * rng.normal(size=(3, 3)))
        lattices.append(lat)
        fracs.append(rng.random((k, 3)))
        numbers.append(rng.choice(VOCAB, size=k))
    return CrystalArrays.from_numbers(lattices=lattices, fracs=fracs, numbers=numbers, vocab=VOCAB)


def tiny_model(
    data: CrystalArrays,
    *,
    hidden: int = 32,
    num_layers: int = 2,
    num_steps: int = 100,
    seed: int = 0,
    type_process: str = "gaussian",
    n_elements_condition: int = 0,
) -> DiffusionModel:
    torch.manual_seed(seed)
    n = torch.tensor([len(t) for t in data.types])
    coder = LatticeCoder.fit(lattice=torch.as_tensor(np.stack(data.lattices)), n_atoms=n)
    counts = np.bincount(n.numpy(), minlength=int(n.max()) + 1)[1:].astype(float)
    return DiffusionModel.create(
        # type_scale 1 (not the shipped 3): the recorded-run fingerprints were taken with it.
        config=ModelConfig(hidden=hidden, num_layers=num_layers, num_steps=num_steps, time_dim=16, type_scale=1.0,
                           type_process=type_process, n_elements_condition=n_elements_condition),
        coder=coder,
        vocab=VOCAB,
        n_atoms_prior=(counts / counts.sum()).tolist(),
    )


TYPE_PROCESSES = pytest.mark.parametrize("type_process", ["gaussian", "masked"])


@pytest.fixture()
def small_data() -> CrystalArrays:
    return random_crystals(40, seed=1)


@pytest.fixture()
def small_batch(small_data: CrystalArrays):
    return collate(small_data.lattices[:6], small_data.fracs[:6], small_data.types[:6])
