"""Training: exact resume, lineage across a resume, reproducible validation, warm starts that keep the
source's predictions, and a tiny model that learns one crystal well enough to regenerate it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from tessera.generators.convert import to_structures
from tessera.generators.sampler import Sampler, SamplerConfig, sample_many
from tessera.generators.training import CrystalArrays, Trainer, TrainConfig, warm_start

from tests.generators.conftest import TYPE_PROCESSES, VOCAB, rocksalt, tiny_model


def _trainer(data: CrystalArrays, work: Path, type_process: str = "gaussian", **cfg) -> Trainer:
    config = TrainConfig(**{"batch_size": 8, "warmup_steps": 2, "total_steps": 8, "val_every": 4, "val_size": 16,
                            "ckpt_every_steps": 100, **cfg})
    return Trainer(model=tiny_model(data, type_process=type_process), config=config, train=data, val=data, work_dir=work)


@TYPE_PROCESSES
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    small_data: CrystalArrays, tmp_path: Path, type_process: str
) -> None:
    a = _trainer(small_data, tmp_path / "a", type_process)
    losses_a = [log.loss for log in a.iter_steps()]
    b = _trainer(small_data, tmp_path / "b", type_process)
    losses_b = [log.loss for log in b.iter_steps(max_steps=5)]
    b.save_checkpoint()
    c = _trainer(small_data, tmp_path / "b", type_process)  # a fresh process would build exactly this
    assert c.load_checkpoint() and c.step == 5
    losses_b += [log.loss for log in c.iter_steps()]
    assert losses_a == losses_b
    for pa, pc in zip(a.model.net.parameters(), c.model.net.parameters()):
        assert torch.equal(pa, pc)
    for ea, ec in zip(a.ema, c.ema):
        assert torch.equal(ea, ec)
    assert (tmp_path / "b" / "best_ema.pt").exists()


def test_a_resumed_run_keeps_the_lineage_it_was_started_with(small_data: CrystalArrays, tmp_path: Path) -> None:
    """init_from and lineage are set only when a run starts; a trainer resumed in a new process must still
    write them into every best_ema.json it saves (a stage-4 run once shipped without its lineage)."""
    import json

    first = _trainer(small_data, tmp_path, "masked")
    first.extra_meta.update({"init_from": "data/checkpoints/generator.pt", "lineage": [{"step": 7}]})
    list(first.iter_steps(max_steps=4))
    first.save_checkpoint()
    (tmp_path / "best_ema.json").unlink()
    resumed = _trainer(small_data, tmp_path, "masked")
    resumed.extra_meta["pool_hash"] = "abc"  # what the new process knows itself stays its own
    assert "lineage" not in resumed.extra_meta and resumed.load_checkpoint()
    resumed.best_val = float("inf")  # make the next validation save a best checkpoint
    list(resumed.iter_steps())
    meta = json.loads((tmp_path / "best_ema.json").read_text())
    assert meta["init_from"] == "data/checkpoints/generator.pt" and meta["lineage"] == [{"step": 7}]
    assert meta["step"] == 8 and meta["pool_hash"] == "abc"


def test_validation_is_reproducible(small_data: CrystalArrays, tmp_path: Path) -> None:
    t = _trainer(small_data, tmp_path)
    assert t.validate() == t.validate()


def test_warm_start_carries_a_gaussian_model_into_a_masked_one(small_data: CrystalArrays) -> None:
    source = tiny_model(small_data, seed=0)
    target = tiny_model(small_data, seed=1, type_process="masked")
    assert warm_start(target, source) == []
    src, dst = source.net.state_dict(), target.net.state_dict()
    for name, value in src.items():
        if name == "type_in.weight":
            assert torch.allclose(dst[name][:, :-1], value * source.config.type_scale)
            assert torch.all(dst[name][:, -1] == 0)
        else:
            assert torch.equal(dst[name], value), name


def test_a_deeper_network_grown_from_a_trained_one_starts_with_its_predictions(
    small_data: CrystalArrays, small_batch, tmp_path: Path
) -> None:
    """Depth growth: the source's layers are copied first and each extra layer starts as the identity, so
    every prediction is unchanged; one training step then moves the new layers (they are not dead)."""
    source = tiny_model(small_data, seed=0, type_process="masked")
    target = tiny_model(small_data, seed=1, type_process="masked", num_layers=4)
    fresh = warm_start(target, source)
    assert fresh and all(name.startswith(("layers.2.", "layers.3.")) for name in fresh)
    state = Sampler(model=source, config=SamplerConfig(num_steps=10)).noised(small_batch, 40, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, grown = source.net(state), target.net(state)
    for field in ("lattice_eps", "frac_score", "type_logits"):
        assert torch.allclose(getattr(grown, field), getattr(ref, field), atol=1e-6), field
    trainer = Trainer(model=target, config=TrainConfig(batch_size=8, warmup_steps=0, total_steps=1, lr=1e-3),
                      train=small_data, val=small_data, work_dir=tmp_path)
    before = target.net.layers[3].node[-1].weight.detach().clone()
    trainer.train_step()
    assert not torch.equal(target.net.layers[3].node[-1].weight, before)


def test_an_element_count_condition_starts_from_the_unconditioned_predictions(small_data: CrystalArrays, small_batch) -> None:
    """Warm-starting a conditioned network from an unconditioned one changes no prediction, for any count:
    only the (zero) count embedding is new."""
    source = tiny_model(small_data, seed=0, type_process="masked")
    target = tiny_model(small_data, seed=1, type_process="masked", n_elements_condition=4)
    assert warm_start(target, source) == ["n_elements_in.weight"]
    sampler = Sampler(model=source, config=SamplerConfig(num_steps=10))
    state = sampler.noised(small_batch, 40, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = source.net(state)
        for k in ([0] * 6, [1, 2, 3, 4, 5, 6], None):
            pred = target.net(replace(state, n_elements=None if k is None else torch.tensor(k)))
            assert torch.equal(pred.type_logits, ref.type_logits) and torch.equal(pred.lattice_eps, ref.lattice_eps)


@pytest.mark.slow
@TYPE_PROCESSES
def test_tiny_model_overfits_one_crystal_and_regenerates_it(tmp_path: Path, type_process: str) -> None:
    lat, frac, z = rocksalt()
    data = CrystalArrays.from_numbers(lattices=[lat] * 64, fracs=[frac] * 64, numbers=[z] * 64, vocab=VOCAB)
    model = tiny_model(data, hidden=48, num_layers=2, num_steps=100, type_process=type_process)
    cfg = TrainConfig(seed=0, batch_size=16, lr=3e-3, warmup_steps=20, total_steps=1200, w_type=1.0,
                      val_every=10**6, ckpt_every_steps=10**6, ema_decay=0.95)
    trainer = Trainer(model=model, config=cfg, train=data, val=data, work_dir=tmp_path)
    logs = list(trainer.iter_steps())
    first, last = np.mean([l.loss for l in logs[:20]]), np.mean([l.loss for l in logs[-20:]])
    assert last < 0.5 * first
    scfg = SamplerConfig(num_steps=100, corrector_steps=1, step_lr=3e-4, type_reveal_power=1.0, element_budget=False)
    (batch,) = sample_many(model=trainer.ema_model(), config=scfg, n=8, seed=0, n_atoms=2)
    ref = Structure(Lattice(lat), [int(x) for x in z], frac)
    matcher = StructureMatcher()
    hits = sum(matcher.fit(s, ref) for s in to_structures(batch, VOCAB))
    assert hits >= 6, hits  # Na-Cl at (1/2, 1/2, 1/2) in the 3.99 A, 60 degree cell
