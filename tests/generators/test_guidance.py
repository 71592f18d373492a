"""Universal guidance: the losses against brute force and finite differences, and what guidance does to
samples (nothing when off; toward the target when on), on tiny models and once on the shipped model."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tessera.generators.corruption import WrappedNormal, wrapped_normal_log_density, wrapped_normal_score
from tessera.generators.crystal import batch_index
from tessera.generators.guidance import (
    Coordination,
    CoordinationHistogram,
    Crystals,
    MinDistance,
    Objective,
    RadiusOverlap,
    Target,
    UniversalGuidance,
    VolumePerAtom,
    interval_distance,
)
from tessera.generators.model import load_weights
from tessera.generators.sampler import GuidanceSettings, Sampler, SamplerConfig, sample_many
from tessera.generators.training import CrystalArrays

from tests.generators.conftest import tiny_model

CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "checkpoints" / "generator.pt"


# -- the score normalisation ---------------------------------------------------------------------------
def _dense_quadrature(sigmas: torch.Tensor) -> torch.Tensor:
    """The former implementation: 4000-point quadrature of E[score^2] at every sigma."""
    x = torch.linspace(-0.5, 0.5, 4001, dtype=torch.float64)[:-1]
    sv = sigmas.unsqueeze(-1).expand(-1, x.shape[0])
    xs = x.expand_as(sv)
    p = torch.softmax(wrapped_normal_log_density(xs, sv), -1)
    return (p * wrapped_normal_score(xs, sv) ** 2).sum(-1)


def test_score_normalisation_matches_dense_quadrature_on_the_shipped_schedule() -> None:
    """Every 20th sigma of the shipped schedule (0.005..0.5, 1000 steps) and all around the switch from
    1 / sigma^2 to quadrature agree with the old 4000-point quadrature to 1e-6 relative."""
    process = WrappedNormal(num_steps=1000, sigma_min=0.005, sigma_max=0.5)
    sig = process.sigmas[1:]
    idx = torch.unique(torch.cat([torch.arange(0, 1000, 20), torch.arange(1, 1000, 97),
                                  torch.nonzero((sig > 0.04) & (sig < 0.07)).flatten()[::3], torch.tensor([999])]))
    got, want = process.score_norms[1:][idx], _dense_quadrature(sig[idx])
    assert ((got - want).abs() / want).max() < 1e-6


# -- structures ----------------------------------------------------------------------------------------
# Vocabulary of these tests (indices): Na, Cl, Zn, S, Cs.
NA, CL, ZN, S, CS = range(5)
K = 5


def _crystals(lattices, fracs, types, dtype=torch.float64) -> Crystals:
    n_atoms = torch.tensor([len(t) for t in types])
    return Crystals(
        lattice=torch.as_tensor(np.stack(lattices), dtype=dtype),
        frac=torch.as_tensor(np.concatenate(fracs), dtype=dtype),
        type_probs=torch.nn.functional.one_hot(torch.as_tensor(np.concatenate(types)), K).to(dtype),
        batch=batch_index(n_atoms),
        n_atoms=n_atoms,
    )


def rocksalt():
    a = 5.64
    return 0.5 * a * (np.ones((3, 3)) - np.eye(3)), np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.array([NA, CL])


def zinc_blende():
    a = 5.41
    return 0.5 * a * (np.ones((3, 3)) - np.eye(3)), np.array([[0, 0, 0], [0.25, 0.25, 0.25]]), np.array([ZN, S])


def cesium_chloride():
    return 4.12 * np.eye(3), np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.array([CS, CL])


def _brute_force(lattice, frac, types, a, b, weigh, images=4) -> float:
    """Mean over A atoms of sum over B atoms and every image in -images..images of weigh(distance)."""
    totals = []
    for i in np.flatnonzero(types == a):
        total = 0.0
        for j in np.flatnonzero(types == b):
            for k in itertools.product(range(-images, images + 1), repeat=3):
                if i == j and k == (0, 0, 0):
                    continue
                total += weigh(np.linalg.norm((frac[j] - frac[i] + np.array(k)) @ lattice))
        totals.append(total)
    return float(np.mean(totals))


@pytest.mark.parametrize(
    "structure, a, b, cutoff, want",
    [(rocksalt, NA, CL, 3.4, 6), (rocksalt, CL, NA, 3.4, 6), (zinc_blende, ZN, S, 3.0, 4),
     (zinc_blende, S, ZN, 3.0, 4), (cesium_chloride, CS, CL, 3.85, 8)],
)
def test_soft_coordination_counts_known_structures(structure, a, b, cutoff, want) -> None:
    lat, frac, types = structure()
    hard = _brute_force(lat, frac, types, a, b, lambda d: float(d < cutoff))
    assert hard == want
    soft = Coordination(center=(a,), neighbour=(b,), cutoff=cutoff, softness=0.02).value(_crystals([lat], [frac], [types]))
    assert soft.item() == pytest.approx(want, abs=1e-3)
    # A 2x1x1 supercell has the same coordination (images and in-cell neighbours are counted alike).
    sup = np.concatenate([frac / [2, 1, 1], frac / [2, 1, 1] + [0.5, 0, 0]])
    soft2 = Coordination(center=(a,), neighbour=(b,), cutoff=cutoff, softness=0.02).value(
        _crystals([lat * [[2], [1], [1]]], [sup], [np.tile(types, 2)]))
    assert soft2.item() == pytest.approx(want, abs=1e-3)


def test_soft_coordination_equals_the_sum_of_sigmoids_in_a_skewed_cell() -> None:
    """A skewed random cell and a wide soft cutoff: the enumerated images miss nothing that counts."""
    rng = np.random.default_rng(0)
    lat = 3.2 * (np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
    frac = rng.random((4, 3))
    types = np.array([NA, CL, NA, CL])
    cutoff, w = 3.5, 0.3
    want = _brute_force(lat, frac, types, NA, CL, lambda d: 1 / (1 + math.exp(-(cutoff - d) / w)), images=6)
    got = Coordination(center=(NA,), neighbour=(CL,), cutoff=cutoff, softness=w).value(_crystals([lat], [frac], [types]))
    assert got.item() == pytest.approx(want, abs=1e-3)


def test_histogram_minimum_distance_and_targets_on_known_structures() -> None:
    c = _crystals(*zip(rocksalt(), zinc_blende(), cesium_chloride()))
    hist = CoordinationHistogram(center=(NA, ZN, CS), neighbour=(CL, S), cutoff=3.0, softness=0.02,
                                 target_probs=(0, 0, 0, 0, 1, 0, 0, 0, 0), bin_width=0.3)
    h = hist.value(c)
    # NaCl: every Na has 6 Cl within 3.0 A, ZnS: 4, CsCl at 3.57 A: none within 3.0.
    assert h.argmax(-1).tolist() == [6, 4, 0]
    loss = hist.loss(c)
    assert loss[1] < 0.01 < loss[0] and loss[0] <= math.log(2) + 1e-9
    w = CoordinationHistogram(center=(NA, ZN, CS), neighbour=(CL, S), cutoff=3.0, softness=0.02,
                              target_probs=(0, 0, 0, 0, 1, 0, 0, 0, 0), bin_width=0.3, metric="wasserstein").loss(c)
    assert w.tolist() == pytest.approx([2, 0, 4], abs=0.01)  # earth mover's distance in CN units
    shortest = MinDistance(d_min=4.0).value(c)
    assert MinDistance(d_min=2.5).value(c)[0] == math.inf  # nothing in NaCl closer than 2.82 A
    assert shortest.tolist() == pytest.approx([5.64 / 2, 5.41 * math.sqrt(3) / 4, 4.12 * math.sqrt(3) / 2], abs=1e-6)
    pen = MinDistance(d_min=2.5).loss(c)
    # ZnS: each Zn has 4 S at 2.343 A, counted once per unordered pair: 4 * (2.5 - 2.343)^2.
    assert pen.tolist() == pytest.approx([0, 4 * (2.5 - 5.41 * math.sqrt(3) / 4) ** 2, 0], abs=1e-9)
    vpa = VolumePerAtom(target=Target.interval(15, 25)).value(c)
    assert vpa.tolist() == pytest.approx([5.64**3 / 8, 5.41**3 / 8, 4.12**3 / 2])
    assert interval_distance(torch.tensor([10.0, 20.0, 30.0]), 15, 25).tolist() == [5, 0, 5]
    assert Target.point(4, tolerance=0.5).met(torch.tensor([3.6, 4.6])).tolist() == [True, False]


def test_radius_overlap_matches_the_geometry_ratio_and_counts_each_pair_once() -> None:
    """The guard's value is tools.geometry.min_distance_ratio (Cordero radii); its penalty on rocksalt at
    f = 1.1 is the 6 Na-Cl bonds of the 2-atom cell, each (1.1 (r_Na + r_Cl) - d)^2 once."""
    from ase.data import covalent_radii
    from pymatgen.core import Lattice, Structure

    from tessera.tools.geometry import min_distance_ratio

    radii = tuple(float(covalent_radii[z]) for z in (11, 17, 30, 16, 55))  # Na Cl Zn S Cs, the test vocabulary
    lat, frac, types = rocksalt()
    c = _crystals([lat], [frac], [types])
    species = [("Na", "Cl", "Zn", "S", "Cs")[t] for t in types]
    want = min_distance_ratio(Structure(Lattice(np.asarray(lat)), species, np.asarray(frac)))[0]
    assert RadiusOverlap(radii=radii, factor=1.0).value(c).item() == pytest.approx(want, abs=1e-9)
    d = 5.64 / 2
    limit = 1.1 * (radii[NA] + radii[CL])
    assert limit > d  # Na-Na and Cl-Cl stay beyond 1.1 x their radius sums
    assert RadiusOverlap(radii=radii, factor=1.1).loss(c).item() == pytest.approx(6 * (limit - d) ** 2, rel=1e-9)
    assert RadiusOverlap(radii=radii, factor=0.7).loss(c).item() == 0.0
    with pytest.raises(ValueError):
        RadiusOverlap(radii=(1.0, -1.0), factor=0.7)


# -- gradients -----------------------------------------------------------------------------------------
def _small_random(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two small skewed float64 cells (3 and 2 atoms) with soft types over the five elements."""
    g = torch.Generator().manual_seed(seed)
    lat = 2.6 * (torch.eye(3, dtype=torch.float64) + 0.2 * torch.randn(2, 3, 3, generator=g, dtype=torch.float64))
    frac = torch.rand(5, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
    logits = torch.randn(5, K, generator=g, dtype=torch.float64)
    return lat, frac, logits, torch.tensor([3, 2])


TERMS = {
    "volume": VolumePerAtom(target=Target.point(30.0)),
    "volume_interval": VolumePerAtom(target=Target.interval(1.0, 2.0, power=1.5)),
    "coordination": Coordination(center=(NA, ZN), neighbour=(CL,), cutoff=2.8, softness=0.3, target=Target.point(4.0)),
    "histogram_js": CoordinationHistogram(center=(NA,), neighbour=(CL, S), cutoff=2.8, softness=0.3,
                                          target_probs=(0.1, 0.2, 0.4, 0.2, 0.1)),
    "histogram_w1": CoordinationHistogram(center=(NA,), neighbour=(CL, S), cutoff=2.8, softness=0.3,
                                          target_probs=(0.1, 0.2, 0.4, 0.2, 0.1), metric="wasserstein"),
    "min_distance": MinDistance(d_min=2.6),
    "radius_overlap": RadiusOverlap(radii=(1.66, 1.02, 1.22, 1.05, 2.44), factor=1.2),
    "p_norm": Objective(terms=(VolumePerAtom(target=Target.point(30.0)),
                               Coordination(center=(CL,), neighbour=(CL, NA), cutoff=2.8, softness=0.3,
                                            target=Target.interval(5.0, 6.0))),
                        weights=(0.01, 1.0), p=3.0),
}


@pytest.mark.parametrize("name", sorted(TERMS))
def test_loss_gradients_match_finite_differences(name: str) -> None:
    term = TERMS[name]
    lat, frac, logits, n_atoms = _small_random(1)
    batch = batch_index(n_atoms)

    def f(lat, frac, logits):
        c = Crystals(lattice=lat, frac=frac, type_probs=torch.softmax(logits, -1), batch=batch, n_atoms=n_atoms)
        return term.loss(c)

    value = f(lat, frac, logits)
    assert value.shape == (2,) and torch.isfinite(value).all()
    assert float(value.abs().sum()) > 1e-6, "a gradient check of a flat loss proves nothing"
    inputs = tuple(x.clone().requires_grad_(True) for x in (lat, frac, logits))
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# -- sampling ------------------------------------------------------------------------------------------
def _vpa(batch) -> torch.Tensor:
    return torch.det(batch.lattice.double()).abs() / batch.n_atoms


def test_no_guidance_leaves_samples_bit_identical(small_data: CrystalArrays) -> None:
    """Unguided, a zero-strength guidance, and a guidance active at no step give the same crystals."""
    model = tiny_model(small_data, type_process="masked")
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=12))
    n = torch.tensor([2, 3, 4])
    plain = sampler.sample(n_atoms=n, seed=4)
    off = UniversalGuidance(objective=VolumePerAtom(target=Target.point(5.0)), settings=GuidanceSettings(scale=0.0))
    # Active only at index 0 (every 1000th step), where the increasing schedule's weight 2 (1 - T / T) is 0.
    never = UniversalGuidance(objective=VolumePerAtom(target=Target.point(5.0)),
                              settings=GuidanceSettings(every=1000, schedule="increasing", recurrence=3, backward_steps=2))
    for guidance in (off, never):
        other = Sampler(model=model, config=SamplerConfig(num_steps=12)).sample(n_atoms=n, seed=4, guidance=guidance)
        assert torch.equal(plain.lattice, other.lattice) and torch.equal(plain.frac, other.frac)
        assert torch.equal(plain.types, other.types)
    cfg = SamplerConfig(num_steps=8)
    runs = [sample_many(model=model, config=cfg, n=4, seed=1, batch_size=2, guidance=g) for g in (None, off)]
    assert all(torch.equal(a.frac, b.frac) and torch.equal(a.lattice, b.lattice) for a, b in zip(*runs))


