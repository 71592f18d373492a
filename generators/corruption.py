"""Forward (corruption) processes, one per field, as in DiffCSP's ab initio generation.

- ``DDPM``: variance-preserving discrete diffusion for the lattice code (6 per crystal) and for the
  continuous one-hot of the atom types (K per atom). Linear betas with a small beta_max: a schedule
  whose beta approaches 1 at t = T multiplies any error of the first reverse step by 1/sqrt(alpha_T)
  (about 30-100x), which is the "10^5 A^3 cell" trap. Reverse steps go through the clean estimate x0
  (clipped), never through 1/sqrt(alpha_t) * (x_t - ...).
- ``WrappedNormal``: variance-exploding score matching on the torus for fractional coordinates, sigma
  geometric from sigma_min to sigma_max; the target is the score of the wrapped normal (a sum over
  periodic images), normalised per sigma by sqrt(E|score|^2) as DiffCSP does.

- Atom types have two interchangeable processes behind one ``TypeProcess`` interface (what training and
  the sampler call): ``GaussianTypes`` (DDPM on type_scale * one-hot, DiffCSP) and ``MaskedTypes``
  (absorbing-state, MatterGen).

Timesteps are integers 1..T (T = ``num_steps``); index 0 means clean data.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Protocol

import torch
import torch.nn.functional as F


class DDPM:
    """Variance-preserving DDPM with linear betas.

    marginal q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I); prior N(0, I).
    """

    def __init__(self, *, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        self.num_steps = num_steps
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
        # Index 0 is the clean state (abar = 1); index t in 1..T uses betas[t - 1].
        self.alpha_bars = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, 0)])

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """(...,) long timesteps -> (...,) float32 abar_t."""
        return self.alpha_bars.to(t.device)[t].float()

    def marginal(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; t broadcast per row of x0."""
        a = self.abar(t).unsqueeze(-1)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def prior(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(shape, generator=generator)

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        a = self.abar(t).unsqueeze(-1)
        return (x_t - (1.0 - a).sqrt() * eps) / a.sqrt()

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        a = self.abar(t).unsqueeze(-1)
        return (x_t - a.sqrt() * x0) / (1.0 - a).clamp_min(1e-12).sqrt()

    def posterior_step(
        self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Sample x_s ~ q(x_s | x_t, x_0 = x0_hat) for s < t (works for strided schedules).

        Uses abar_{t|s} = abar_t / abar_s; at s = 0 returns x0_hat.
        """
        a_t = self.abar(t).unsqueeze(-1)
        a_s = self.abar(s).unsqueeze(-1)
        a_ts = a_t / a_s
        beta_ts = 1.0 - a_ts
        c0 = a_s.sqrt() * beta_ts / (1.0 - a_t)
        ct = a_ts.sqrt() * (1.0 - a_s) / (1.0 - a_t)
        var = beta_ts * (1.0 - a_s) / (1.0 - a_t)
        return c0 * x0_hat + ct * x_t + var.sqrt() * noise


class TypeProcess(Protocol):
    """The diffusion of atom types, as training and the sampler use it.

    Shapes: N atoms, K elements; a type state is (N, state_dim); clean types are (N,) vocabulary indices;
    t, s are (N,) long per-atom steps. Every random draw comes from the generator passed in, in a fixed
    order, so a recorded (checkpoint, seed) run reproduces.
    """

    num_types: int
    # True: the state is continuous and guidance differentiates it; False: a discrete state, guidance
    # differentiates the clean-type logits instead (and the sampler's masked-only type options apply).
    continuous: bool

    @property
    def state_dim(self) -> int: ...

    def noisy(self, types: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A draw of q(A_t | A_0): (N,) clean indices -> (N, state_dim)."""
        ...

    def prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, state_dim) draw of the t = T state."""
        ...

    def known(self, types: torch.Tensor, s: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, state_dim) state at step s of atoms whose clean type is given (inpainting)."""
        ...

    def clean_probs(self, state: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """(N, K) clean-type estimate from the network's (N, K) probabilities and what the state fixes."""
        ...

    def reverse_step(
        self, state: torch.Tensor, target: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator: torch.Generator,
        force: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse step t -> s (< t) toward the (N, K) clean-type target; (N, state_dim). force: (N,) bool
        atoms to reveal in this step whatever the schedule (masked processes; None for a continuous one)."""
        ...

    def loss(self, logits: torch.Tensor, types: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of the (N, K) clean-type logits against (N,) clean indices."""
        ...


class GaussianTypes:
    """DiffCSP's continuous types: a DDPM on type_scale * one-hot, state (N, K).

    The clean target is the (scaled) expected one-hot; every atom stays a blend until late in the reverse
    process. Training loss: cross-entropy of the clean type from the noisy state.
    """

    continuous = True

    def __init__(self, ddpm: DDPM, *, num_types: int, type_scale: float) -> None:
        self.ddpm, self.num_types, self.type_scale = ddpm, num_types, type_scale

    @property
    def state_dim(self) -> int:
        return self.num_types

    def noisy(self, types: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        onehot = F.one_hot(types, self.num_types).float() * self.type_scale
        return self.ddpm.marginal(onehot, t, torch.randn(onehot.shape, generator=generator))

    def prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.ddpm.prior((n, self.num_types), generator)

    def known(self, types: torch.Tensor, s: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # The forward marginal at s: what a known atom would look like at this noise level.
        return self.noisy(types, s, generator)

    def clean_probs(self, state: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return probs

    def reverse_step(
        self, state: torch.Tensor, target: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator: torch.Generator,
        force: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if force is not None:
            raise ValueError("a continuous type process has no masked atoms to reveal (force must be None)")
        noise = torch.randn(state.shape, generator=generator)
        return self.ddpm.posterior_step(state, self.type_scale * target, t, s, noise)

    def loss(self, logits: torch.Tensor, types: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, types)


def wrapped_normal_log_density(x: torch.Tensor, sigma: torch.Tensor, n_images: int = 10) -> torch.Tensor:
    """log sum_k N(x + k; 0, sigma^2) per component (unnormalised constant dropped), k in -n..n."""
    k = torch.arange(-n_images, n_images + 1, dtype=x.dtype, device=x.device)
    d = x.unsqueeze(-1) + k
    return torch.logsumexp(-(d**2) / (2.0 * sigma.unsqueeze(-1) ** 2), dim=-1)


def wrapped_normal_score(x: torch.Tensor, sigma: torch.Tensor, n_images: int = 10) -> torch.Tensor:
    """d/dx log of the wrapped normal density with scale sigma, elementwise (sigma broadcast to x)."""
    k = torch.arange(-n_images, n_images + 1, dtype=x.dtype, device=x.device)
    d = x.unsqueeze(-1) + k
    s = sigma.unsqueeze(-1)
    w = torch.softmax(-(d**2) / (2.0 * s**2), dim=-1)
    return (w * (-d / s**2)).sum(-1)


# Below this sigma the wrapped normal's periodic images change E[score^2] = 1 / sigma^2 by less than 1e-14
# relative (measured against 4000-point quadrature on the shipped schedule: 2e-15 at 0.05, 5e-8 at 0.08,
# 4e-5 at 0.1), so the plain normal's value is exact to machine precision.
_PLAIN_NORMAL_SIGMA = 0.05
# Quadrature points per period above that sigma: spacing 1/256 < sigma / 12; the periodic trapezoid rule on a
# Gaussian-smooth integrand has aliasing error ~ exp(-2 pi^2 sigma^2 M^2), far below float64 resolution.
_QUADRATURE_POINTS = 256


@lru_cache(maxsize=8)
def _expected_sq_score_cached(sigmas: tuple[float, ...]) -> torch.Tensor:
    sig = torch.tensor(sigmas, dtype=torch.float64)
    out = 1.0 / sig**2
    wide = sig > _PLAIN_NORMAL_SIGMA
    if bool(wide.any()):
        x = torch.linspace(-0.5, 0.5, _QUADRATURE_POINTS + 1, dtype=torch.float64)[:-1]
        sv = sig[wide].unsqueeze(-1).expand(-1, x.shape[0])
        xs = x.expand_as(sv)
        p = torch.softmax(wrapped_normal_log_density(xs, sv), -1)  # normalised weights on the uniform grid
        out[wide] = (p * wrapped_normal_score(xs, sv) ** 2).sum(-1)
    return out


class WrappedNormal:
    """Wrapped-normal (VE) diffusion of fractional coordinates on the 3-torus.

    marginal: F_t = (F_0 + sigma_t * z) mod 1; prior: uniform on [0, 1)^3.
    sigma_t geometric from sigma_min (t = 1) to sigma_max (t = T).
    """

    def __init__(self, *, num_steps: int = 1000, sigma_min: float = 0.005, sigma_max: float = 0.5) -> None:
        self.num_steps = num_steps
        sig = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), num_steps, dtype=torch.float64))
        self.sigmas = torch.cat([torch.zeros(1, dtype=torch.float64), sig])
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.score_norms = torch.cat([torch.ones(1, dtype=torch.float64), self._expected_sq_score(sig)])

    @staticmethod
    def _expected_sq_score(sigmas: torch.Tensor) -> torch.Tensor:
        """E_{x ~ WN(sigma)} [score(x)^2] by quadrature on one period (per component), cached per schedule."""
        return _expected_sq_score_cached(tuple(float(s) for s in sigmas))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigmas.to(t.device)[t].float()

    def score_norm(self, t: torch.Tensor) -> torch.Tensor:
        return self.score_norms.to(t.device)[t].float()

    def marginal(self, f0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (f0 + self.sigma(t).unsqueeze(-1) * noise) % 1.0

    def target_score(self, f_t: torch.Tensor, f0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Score of q(F_t | F_0) at F_t (per component); exact over 21 images."""
        d = (f_t - f0 + 0.5) % 1.0 - 0.5
        return wrapped_normal_score(d, self.sigma(t).unsqueeze(-1).expand_as(d))

    def prior(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=generator)

    def predictor_step(
        self, f_t: torch.Tensor, score: torch.Tensor, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Reverse VE step t -> s (< t): ancestral sampling with the score (DiffCSP's predictor)."""
        sig_t = self.sigma(t).unsqueeze(-1)
        sig_s = self.sigma(s).unsqueeze(-1)
        step = sig_t**2 - sig_s**2
        std = (sig_s**2 * step / sig_t**2).clamp_min(0).sqrt()
        return (f_t + step * score + std * noise) % 1.0

    def corrector_step(
        self, f_t: torch.Tensor, score: torch.Tensor, t: torch.Tensor, step_lr: float, noise: torch.Tensor
    ) -> torch.Tensor:
        """Langevin corrector at noise level t (DiffCSP: step = step_lr * (sigma_t / sigma_max)^2)."""
        step = step_lr * (self.sigma(t).unsqueeze(-1) / self.sigma_max) ** 2
        return (f_t + step * score + (2.0 * step).sqrt() * noise) % 1.0


class MaskedTypes:
    """Absorbing-state ("masked") discrete diffusion of atom types, as MatterGen uses for composition.

    State: (N, K + 1) one-hot; column K is the mask token. Forward: each atom's type is replaced by the
    mask independently with probability m(t) = t / T (linear, MDLM); prior: every atom masked. Reverse
    t -> s: a masked atom is revealed with probability (m(t) - m(s)) / m(t), its element drawn from the
    network's clean-type distribution; a revealed atom never changes. Atoms are therefore revealed one by
    one over the whole reverse process and each later atom is drawn knowing the elements already placed,
    so a crystal's composition is decided jointly rather than as independent per-atom choices (the
    "element soup" of a continuous one-hot diffusion).
    """

    continuous = False

    def __init__(self, *, num_steps: int = 1000, num_types: int) -> None:
        self.num_steps, self.num_types = num_steps, num_types

    @property
    def state_dim(self) -> int:
        return self.num_types + 1

    def mask_prob(self, t: torch.Tensor) -> torch.Tensor:
        """(...,) timesteps (long, or float on a sampler's remapped clock) -> (...,) float probability that an
        atom is masked at t."""
        return t.float() / self.num_steps

    def encode(self, types: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """(N,) type indices and (N,) bool masked -> (N, K + 1) one-hot state."""
        idx = torch.where(masked, torch.full_like(types, self.num_types), types)
        return torch.nn.functional.one_hot(idx, self.state_dim).float()

    def marginal_mask(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N,) per-atom timesteps -> (N,) bool: which atoms are masked in a draw of q(A_t | A_0)."""
        return torch.rand(t.shape, generator=generator) < self.mask_prob(t)

    def noisy(self, types: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N,) clean type indices, (N,) timesteps -> (N, K + 1) noisy state."""
        return self.encode(types, self.marginal_mask(t, generator))

    def prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, K + 1): every atom masked (no draw)."""
        return self.encode(torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.bool))

    def known(self, types: torch.Tensor, s: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Known atoms are simply revealed, exact for an absorbing process: a revealed type never changes."""
        return self.encode(types, torch.zeros(types.shape[0], dtype=torch.bool))

    def clean_probs(self, state: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """A revealed atom's type is known exactly: the clean estimate carries it over."""
        revealed = ~self.is_masked(state)
        return torch.where(revealed.unsqueeze(-1), state[:, : self.num_types], probs)

    def loss(self, logits: torch.Tensor, types: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the masked atoms only, averaged over them (MaskGIT/MDLM-style, without the 1/t
        ELBO weight, whose variance would swamp the other fields' losses); a revealed atom's type is given."""
        masked = self.is_masked(state)
        ce = F.cross_entropy(logits, types, reduction="none")
        return (ce * masked).sum() / masked.sum().clamp_min(1)

    @staticmethod
    def is_masked(state: torch.Tensor) -> torch.Tensor:
        """(N, K + 1) state -> (N,) bool."""
        return state[:, -1] > 0.5

    def _reveal_mask(
        self, state: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator: torch.Generator,
        force: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N,) bool: the masked atoms revealed by the step t -> s, each with probability (m(t) - m(s)) / m(t),
        and the (N,) bool ``force`` atoms whatever the draw (the same random numbers are drawn either way)."""
        m_t, m_s = self.mask_prob(t), self.mask_prob(s)
        reveal_p = ((m_t - m_s) / m_t.clamp_min(1e-12)).clamp(0.0, 1.0)
        reveal = torch.rand(state.shape[0], generator=generator) < reveal_p
        if force is not None:
            reveal = reveal | force
        return self.is_masked(state) & reveal

    def remask(
        self, state: torch.Tensor, prob: float, generator: torch.Generator, *, batch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hide one revealed atom per crystal again, in each crystal with probability ``prob``: a Gibbs move.

        state: (N, K + 1); batch: (N,) crystal index of each atom. Returns the new state and the (N,) bool
        atoms it hid (at most one per crystal, chosen uniformly among its revealed atoms), which the caller
        reveals again in the same reverse step (``force``). The share of masked atoms thus stays on the
        schedule, and each hidden atom is redrawn from the network's prediction given every other atom of
        its crystal. One atom at a time, because atoms redrawn together would choose independently of
        each other; an absorbing process otherwise never revises an atom revealed early, when the lattice
        and coordinates were still coarse.
        """
        B = int(batch.max()) + 1 if batch.numel() else 0
        revealed = ~self.is_masked(state)
        key = torch.rand(state.shape[0], generator=generator).masked_fill(~revealed, -1.0)
        best = torch.full((B,), -1.0).scatter_reduce(0, batch, key, reduce="amax")
        move = torch.rand(B, generator=generator) < prob
        hide = revealed & (key == best[batch]) & move[batch]
        types = state[:, : self.num_types].argmax(-1)
        return self.encode(types, ~revealed | hide), hide

    def reverse_step(
        self, state: torch.Tensor, probs: torch.Tensor, t: torch.Tensor, s: torch.Tensor, generator: torch.Generator,
        force: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One reverse step t -> s (< t) per atom.

        state: (N, K + 1); probs: (N, K) clean-type distribution (0 for elements masked out);
        t, s: (N,) timesteps (long, or float on a sampler's remapped clock); force: (N,) bool masked atoms
        revealed whatever the schedule says (those ``remask`` hid). At s = 0 every atom is revealed.
        """
        masked = self.is_masked(state)
        reveal = self._reveal_mask(state, t, s, generator, force)
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        current = state[:, : self.num_types].argmax(-1)
        new_types = torch.where(reveal, drawn, current)
        return self.encode(new_types, masked & ~reveal)

    def reverse_step_within_budget(
        self,
        state: torch.Tensor,
        probs: torch.Tensor,
        t: torch.Tensor,
        s: torch.Tensor,
        generator: torch.Generator,
        *,
        batch: torch.Tensor,
        n_elements: torch.Tensor,
        force: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``reverse_step`` for crystals that must end with exactly ``n_elements`` distinct elements each.

        batch: (N,) crystal index of each atom, atoms of a crystal contiguous (``batch_index``);
        n_elements: (B,) long target per crystal (at most its atom count). The atoms a step reveals are drawn
        one per crystal per round, each knowing the elements already placed in its crystal: once the target
        is reached an atom may only repeat a placed element; when the masked atoms left are just enough to
        supply the missing elements, it must bring a new one. Otherwise it is drawn from ``probs`` as usual.
        Where that restriction leaves no probability (a type mask narrower than the target), the atom falls
        back to ``probs`` and the crystal ends with fewer elements. force: as in ``reverse_step``.
        """
        K = self.num_types
        masked = self.is_masked(state)
        reveal = self._reveal_mask(state, t, s, generator, force)
        types = state[:, :K].argmax(-1)
        placed = torch.zeros(n_elements.shape[0], K, dtype=torch.bool)
        placed[batch[~masked], types[~masked]] = True
        n_masked = torch.zeros(n_elements.shape[0], dtype=torch.long).index_add_(0, batch, masked.long())
        pending = reveal.clone()
        while bool(pending.any()):
            idx = pending.nonzero().flatten()
            crystal = batch[idx]
            first = torch.ones_like(idx, dtype=torch.bool)
            first[1:] = crystal[1:] != crystal[:-1]
            atoms, crystal = idx[first], crystal[first]
            have = placed[crystal]
            missing = n_elements[crystal] - have.sum(-1)
            allowed = torch.ones_like(have)
            allowed = torch.where((missing <= 0).unsqueeze(-1), have, allowed)
            allowed = torch.where((missing >= n_masked[crystal]).unsqueeze(-1), ~have, allowed)
            p = probs[atoms] * allowed
            p = torch.where(p.sum(-1, keepdim=True) > 0, p, probs[atoms])
            drawn = torch.multinomial(p, 1, generator=generator).squeeze(-1)
            types[atoms] = drawn
            placed[crystal, drawn] = True
            n_masked[crystal] -= 1
            pending[atoms] = False
        return self.encode(types, masked & ~reveal)
