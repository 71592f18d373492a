"""Forward processes: wrapped-normal score against autograd of the explicit density, DDPM identities."""

from __future__ import annotations

import math

import pytest
import torch

from tessera.generators.corruption import DDPM, GaussianTypes, MaskedTypes, TypeProcess, WrappedNormal, wrapped_normal_score


def _explicit_density(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Normalised wrapped normal density, summing 41 periodic images explicitly."""
    k = torch.arange(-20, 21, dtype=x.dtype)
    d = x.unsqueeze(-1) + k
    return (torch.exp(-(d**2) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))).sum(-1)


def test_wrapped_normal_score_matches_autograd_of_density() -> None:
    for sigma in (0.01, 0.1, 0.3, 0.5, 1.0):
        r = min(0.49, 6 * sigma)  # the explicit density underflows further out for small sigma
        x = torch.linspace(-r, r, 57, dtype=torch.float64, requires_grad=True)
        logp = torch.log(_explicit_density(x, sigma)).sum()
        (grad,) = torch.autograd.grad(logp, x)
        score = wrapped_normal_score(x.detach(), torch.full_like(x, sigma))
        assert torch.allclose(score, grad, rtol=1e-6, atol=1e-8), sigma


def test_wrapped_normal_density_is_normalised_and_periodic() -> None:
    x = torch.linspace(0.0, 1.0, 4001, dtype=torch.float64)
    for sigma in (0.05, 0.5):
        p = _explicit_density(x, sigma)
        assert abs(torch.trapezoid(p, x).item() - 1.0) < 1e-6
        s = torch.full((3,), sigma, dtype=torch.float64)
        a = torch.tensor([0.1, -0.3, 0.45], dtype=torch.float64)
        assert torch.allclose(wrapped_normal_score(a, s), wrapped_normal_score(a + 1.0, s))


def test_score_norm_limits() -> None:
    """E|s|^2 -> 1/sigma^2 for small sigma; -> 0 as the wrapped normal flattens."""
    wn = WrappedNormal(num_steps=50, sigma_min=0.005, sigma_max=0.5)
    small = wn.score_norms[1].item() * wn.sigmas[1].item() ** 2
    assert abs(small - 1.0) < 1e-3
    assert wn.score_norms[-1].item() * 0.5**2 < 0.9  # flatter than a Gaussian at sigma 0.5
    # Monte-Carlo check of the quadrature at the largest sigma.
    g = torch.Generator().manual_seed(0)
    t = torch.full((200_000,), 50)
    f_t = wn.marginal(torch.zeros(200_000, 1), t, torch.randn(200_000, 1, generator=g))
    mc = (wn.target_score(f_t, torch.zeros_like(f_t), t) ** 2).mean().item()
    assert abs(mc / wn.score_norms[-1].item() - 1.0) < 0.02


def test_ddpm_marginal_statistics_and_posterior_end() -> None:
    ddpm = DDPM(num_steps=100)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((50_000, 1), 2.0)
    t = torch.full((50_000,), 40)
    xt = ddpm.marginal(x0, t, torch.randn(50_000, 1, generator=g))
    a = ddpm.abar(torch.tensor(40)).item()
    assert abs(xt.mean().item() - 2.0 * math.sqrt(a)) < 0.02
    assert abs(xt.var().item() - (1 - a)) < 0.02
    # Reaching s = 0 returns the clean estimate exactly; the prior end has abar ~ 0.
    x_hat = torch.randn(5, 3, generator=g)
    out = ddpm.posterior_step(torch.randn(5, 3, generator=g), x_hat, torch.full((5,), 7), torch.zeros(5, dtype=torch.long), torch.randn(5, 3, generator=g))
    assert torch.allclose(out, x_hat, atol=1e-6)
    assert DDPM(num_steps=1000).abar(torch.tensor(1000)).item() < 1e-4


def test_ddpm_eps_x0_round_trip() -> None:
    ddpm = DDPM(num_steps=100)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    t = torch.tensor([1, 10, 50, 100])
    xt = ddpm.marginal(x0, t, eps)
    assert torch.allclose(ddpm.x0_from_eps(xt, t, eps), x0, atol=1e-3)
    assert torch.allclose(ddpm.eps_from_x0(xt, t, x0), eps, atol=1e-3)


def test_masked_types_forward_marginal_masks_a_fraction_t_over_T() -> None:
    mt = MaskedTypes(num_steps=100, num_types=5)
    g = torch.Generator().manual_seed(0)
    types = torch.randint(0, 5, (40_000,), generator=g)
    for t in (1, 30, 100):
        state = mt.noisy(types, torch.full((40_000,), t), g)
        masked = mt.is_masked(state)
        assert abs(masked.float().mean().item() - t / 100) < 0.01
        # An unmasked atom shows its true type; every row is one-hot.
        assert torch.equal(state[~masked, :5].argmax(-1), types[~masked])
        assert torch.all(state.sum(-1) == 1)


def test_masked_types_reverse_chain_has_the_forward_marginals() -> None:
    """Reverse steps over a strided schedule leave a fraction m(s) = s / T masked at every s, never change
    a revealed atom, never draw an element of probability 0, and reveal every atom at s = 0."""
    mt = MaskedTypes(num_steps=100, num_types=4)
    g = torch.Generator().manual_seed(1)
    n = 40_000
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2]).expand(n, 4)
    state = mt.prior(n)
    schedule = [100, 80, 55, 30, 10, 1, 0]
    for t, s in zip(schedule[:-1], schedule[1:]):
        before = state.clone()
        state = mt.reverse_step(state, probs, torch.full((n,), t), torch.full((n,), s), g)
        assert abs(mt.is_masked(state).float().mean().item() - s / 100) < 0.01
        kept = ~mt.is_masked(before)
        assert torch.equal(state[kept], before[kept])
    types = state[:, :4].argmax(-1)
    assert not mt.is_masked(state).any()
    assert not (types == 1).any()
    freq = torch.bincount(types, minlength=4).float() / n
    assert torch.allclose(freq, probs[0], atol=0.01)


def _type_processes() -> list[TypeProcess]:
    return [GaussianTypes(DDPM(num_steps=100), num_types=4, type_scale=3.0), MaskedTypes(num_steps=100, num_types=4)]


@pytest.mark.parametrize("process", _type_processes(), ids=["gaussian", "masked"])
def test_type_processes_agree_on_the_clean_end(process: TypeProcess) -> None:
    """Both type processes: a known atom at s = 0 is exactly its type, the clean-type estimate of a known atom
    is (at least) the network's, and the loss rewards the right logits."""
    g = torch.Generator().manual_seed(2)
    types = torch.tensor([0, 3, 2, 2])
    known = process.known(types, torch.zeros(4, dtype=torch.long), g)
    assert known.shape == (4, process.state_dim)
    assert torch.equal(known[:, :4].argmax(-1), types)
    noisy = process.noisy(types, torch.full((4,), 100), g)
    assert noisy.shape == (4, process.state_dim) and process.prior(4, g).shape == (4, process.state_dim)
    right = torch.nn.functional.one_hot(types, 4).float() * 10
    assert process.loss(right, types, noisy) < 0.01 < process.loss(-right, types, noisy)
    uniform = torch.full((4, 4), 0.25)
    clean = process.clean_probs(known, uniform)
    # A masked process knows a revealed atom's type exactly; a continuous one leaves the estimate to the network.
    expected = torch.nn.functional.one_hot(types, 4).float() if not process.continuous else uniform
    assert torch.allclose(clean, expected)


def test_masked_types_resampling_redraws_one_revealed_atom_per_crystal_and_keeps_the_schedule() -> None:
    """remask hides at most one atom per crystal, always a revealed one, in each crystal with the given
    probability; revealed again in the same step (force), those atoms are redrawn from probs, the others
    never change, and the share of masked atoms after the step stays m(s) = s / T."""
    mt = MaskedTypes(num_steps=100, num_types=4)
    g = torch.Generator().manual_seed(3)
    n_crystals, per = 10_000, 4
    n = n_crystals * per
    batch = torch.arange(n_crystals).repeat_interleave(per)
    first = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4)
    later = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(n, 4)
    state = mt.reverse_step(mt.prior(n), first, torch.full((n,), 100), torch.full((n,), 60), g)
    revealed_before = ~mt.is_masked(state)
    hidden_state, hidden = mt.remask(state, 0.5, g, batch=batch)
    assert not (hidden & ~revealed_before).any()  # never a masked atom
    per_crystal = torch.zeros(n_crystals, dtype=torch.long).index_add_(0, batch, hidden.long())
    has_revealed = torch.zeros(n_crystals, dtype=torch.long).index_add_(0, batch, revealed_before.long()) > 0
    assert per_crystal.max() == 1
    assert per_crystal[has_revealed].float().mean() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(mt.is_masked(hidden_state), mt.is_masked(state) | hidden)
    state = mt.reverse_step(hidden_state, later, torch.full((n,), 60), torch.full((n,), 30), g, force=hidden)
    assert mt.is_masked(state).float().mean().item() == pytest.approx(0.30, abs=0.01)
    types = state[:, :4].argmax(-1)
    assert torch.all(types[hidden] == 3)  # redrawn from the new prediction
    kept = revealed_before & ~hidden
    assert torch.all(types[kept] == 0)  # untouched atoms never change