def test_schedule_weights() -> None:
    T = 1000
    ts = range(1000, 0, -1)
    for schedule in ("constant", "increasing", "decreasing"):
        w = [GuidanceSettings(schedule=schedule).weight(i, t, T) for i, t in enumerate(ts)]
        assert np.mean(w) == pytest.approx(1.0, abs=0.01)
    inc = GuidanceSettings(schedule="increasing")
    assert inc.weight(0, 1000, T) == 0.0 and inc.weight(999, 1, T) == pytest.approx(2.0, abs=0.01)
    every = [GuidanceSettings(every=3).weight(i, 500, T) for i in range(7)]
    assert every == [1, 0, 0, 1, 0, 0, 1]
    with pytest.raises(ValueError):
        GuidanceSettings(schedule="sometimes")
    g = torch.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    idx = torch.tensor([0, 1, 1])
    unit = GuidanceSettings(grad_norm="normalize").normalise(g, idx, 2)
    assert torch.allclose(unit.pow(2).sum(-1).index_add(0, idx, torch.zeros(3)), unit.pow(2).sum(-1))
    assert torch.zeros(2).index_add(0, idx, unit.pow(2).sum(-1)).tolist() == pytest.approx([1, 1])
    clipped = GuidanceSettings(grad_norm="clip", grad_clip=2.0).normalise(g, idx, 2)
    assert clipped[0].norm() == pytest.approx(2.0) and torch.zeros(2).index_add(0, idx, clipped.pow(2).sum(-1))[1] == pytest.approx(4.0)


