"""Motif inpainting: every sample ends with the exact motif (checked on the arrays and by the detector), the
cell projection in the log-metric code, the N prior and type mask, adaptive demasking, seeding; and once with
the shipped model, kagome nets of Mn that the detector confirms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tessera.generators.convert import to_structures
from tessera.generators.denoiser import NoisyCrystal
from tessera.generators.inpainting import MotifConstraint, MotifInpainting, motif_n_atoms_prior, sample_with_motif
from tessera.generators.model import load_weights
from tessera.generators.motifs import get_template
from tessera.generators.sampler import Sampler, SamplerConfig, StepInfo
from tessera.tools.motif import detect_motif

from tests.generators.conftest import TYPE_PROCESSES, VOCAB, tiny_model

CHECKPOINT = Path(__file__).resolve().parents[2] / "data" / "checkpoints" / "generator.pt"


def _assert_exact_motif(batch, constraint: MotifConstraint, vocab: list[int]) -> None:
    """First k atoms of every crystal: template sites and element; cell: template a, b, gamma (alpha = beta =
    90, c in range) or the whole 3D cell; and the detector agrees."""
    t, k = constraint.template, constraint.num_motif_atoms
    el = constraint.element
    for (lattice, frac, types), s in zip(batch.split(), to_structures(batch, vocab)):
        assert np.allclose(frac[:k], t.frac % 1.0, atol=1e-6)
        assert [vocab[int(x)] for x in types[:k]] == [el] * k
        a, b, c, alpha, beta, gamma = s.lattice.parameters
        if t.dims == 2:
            assert (a, b, gamma) == pytest.approx(t.in_plane_cell(constraint.bond_length), rel=1e-4)
            assert (alpha, beta) == pytest.approx((90.0, 90.0), abs=1e-3)
            assert constraint.c_range[0] * (1 - 1e-4) <= c <= constraint.c_range[1] * (1 + 1e-4)
        else:
            assert s.lattice.parameters == pytest.approx(t.lattice_parameters(constraint.bond_length), rel=1e-4)
        symbol = s.species[0].symbol
        r = detect_motif(s, t, symbol, bond_length=constraint.bond_length)
        assert r.found, r.reason
        assert set(range(k)) <= set(r.matched_sites)


@TYPE_PROCESSES
@pytest.mark.parametrize("lattice", ["kagome", "honeycomb", "lieb", "snub_square", "elongated_triangular", "pyrochlore"])
def test_every_sample_ends_with_the_exact_motif(small_data, type_process: str, lattice: str) -> None:
    model = tiny_model(small_data, type_process=type_process)
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=8))
    con = MotifConstraint.build(lattice=lattice, element="Fe", free_elements=["Li", "O"])
    out = sample_with_motif(sampler=sampler, constraint=con, n=6, seed=1, max_atoms=12)
    k = con.num_motif_atoms
    assert bool((out.n_atoms >= k + 1).all())
    _assert_exact_motif(out, con, VOCAB)
    free = torch.cat([out.types[o + k: o + n] for o, n in zip((torch.cumsum(out.n_atoms, 0) - out.n_atoms).tolist(),
                                                               out.n_atoms.tolist())])
    assert set(free.tolist()) <= {VOCAB.index(3), VOCAB.index(8)}


def test_large_nets_and_fixed_atom_counts(small_data) -> None:
    """The 12-site truncated trihexagonal net and the 6-site nets with given counts; a count below the motif is
    one clear error before any work."""
    model = tiny_model(small_data, type_process="masked")
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=6))
    for lattice, n_atoms in [("truncated_trihexagonal", 14), ("truncated_hexagonal", 8), ("snub_hexagonal", 7),
                             ("rhombitrihexagonal", 6), ("truncated_square", 5), ("triangular", 2), ("square", 3)]:
        # Free atoms of any element but Fe: the untrained network puts them anywhere, and a free Fe inside the
        # net's plane would (rightly) break the net for the detector.
        con = MotifConstraint.build(lattice=lattice, element="Fe", bond_length=2.4, free_elements=["Li", "O", "Na", "Cl"])
        out = sample_with_motif(sampler=sampler, constraint=con, n=3, seed=2, n_atoms=n_atoms)
        assert out.n_atoms.tolist() == [n_atoms] * 3
        _assert_exact_motif(out, con, VOCAB)
    con = MotifConstraint.build(lattice="kagome", element="Fe")
    with pytest.raises(ValueError, match="at least the 3 motif atoms"):
        sample_with_motif(sampler=sampler, constraint=con, n=2, seed=0, n_atoms=2)


@TYPE_PROCESSES
def test_the_hook_writes_the_noised_template_at_every_step_and_the_clean_one_at_the_end(small_data, type_process) -> None:
    model = tiny_model(small_data, type_process=type_process)
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=10))
    con = MotifConstraint.build(lattice="kagome", element="Fe")
    hook = MotifInpainting(model=model, constraint=con)
    n_atoms = torch.tensor([4, 5])
    idx = hook.motif_atoms(n_atoms)
    assert idx.tolist() == [0, 1, 2, 4, 5, 6]
    seen: dict[int, float] = {}

    def watch(state: NoisyCrystal, info: StepInfo) -> NoisyCrystal:
        d = (state.frac[idx] - hook.frac0.repeat(2, 1) + 0.5) % 1.0 - 0.5
        seen[info.s] = float(d.abs().max())
        return state

    gen = torch.Generator().manual_seed(0)
    initial = hook.initial_state(sampler, n_atoms, gen)
    for _ in sampler.iter_steps(n_atoms=n_atoms, seed=0, initial=initial, hooks=[hook, watch],
                                type_mask=hook.type_mask(n_atoms)):
        pass
    steps = sorted(seen, reverse=True)
    assert steps[-1] == 0 and seen[0] == 0.0
    assert seen[steps[0]] > 0.05  # noised near T (sigma ~ 0.4)
    # The spread of the written motif shrinks with the noise level.
    assert seen[steps[-2]] < seen[steps[0]]


def test_the_cell_projection_sets_the_in_plane_metric_and_keeps_volume_or_c(small_data) -> None:
    """decode(encode(projection)) is the template cell; c is V / area ("volume") or |c| ("length"), clamped."""
    model = tiny_model(small_data)
    lat = torch.tensor([[[4.0, 0.3, 0.2], [0.1, 5.0, 0.4], [0.5, 0.2, 6.0]]]).repeat(2, 1, 1)
    lat[1] *= 3.0  # huge: c clamps at the top of the range
    n = torch.tensor([5, 5])
    for mode in ("volume", "length"):
        con = MotifConstraint.build(lattice="honeycomb", element="Fe", bond_length=2.5, c_mode=mode, c_range=(3.0, 12.0))
        hook = MotifInpainting(model=model, constraint=con)
        back = model.coder.decode(hook.clean_lattice_code(lat, n), n).double()
        g = back @ back.transpose(-1, -2)
        a = math.sqrt(3) * 2.5
        assert g[:, 0, 0].sqrt() == pytest.approx(torch.tensor([a, a], dtype=torch.float64), rel=1e-4)
        assert g[:, 1, 1].sqrt() == pytest.approx(torch.tensor([a, a], dtype=torch.float64), rel=1e-4)
        assert (g[:, 0, 1] / a**2).tolist() == pytest.approx([-0.5, -0.5], abs=1e-4)
        assert g[:, 0, 2].abs().max() < 1e-3 and g[:, 1, 2].abs().max() < 1e-3
        c = g[:, 2, 2].sqrt()
        if mode == "volume":
            want = float(torch.det(lat[0]).abs()) / (a * a * math.sin(math.radians(120)))
        else:
            want = float(lat[0, 2].norm())
        assert float(c[0]) == pytest.approx(want, rel=1e-4)
        assert float(c[1]) == pytest.approx(12.0, rel=1e-4)


def test_the_atom_count_prior_leaves_room_for_free_atoms() -> None:
    prior = [0.1, 0.2, 0.3, 0.2, 0.1, 0.1]
    p = motif_n_atoms_prior(prior, num_motif_atoms=3, min_free_atoms=1)
    assert p[:3] == [0, 0, 0] and sum(p) == pytest.approx(1.0)
    assert p[3:] == pytest.approx([0.5, 0.25, 0.25])
    assert motif_n_atoms_prior(prior, num_motif_atoms=3, min_free_atoms=0, max_atoms=4)[2:] == pytest.approx([0.6, 0.4])
    # Beyond the prior: uniform over the allowed counts.
    assert motif_n_atoms_prior(prior, num_motif_atoms=12, min_free_atoms=1, max_atoms=16)[12:] == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError, match="more than the atom budget of 6"):
        motif_n_atoms_prior(prior, num_motif_atoms=12, min_free_atoms=1)


def test_options_are_checked(small_data) -> None:
    model = tiny_model(small_data)
    with pytest.raises(ValueError, match="unknown lattice"):
        MotifConstraint.build(lattice="kagomme", element="Fe")
    with pytest.raises(ValueError, match="unknown element"):
        MotifConstraint.build(lattice="kagome", element="Kx")
    with pytest.raises(ValueError, match="c_range"):
        MotifConstraint.build(lattice="kagome", element="Fe", c_range=(5.0, 3.0))
    with pytest.raises(ValueError, match="release_below"):
        MotifConstraint.build(lattice="kagome", element="Fe", release_below=1.5)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        MotifInpainting(model=model, constraint=MotifConstraint.build(lattice="kagome", element="Mn"))
    con = MotifConstraint.build(lattice="kagome", element="Mn")
    assert con.bond_length == pytest.approx(2.54) and con.c_range == pytest.approx((2.54, 20.0))
    assert con.template is get_template("kagome")


def test_adaptive_demasking_releases_coordinates_and_cell_but_not_types(small_data) -> None:
    """Below release_below * T the hook stops writing coordinates and cell: the untrained network moves the motif
    atoms off the template; their element stays."""
    model = tiny_model(small_data, type_process="masked")
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=10))
    con = MotifConstraint.build(lattice="kagome", element="Fe", release_below=0.5)
    hook = MotifInpainting(model=model, constraint=con)
    assert hook.released(49) and not hook.released(50)
    out = sample_with_motif(sampler=sampler, constraint=con, n=4, seed=3, n_atoms=5)
    frac = np.stack([f[:3] for _, f, _ in out.split()])
    assert not np.allclose(frac, np.tile(con.template.frac, (4, 1, 1)), atol=1e-3)
    assert all([VOCAB[int(t)] for t in types[:3]] == [26] * 3 for _, _, types in out.split())


def test_same_seed_same_samples(small_data) -> None:
    model = tiny_model(small_data, type_process="masked")
    sampler = Sampler(model=model, config=SamplerConfig(num_steps=6))
    con = MotifConstraint.build(lattice="lieb", element="Fe")
    a, b, c = (sample_with_motif(sampler=sampler, constraint=con, n=4, seed=s, n_elements=2) for s in (5, 5, 6))
    assert torch.equal(a.frac, b.frac) and torch.equal(a.types, b.types) and torch.equal(a.lattice, b.lattice)
    assert not torch.equal(a.frac, c.frac) or not torch.equal(a.n_atoms, c.n_atoms)
    # n_elements counts the motif element: two distinct elements per crystal.
    assert all(len(set(t.tolist())) == 2 for _, _, t in a.split())


@pytest.fixture(scope="module")
def shipped_model():
    if not CHECKPOINT.exists():
        pytest.skip("shipped checkpoint not present")
    return load_weights(CHECKPOINT)


def test_shipped_model_samples_kagome_mn_nets_the_detector_confirms(shipped_model) -> None:
    """The pre-trained generator, never trained for motifs, with a kagome net of Mn inpainted (short schedule):
    every sample holds the net exactly, and the free atoms are the model's choice of a small chemical system."""
    sampler = Sampler(model=shipped_model, config=SamplerConfig(num_steps=40))
    con = MotifConstraint.build(lattice="kagome", element="Mn", free_elements=["Sn", "Ge", "Ga", "In", "Al", "Si"])
    out = sample_with_motif(sampler=sampler, constraint=con, n=8, seed=0, max_atoms=9, n_elements=2)
    assert bool((out.n_atoms >= 4).all()) and bool((out.n_atoms <= 9).all())
    _assert_exact_motif(out, con, shipped_model.vocab)
    structures = to_structures(out, shipped_model.vocab)
    for s in structures:
        others = {sp.symbol for sp in s.species} - {"Mn"}
        assert len(others) == 1 and others <= {"Sn", "Ge", "Ga", "In", "Al", "Si"}
        assert s.volume / len(s) > 5.0  # the projection kept a physical density


