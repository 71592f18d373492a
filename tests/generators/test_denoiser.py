"""Denoiser: the Backbone protocol the sampler relies on; symmetries (rotation of L, translation of F,
permutation of atoms); crystals in a batch stay independent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tessera.generators.crystal import CrystalBatch
from tessera.generators.denoiser import Backbone, NoisyCrystal, Prediction
from tessera.generators.model import DiffusionModel
from tessera.generators.sampler import Sampler, SamplerConfig
from tessera.generators.training import CrystalArrays

from tests.generators.conftest import TYPE_PROCESSES, tiny_model


def _state(model: DiffusionModel, b: CrystalBatch, lattice: torch.Tensor | None = None, frac: torch.Tensor | None = None) -> NoisyCrystal:
    g = torch.Generator().manual_seed(5)
    types = F.one_hot(b.types, model.num_types).float() + 0.3 * torch.randn(b.types.shape[0], model.num_types, generator=g)
    return NoisyCrystal(
        lattice_code=model.coder.encode(b.lattice if lattice is None else lattice, b.n_atoms),
        frac=b.frac if frac is None else frac,
        types=types,
        batch=b.batch,
        n_atoms=b.n_atoms,
        t=torch.arange(1, b.num_crystals + 1) * 7,
    )


def _rot(seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed)))
    return q * torch.sign(torch.det(q))


@TYPE_PROCESSES
def test_the_sampler_runs_on_any_backbone_through_predict_alone(small_data: CrystalArrays, type_process: str) -> None:
    """The network is a Backbone, and the sampler needs nothing else of it: an adapter that only forwards
    ``predict`` gives the same crystals, of the asked-for shapes, as the model's own network."""
    model = tiny_model(small_data, type_process=type_process)
    model.net.eval()

    class Adapter:  # what a foreign checkpoint's wrapper looks like: one method
        def predict(self, state: NoisyCrystal) -> Prediction:
            return model.net.predict(state)

    assert isinstance(model.net, Backbone) and isinstance(Adapter(), Backbone)
    n_atoms = torch.tensor([3, 1, 5])
    config = SamplerConfig(num_steps=8)
    own = Sampler(model=model, config=config).sample(n_atoms=n_atoms, seed=4)
    adapted = Sampler(model=model, config=config, backbone=Adapter()).sample(n_atoms=n_atoms, seed=4)
    assert own.lattice.shape == (3, 3, 3) and own.frac.shape == (9, 3) and own.types.shape == (9,)
    assert own.n_atoms.tolist() == [3, 1, 5] and own.batch.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2]
    assert bool((own.types >= 0).all() and (own.types < model.num_types).all())
    assert torch.equal(own.types, adapted.types) and torch.equal(own.frac, adapted.frac)
    assert torch.equal(own.lattice, adapted.lattice)


def test_rotation_of_lattice_changes_nothing(small_data: CrystalArrays, small_batch: CrystalBatch) -> None:
    model = tiny_model(small_data)
    with torch.no_grad():
        p0 = model.net.predict(_state(model, small_batch))
        rotated = small_batch.lattice @ _rot(1).T
        p1 = model.net.predict(_state(model, small_batch, lattice=rotated))
    assert torch.allclose(p0.lattice_eps, p1.lattice_eps, atol=1e-4)
    assert torch.allclose(p0.frac_score, p1.frac_score, atol=1e-4)
    assert torch.allclose(p0.type_logits, p1.type_logits, atol=1e-4)


def test_translation_of_fractional_coordinates_changes_nothing(small_data: CrystalArrays, small_batch: CrystalBatch) -> None:
    model = tiny_model(small_data)
    shift = torch.rand(small_batch.num_crystals, 3, generator=torch.Generator().manual_seed(2))[small_batch.batch]
    with torch.no_grad():
        p0 = model.net.predict(_state(model, small_batch))
        p1 = model.net.predict(_state(model, small_batch, frac=(small_batch.frac + shift) % 1.0))
    assert torch.allclose(p0.lattice_eps, p1.lattice_eps, atol=1e-4)
    assert torch.allclose(p0.frac_score, p1.frac_score, atol=1e-4)
    assert torch.allclose(p0.type_logits, p1.type_logits, atol=1e-4)


def test_permutation_of_atoms_permutes_outputs(small_data: CrystalArrays, small_batch: CrystalBatch) -> None:
    model = tiny_model(small_data)
    s0 = _state(model, small_batch)
    # Permute atoms within each crystal (the batch vector stays sorted).
    g = torch.Generator().manual_seed(3)
    offsets = torch.cumsum(small_batch.n_atoms, 0) - small_batch.n_atoms
    perm = torch.cat([o + torch.randperm(int(n), generator=g) for o, n in zip(offsets, small_batch.n_atoms)])
    s1 = NoisyCrystal(lattice_code=s0.lattice_code, frac=s0.frac[perm], types=s0.types[perm], batch=s0.batch, n_atoms=s0.n_atoms, t=s0.t)
    with torch.no_grad():
        p0, p1 = model.net.predict(s0), model.net.predict(s1)
    assert torch.allclose(p0.lattice_eps, p1.lattice_eps, atol=1e-4)
    assert torch.allclose(p0.frac_score[perm], p1.frac_score, atol=1e-4)
    assert torch.allclose(p0.type_logits[perm], p1.type_logits, atol=1e-4)


def test_crystals_in_a_batch_do_not_interact(small_data: CrystalArrays, small_batch: CrystalBatch) -> None:
    model = tiny_model(small_data)
    s = _state(model, small_batch)
    n0 = int(small_batch.n_atoms[0])
    single = NoisyCrystal(lattice_code=s.lattice_code[:1], frac=s.frac[:n0], types=s.types[:n0],
                          batch=s.batch[:n0], n_atoms=s.n_atoms[:1], t=s.t[:1])
    with torch.no_grad():
        p, q = model.net.predict(s), model.net.predict(single)
    assert torch.allclose(p.frac_score[:n0], q.frac_score, atol=1e-5)
    assert torch.allclose(p.lattice_eps[:1], q.lattice_eps, atol=1e-5)