GUIDED = {
    "forward": GuidanceSettings(scale=2.0, grad_norm="normalize"),
    "backward": GuidanceSettings(scale=0.0, backward_steps=3, backward_lr=0.3, grad_norm="normalize"),
    "recurrent": GuidanceSettings(scale=2.0, recurrence=3, grad_norm="normalize", schedule="increasing"),
}


@pytest.mark.parametrize("mode", sorted(GUIDED))
@pytest.mark.parametrize("type_process", ["gaussian", "masked"])
def test_guidance_moves_volume_per_atom_toward_the_target(small_data: CrystalArrays, mode: str, type_process: str) -> None:
    """Tiny untrained model, same seeds: guided to 8 A^3/atom (the data hold 10-30), the samples' mean distance
    to the target falls to under half the unguided one; masked types stay as revealed (no type guidance)."""
    model = tiny_model(small_data, type_process=type_process)
    model.net.eval()
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=20))
    n = torch.full((12,), 3)
    target = 8.0
    plain = sampler.sample(n_atoms=n, seed=2)
    guidance = UniversalGuidance(objective=VolumePerAtom(target=Target.point(target)), settings=GUIDED[mode])
    guided = sampler.sample(n_atoms=n, seed=2, guidance=guidance)
    err_plain, err_guided = ((_vpa(b) - target).abs().mean().item() for b in (plain, guided))
    assert err_guided < 0.5 * err_plain, (err_plain, err_guided)
    # The term reports a finished batch's value the same way.
    value = guidance.objective.value(Crystals.from_batch(guided, model.num_types))
    assert torch.allclose(value.double(), _vpa(guided), rtol=1e-5)