def test_a_fixed_3d_cell_caps_the_atom_count_by_its_volume(shipped_model) -> None:
    """Pyrochlore fixes the whole cell (about 93 A^3 for Mn): the N prior never asks for more atoms than
    volume / MIN_VOLUME_PER_ATOM_FIXED_CELL (20 atoms would be 4.6 A^3/atom: overlapping atoms); a 2D net,
    whose c grows with N up to c_range[1], keeps the full prior unless its in-plane cell is small."""
    from tessera.generators.inpainting import MIN_VOLUME_PER_ATOM_FIXED_CELL

    pyro = MotifInpainting(model=shipped_model, constraint=MotifConstraint.build(lattice="pyrochlore", element="Mn"))
    volume = abs(np.linalg.det(pyro.constraint.template.lattice_matrix(pyro.constraint.bond_length)))
    counts = pyro.draw_n_atoms(200, torch.Generator().manual_seed(0), max_atoms=20)
    assert int(counts.max()) <= volume / MIN_VOLUME_PER_ATOM_FIXED_CELL and int(counts.min()) >= 5
    kagome = MotifInpainting(model=shipped_model, constraint=MotifConstraint.build(lattice="kagome", element="Mn"))
    assert kagome.max_atoms_for_cell() is None and len(kagome.n_atoms_prior(20)) == 20
    # a one-site 2D net: the in-plane cell times the largest c holds about 12 atoms at 9 A^3/atom
    tri = MotifInpainting(model=shipped_model, constraint=MotifConstraint.build(lattice="triangular", element="Co"))
    cap = tri.max_atoms_for_cell()
    assert cap is not None and cap == int(tri.constraint.in_plane_area() * tri.constraint.c_range[1] // 9.0)
    assert 8 <= cap <= 14 and max(i + 1 for i, p in enumerate(tri.n_atoms_prior(20)) if p > 0) == cap