def test_recurrence_sees_hooks_every_repetition_and_yields_each_step_once(small_data: CrystalArrays) -> None:
    model = tiny_model(small_data)
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=6))
    calls: list[int] = []

    def hook(state, info):
        calls.append(info.index)
        return state

    guidance = UniversalGuidance(objective=VolumePerAtom(target=Target.point(8.0)),
                                 settings=GuidanceSettings(recurrence=3, every=2))
    steps = list(sampler.iter_steps(n_atoms=torch.tensor([2, 3]), seed=0, hooks=[hook], guidance=guidance))
    assert [s.index for s in steps] == list(range(6))
    assert calls == [0, 0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5]


# -- the shipped model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    if not CHECKPOINT.exists():
        pytest.skip("no shipped checkpoint")
    start = time.process_time()
    model = load_weights(CHECKPOINT)
    load_cpu = time.process_time() - start
    # One thread: on a shared two-core machine two threads per small matmul mostly wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield model, load_cpu
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_shipped_model_boron_guided_to_seven_cubic_angstrom_per_atom(shipped) -> None:
    """Elemental boron, 16 crystals with atom counts from the prior, 60 reverse steps, the same seeds guided
    (backward guidance on the clean estimate, self-recurrence 2) and unguided: more crystals land within
    +-0.5 A^3/atom of 7.0 and the mean distance to it falls. Unguided boron already sits near 7-8 A^3/atom
    (measured at 100 steps: 6/16 within the window, mean distance 0.68; backward guidance 16/16, 0.23).
    The model loads in a few CPU seconds (the score normalisation used to take ~20)."""
    model, load_cpu = shipped
    assert load_cpu < 10.0, load_cpu
    boron = model.vocab.index(5)
    mask = torch.zeros(model.num_types, dtype=torch.bool)
    mask[boron] = True
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=60))
    n = sampler.draw_n_atoms(16, torch.Generator().manual_seed(1))
    ones = torch.ones(16, dtype=torch.long)
    plain = sampler.sample(n_atoms=n, seed=0, type_mask=mask, n_elements=ones)
    guidance = UniversalGuidance(
        objective=VolumePerAtom(target=Target.point(7.0)),
        settings=GuidanceSettings(scale=0.0, grad_norm="normalize", backward_steps=3, backward_lr=0.2, recurrence=2),
    )
    guided = sampler.sample(n_atoms=n, seed=0, type_mask=mask, n_elements=ones, guidance=guidance)
    assert (guided.types == boron).all()
    dist_plain, dist_guided = ((_vpa(b) - 7.0).abs() for b in (plain, guided))
    within = lambda d: int((d < 0.5).sum())  # noqa: E731
    assert within(dist_guided) >= within(dist_plain) + 3, (_vpa(plain).tolist(), _vpa(guided).tolist())
    assert dist_guided.mean() < 0.7 * dist_plain.mean()


@pytest.mark.slow
def test_shipped_model_li_co_o_guided_to_tetrahedral_cobalt(shipped) -> None:
    """Li-Co-O ternaries, 16 crystals, 40 steps, same seeds: Co-O coordination guided to 4 (cutoff 2.6 A,
    plus a 1.6 A minimum distance) by backward guidance with recurrence 2; the share of crystals whose
    hard-cutoff Co-O CN is within 0.5 of 4 rises (measured at 60 steps, 32 crystals, K = 3: 7/32 -> 29/32)."""
    model, _ = shipped
    li, co, o = (model.vocab.index(z) for z in (3, 27, 8))
    mask = torch.zeros(model.num_types, dtype=torch.bool)
    mask[[li, co, o]] = True
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=40))
    n = sampler.draw_n_atoms(16, torch.Generator().manual_seed(1))
    three = torch.full((16,), 3)
    cn = Coordination(center=(co,), neighbour=(o,), cutoff=2.6, softness=0.1, target=Target.point(4.0))
    guidance = UniversalGuidance(
        objective=Objective(terms=(cn, MinDistance(d_min=1.6)), p=1.0),
        settings=GuidanceSettings(scale=0.0, grad_norm="normalize", backward_steps=3, backward_lr=0.05, recurrence=2),
    )
    hard = Coordination(center=(co,), neighbour=(o,), cutoff=2.6, softness=0.01)
    within = {}
    for name, g in (("plain", None), ("guided", guidance)):
        out = sampler.sample(n_atoms=n, seed=0, type_mask=mask, n_elements=three, guidance=g)
        assert set(out.types.tolist()) <= {li, co, o}
        value = hard.value(Crystals.from_batch(out, model.num_types))
        has_co = torch.zeros(16).index_add(0, out.batch, (out.types == co).float()) > 0
        within[name] = int(((value - 4.0).abs() < 0.5)[has_co].sum())
    assert within["guided"] >= within["plain"] + 4, within
