"""The reverse process: strided DDPM for lattice and types, predictor-corrector for fractional coordinates.

The sampler is separate from the network (reached only through ``Backbone.predict``) and from training.
Per step it exposes what constraint and guidance code needs:

- ``StepInfo.x0``: the prediction of the clean crystal from x_t (``CleanEstimate``: lattice code and
  matrix, fractional coordinates, type probabilities), computed from the backbone's output.
- ``StepHook``: ``hook(state, info) -> state`` runs after every reverse step and may replace parts of
  the state (inpainting a motif: overwrite known atoms' F/types with their re-noised values at the new
  step; see ``StepInfo.renoise_*``).
- ``Guidance``: a differentiable ``loss(x0, info) -> (B,)`` with a ``scale``; the sampler adds the
  gradient of the loss on x0 with respect to x_t to each field's score (universal guidance).
- ``type_mask``: allowed vocabulary indices; other type logits are set to -inf at every step.

Timesteps: ``num_steps`` evenly spaced training timesteps from T down to 1 (then 0 = clean). Reverse
DDPM steps go through the clipped clean estimate (q(x_s | x_t, x0_hat)), never through a
1/sqrt(alpha_t) amplification, so the first step cannot blow up the cell.

Same seed, same ``n_atoms``, same options: identical output (all noise comes from one generator).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Protocol, Sequence

import torch

from tessera.generators.corruption import MaskedTypes
from tessera.generators.crystal import CrystalBatch, batch_index
from tessera.generators.denoiser import Backbone, NoisyCrystal, Prediction
from tessera.generators.model import DiffusionModel


@dataclass(frozen=True)
class SamplerConfig:
    """Reverse-process settings; the defaults are configs/sampler.yaml's.

    num_steps: reverse steps (<= training T). corrector_steps: Langevin corrector passes per step for F.
    step_lr: corrector step scale (DiffCSP). lattice_clip: clamp of the clean lattice code (in training
    standard deviations; bounds the volume per atom). commit_elements_at: training step (0 = off) at which
    each crystal commits to an element set: k elements (k drawn from commit_n_elements_probs, P(k = 1, 2,
    ...), by default the train split's statistics; k <= atoms), drawn without replacement in proportion to the
    mean clean-type probability over the crystal's atoms (Gumbel top-k); later steps mask the other types for
    that crystal's atoms (meant for a continuous type process; a masked one has element_budget).
    type_reveal_power: masked type process only; at reverse step t the types follow the mask schedule m(t) =
    (t / T)^p instead of the trained m(t) = t / T. p > 1 reveals atoms earlier, while the lattice and
    coordinates are still coarse, so the structure forms around a composition that is already known; 1 is the
    trained schedule. element_budget: masked type process only; each crystal draws a number of distinct
    elements k from commit_n_elements_probs (k <= its atoms and <= the elements a type mask allows) and its
    atoms are revealed so that it ends with exactly k (MaskedTypes.reverse_step_within_budget), which element
    they are still being the network's choice. A model trained with the element-count condition
    (ModelConfig.n_elements_condition) is always given such a k, drawn the same way unless the caller fixes
    it; element_budget then also enforces it exactly. type_resample: masked type process only; at each reverse
    step with type_resample_t_min <= t <= type_resample_t_max, each crystal with this probability hides one of
    its revealed atoms again and redraws it in the same step from the network's prediction given all its other
    atoms (MaskedTypes.remask; a Gibbs move). 0 is off: an absorbing process never revises an atom, and with
    the p = 3 clock most atoms are revealed while the lattice and coordinates are still coarse. An inpainting
    hook rewrites its atoms after every step, so a motif atom this move hides is restored at the end of that
    step."""

    num_steps: int = 1000
    corrector_steps: int = 0
    step_lr: float = 1e-5
    lattice_clip: float = 4.0
    commit_elements_at: int = 0
    type_reveal_power: float = 3.0
    element_budget: bool = True
    commit_n_elements_probs: tuple[float, ...] = (0.0037, 0.211, 0.67, 0.1033, 0.0117, 0.0004)
    type_resample: float = 0.0
    type_resample_t_max: int = 400
    type_resample_t_min: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> "SamplerConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sampler config keys: {sorted(unknown)}")
        return cls(**d)


def parse_overrides(items: Sequence[str]) -> dict:
    """["element_budget=true", "num_steps=500"] -> {"element_budget": True, "num_steps": 500} (YAML values),
    for command-line overrides of SamplerConfig fields; one clear ValueError for an item without '='."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@dataclass(frozen=True)
class CleanEstimate:
    """Prediction of the clean crystal x0 from x_t.

    lattice_code: (B, 6); lattice: (B, 3, 3) A; frac: (N, 3) in [0, 1); type_probs: (N, K); type_logits: (N, K)
    (masked). Differentiable with respect to x_t when computed under guidance.
    """

    lattice_code: torch.Tensor
    lattice: torch.Tensor
    frac: torch.Tensor
    type_probs: torch.Tensor
    type_logits: torch.Tensor


@dataclass(frozen=True)
class StepInfo:
    """One reverse step t -> s. ``index`` counts from 0; ``state`` is x_s after the step (before hooks)."""

    index: int
    t: int
    s: int
    x0: CleanEstimate
    state: NoisyCrystal
    model: DiffusionModel
    generator: torch.Generator

    def renoise_frac(self, frac0: torch.Tensor) -> torch.Tensor:
        """Clean fractional coordinates (M, 3) noised to level s (for inpainting)."""
        s = torch.full((frac0.shape[0],), self.s, dtype=torch.long)
        return self.model.frac_process.marginal(frac0, s, torch.randn(frac0.shape, generator=self.generator))

    def renoise_types(self, onehot0: torch.Tensor) -> torch.Tensor:
        """Clean one-hot types (M, K) as a type state at level s (for inpainting): the forward marginal of
        a continuous process (scaled as in training); with masked types, simply revealed atoms, which is
        exact for an absorbing process (a revealed type never changes)."""
        s = torch.full((onehot0.shape[0],), self.s, dtype=torch.long)
        return self.model.type_process.known(onehot0.argmax(-1), s, self.generator)

    def renoise_lattice_code(self, code0: torch.Tensor) -> torch.Tensor:
        """Clean lattice codes (M, 6) noised to level s (for inpainting)."""
        s = torch.full((code0.shape[0],), self.s, dtype=torch.long)
        return self.model.lattice_process.marginal(code0, s, torch.randn(code0.shape, generator=self.generator))


class StepHook(Protocol):
    def __call__(self, state: NoisyCrystal, info: StepInfo) -> NoisyCrystal: ...


_FIELDS = ("lattice", "frac", "types")


@dataclass(frozen=True)
class GuidanceSettings:
    """How the sampler applies a guidance loss (universal guidance, Bansal et al.; on crystals as in
    MatterGen's finetuning-free guidance). A ``Guidance`` carries them as ``settings``; one without gets
    ``legacy(scale)``.

    scale: forward-guidance strength k. Forward guidance differentiates the loss of x0(x_t) through the
    denoiser and shifts each field's prediction in classifier-guidance form: lattice eps' = eps + k
    sqrt(1 - abar_t) g, F score' = score - k g (true-score units), type logits' = logits - k g.
    schedule: the step weight w of k and of backward_lr along the reverse process, mean 1 over t in [0, T]:
    "constant" 1, "increasing" 2 (1 - t / T) (stronger as the crystal forms), "decreasing" 2 t / T.
    every: guide only every k-th reverse step (index % every == 0); other steps are unguided and cost
    nothing extra.
    grad_norm: per crystal and per field, "none", "clip" (rescale a gradient whose norm exceeds
    grad_clip to grad_clip) or "normalize" (unit norm, so k is a step length); applied to the forward
    gradient and to each backward step.
    backward_steps, backward_lr: backward guidance; m plain gradient steps of length w * backward_lr on the
    clean estimate itself (lattice code, F; types as they are), whose result replaces x0 in the update
    (the predictions are shifted so that they imply the corrected x0: eps from x0 for the lattice, the
    Tweedie relation x0 = x_t + sigma^2 score for F). 0 = off.
    recurrence: self-recurrence K; each guided reverse step t -> s is taken K times, re-noising x_s back
    to level t in between (lattice q(x_t | x_s), F x_s + sqrt(sigma_t^2 - sigma_s^2) z, continuous types
    like the lattice; masked types are revealed in the last repetition only, so atoms are revealed once
    per step, as without guidance). Steps without guidance are taken once. Cost: about K network calls
    per guided step, plus one backward pass through the network each with forward guidance (scale != 0);
    backward guidance differentiates only the loss.
    fields: which fields guidance moves: "lattice", "frac", "types". Default lattice and F: with the
    masked type process, types follow the chemical system and the reveal clock.
    """

    scale: float = 1.0
    schedule: str = "constant"
    every: int = 1
    grad_norm: str = "none"
    grad_clip: float = 1.0
    backward_steps: int = 0
    backward_lr: float = 0.1
    recurrence: int = 1
    fields: tuple[str, ...] = ("lattice", "frac")

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "increasing", "decreasing"):
            raise ValueError(f"schedule must be constant, increasing or decreasing, got {self.schedule!r}")
        if self.grad_norm not in ("none", "clip", "normalize"):
            raise ValueError(f"grad_norm must be none, clip or normalize, got {self.grad_norm!r}")
        if self.every < 1 or self.recurrence < 1 or self.backward_steps < 0:
            raise ValueError("every and recurrence must be >= 1 and backward_steps >= 0")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")
        unknown = set(self.fields) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown guidance fields {sorted(unknown)}; choose from {_FIELDS}")

    @classmethod
    def legacy(cls, scale: float) -> "GuidanceSettings":
        """A bare ``Guidance`` (scale and loss only): forward guidance on every field, every step."""
        return cls(scale=float(scale), fields=_FIELDS)

    def weight(self, index: int, t: int, T: int) -> float:
        """Schedule weight w of reverse step ``index`` from training step t (0 = unguided step)."""
        if index % self.every:
            return 0.0
        if self.schedule == "increasing":
            return 2.0 * (1.0 - t / T)
        if self.schedule == "decreasing":
            return 2.0 * t / T
        return 1.0

    def normalise(self, g: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        """Per-crystal gradient normalisation of rows g (R, D) belonging to crystals ``index`` (R,)."""
        if self.grad_norm == "none":
            return g
        norm = torch.zeros(n, dtype=g.dtype).index_add_(0, index, (g**2).sum(-1)).sqrt()[index].unsqueeze(-1)
        if self.grad_norm == "normalize":
            return g / norm.clamp_min(1e-12)
        return g * (self.grad_clip / norm.clamp_min(1e-12)).clamp(max=1.0)


class Guidance(Protocol):
    """A differentiable loss of the clean estimate. Optionally a ``settings: GuidanceSettings`` attribute
    (backward steps, recurrence, schedules, normalisation, fields); without one, ``scale`` and forward
    guidance on every field (``GuidanceSettings.legacy``)."""

    scale: float

    def loss(self, x0: CleanEstimate, state: NoisyCrystal) -> torch.Tensor:
        """(B,) differentiable loss of the clean estimate (lower is better)."""
        ...


def guidance_settings(guidance: Guidance) -> GuidanceSettings:
    settings = getattr(guidance, "settings", None)
    return settings if isinstance(settings, GuidanceSettings) else GuidanceSettings.legacy(guidance.scale)


class Sampler:
    """Reverse diffusion with a ``DiffusionModel``'s processes and any ``Backbone`` (default: its network)."""

    def __init__(self, *, model: DiffusionModel, config: SamplerConfig, backbone: Backbone | None = None) -> None:
        if not 1 <= config.num_steps <= model.config.num_steps:
            raise ValueError(f"num_steps must be in 1..{model.config.num_steps}, got {config.num_steps}")
        if not config.type_reveal_power > 0:
            raise ValueError(f"type_reveal_power must be > 0, got {config.type_reveal_power}")
        if not 0.0 <= config.type_resample <= 1.0:
            raise ValueError(f"type_resample must be a probability in [0, 1], got {config.type_resample}")
        self.model, self.config = model, config
        self.backbone: Backbone = backbone if backbone is not None else model.net
        T = model.config.num_steps
        ts = torch.linspace(T, 1, config.num_steps).round().long().unique_consecutive()
        self.timesteps = ts.tolist() + [0]

    @property
    def _uses_budget(self) -> bool:
        return self.config.element_budget and not self.model.type_process.continuous

    def _resamples_at(self, t: int) -> bool:
        """Whether the reverse step from t re-masks and redraws revealed atoms (SamplerConfig.type_resample)."""
        c = self.config
        return (c.type_resample > 0 and not self.model.type_process.continuous
                and c.type_resample_t_min <= t <= c.type_resample_t_max)

    @property
    def takes_element_count(self) -> bool:
        """Whether each crystal gets a number of distinct elements (drawn or given): the network is
        conditioned on it, or element_budget enforces it."""
        return self.model.config.n_elements_condition > 0 or self._uses_budget

    # -- estimates ---------------------------------------------------------------------------
    def clean_estimate(
        self, state: NoisyCrystal, pred: Prediction, type_mask: torch.Tensor | None
    ) -> CleanEstimate:
        m = self.model
        t_atom = state.t[state.batch]
        code0 = m.lattice_process.x0_from_eps(state.lattice_code, state.t, pred.lattice_eps)
        c = self.config.lattice_clip
        code0 = code0.clamp(-c, c)
        sigma = m.frac_process.sigma(t_atom).unsqueeze(-1)
        score = pred.frac_score * m.frac_process.score_norm(t_atom).sqrt().unsqueeze(-1)
        # Tweedie on the torus (exact for small sigma): x0 ~ x_t + sigma^2 * score.
        frac0 = (state.frac + sigma**2 * score) % 1.0
        logits = pred.type_logits
        if type_mask is not None:
            logits = logits.masked_fill(~type_mask, float("-inf"))
        probs = m.type_process.clean_probs(state.types, torch.softmax(logits, -1))
        return CleanEstimate(
            lattice_code=code0,
            lattice=m.coder.decode(code0, state.n_atoms),
            frac=frac0,
            type_probs=probs,
            type_logits=logits,
        )

    def _predict(
        self, state: NoisyCrystal, type_mask: torch.Tensor | None, guidance: Guidance | None, weight: float = 1.0
    ) -> tuple[Prediction, CleanEstimate]:
        """Backbone prediction and clean estimate, with guidance of schedule weight ``weight`` applied."""
        settings = guidance_settings(guidance) if guidance is not None else None
        k = settings.scale * weight if settings is not None else 0.0
        backward = settings is not None and settings.backward_steps > 0 and weight > 0
        if guidance is None or (k == 0.0 and not backward):
            with torch.no_grad():
                pred = self.backbone.predict(state)
                return pred, self.clean_estimate(state, pred, type_mask)
        assert settings is not None
        if k != 0.0:
            pred = self._forward_guided(state, type_mask, guidance, settings, k)
        else:
            with torch.no_grad():
                pred = self.backbone.predict(state)
        if backward:
            pred = self._backward_guided(state, pred, type_mask, guidance, settings, settings.backward_lr * weight)
        with torch.no_grad():
            return pred, self.clean_estimate(state, pred, type_mask)

    def _forward_guided(
        self, state: NoisyCrystal, type_mask: torch.Tensor | None, guidance: Guidance, settings: GuidanceSettings,
        k: float,
    ) -> Prediction:
        m = self.model
        code = state.lattice_code.detach().requires_grad_(True)
        frac = state.frac.detach().requires_grad_(True)
        types = state.types.detach().requires_grad_(True)
        st = replace(state, lattice_code=code, frac=frac, types=types)
        with torch.enable_grad():
            pred = self.backbone.predict(st)
            if not m.type_process.continuous:
                # A discrete state has no gradient: differentiate with respect to the clean-type logits.
                types = pred.type_logits.detach().requires_grad_(True)
                pred = replace(pred, type_logits=types)
            x0 = self.clean_estimate(st, pred, type_mask)
            loss = guidance.loss(x0, st).sum()
            g_code, g_frac, g_types = torch.autograd.grad(loss, [code, frac, types], allow_unused=True)
        B = state.n_atoms.shape[0]
        t_atom = state.t[state.batch]
        # Classifier-guidance form with log p = -loss: eps' = eps + k sqrt(1 - abar) grad loss;
        # score' = score - k grad loss (converted to the normalised-score units of the backbone).
        lat_eps, frac_score, type_logits = pred.lattice_eps.detach(), pred.frac_score.detach(), pred.type_logits.detach()
        if g_code is not None and "lattice" in settings.fields:
            g_code = settings.normalise(g_code, torch.arange(B), B)
            lat_eps = lat_eps + k * (1 - m.lattice_process.abar(state.t)).sqrt().unsqueeze(-1) * g_code
        if g_frac is not None and "frac" in settings.fields:
            g_frac = settings.normalise(g_frac, state.batch, B)
            frac_score = frac_score - k * g_frac / m.frac_process.score_norm(t_atom).sqrt().unsqueeze(-1)
        if g_types is not None and "types" in settings.fields:
            # Types are predicted as x0 logits; push the clean estimate down the gradient instead.
            type_logits = type_logits - k * settings.normalise(g_types, state.batch, B)
        return Prediction(lattice_eps=lat_eps, frac_score=frac_score, type_logits=type_logits)

    def _backward_guided(
        self, state: NoisyCrystal, pred: Prediction, type_mask: torch.Tensor | None, guidance: Guidance,
        settings: GuidanceSettings, lr: float,
    ) -> Prediction:
        """Backward guidance: gradient steps on the clean estimate (lattice code, F), then the predictions
        that imply the corrected estimate."""
        m = self.model
        B = state.n_atoms.shape[0]
        with torch.no_grad():
            x0 = self.clean_estimate(state, pred, type_mask)
        code, frac = x0.lattice_code.clone(), x0.frac.clone()
        probs, logits = x0.type_probs.detach(), x0.type_logits.detach()
        for _ in range(settings.backward_steps):
            c = code.detach().requires_grad_(True)
            f = frac.detach().requires_grad_(True)
            with torch.enable_grad():
                est = CleanEstimate(lattice_code=c, lattice=m.coder.decode(c, state.n_atoms), frac=f,
                                    type_probs=probs, type_logits=logits)
                g_c, g_f = torch.autograd.grad(guidance.loss(est, state).sum(), [c, f], allow_unused=True)
            if g_c is not None and "lattice" in settings.fields:
                code = code - lr * settings.normalise(g_c, torch.arange(B), B)
            if g_f is not None and "frac" in settings.fields:
                frac = frac - lr * settings.normalise(g_f, state.batch, B)
        t_atom = state.t[state.batch]
        lat_eps = m.lattice_process.eps_from_x0(state.lattice_code, state.t, code)
        sigma2 = m.frac_process.sigma(t_atom).unsqueeze(-1) ** 2
        frac_score = pred.frac_score + (frac - x0.frac) / (sigma2 * m.frac_process.score_norm(t_atom).sqrt().unsqueeze(-1))
        return replace(pred, lattice_eps=lat_eps.detach(), frac_score=frac_score.detach())

    def _renoise(self, new: NoisyCrystal, before: NoisyCrystal, gen: torch.Generator) -> NoisyCrystal:
        """Self-recurrence: x_s (``new``) back to level t of ``before`` (forward process from s to t)."""
        m = self.model
        t, s = before.t, new.t
        B, N = t.shape[0], new.frac.shape[0]
        ratio = (m.lattice_process.abar(t) / m.lattice_process.abar(s)).unsqueeze(-1)
        code = ratio.sqrt() * new.lattice_code + (1 - ratio).sqrt() * torch.randn((B, 6), generator=gen)
        t_atom, s_atom = t[new.batch], s[new.batch]
        std = (m.frac_process.sigma(t_atom) ** 2 - m.frac_process.sigma(s_atom) ** 2).clamp_min(0).sqrt().unsqueeze(-1)
        frac = (new.frac + std * torch.randn((N, 3), generator=gen)) % 1.0
        types = before.types
        if m.type_process.continuous:
            r = ratio[new.batch]
            types = r.sqrt() * new.types + (1 - r).sqrt() * torch.randn(new.types.shape, generator=gen)
        return replace(new, lattice_code=code, frac=frac, types=types, t=t)

    # -- sampling ------------------------------------------------------------------------------
    def _element_set_mask(
        self, probs: torch.Tensor, state: NoisyCrystal, mask: torch.Tensor | None, gen: torch.Generator
    ) -> torch.Tensor:
        """(N, K) mask allowing, per crystal, a drawn element set (see SamplerConfig.commit_elements_at)."""
        B, K = state.n_atoms.shape[0], probs.shape[1]
        mean = torch.zeros(B, K).index_add_(0, state.batch, probs.detach()) / state.n_atoms.unsqueeze(-1)
        k = self._draw_n_elements(state, mask, gen)  # never more elements than the user allowed
        if mask is not None:
            mean = mean * (torch.zeros(B, K).index_add_(0, state.batch, mask.float()) > 0)
        gumbel = -torch.log(-torch.log(torch.rand(B, K, generator=gen).clamp(1e-12, 1 - 1e-12)))
        keys = torch.log(mean.clamp_min(1e-30)) + gumbel
        order = keys.argsort(-1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(K).expand(B, K))
        keep = (ranks < k.unsqueeze(-1)) & (mean > 0)
        new = keep[state.batch]
        if mask is not None:
            new = new & mask
        return new

    def _draw_n_elements(
        self, state: NoisyCrystal, mask: torch.Tensor | None, gen: torch.Generator
    ) -> torch.Tensor:
        """(B,) long number of distinct elements per crystal, drawn from commit_n_elements_probs and capped
        by the crystal's atom count and by the elements its type mask allows."""
        B = state.n_atoms.shape[0]
        probs = torch.tensor(self.config.commit_n_elements_probs, dtype=torch.float64)
        k = torch.multinomial(probs, B, replacement=True, generator=gen) + 1
        return self._cap_n_elements(k, state, mask)

    @staticmethod
    def _cap_n_elements(k: torch.Tensor, state: NoisyCrystal, mask: torch.Tensor | None) -> torch.Tensor:
        """(B,) element counts capped by each crystal's atoms and by the elements its type mask allows."""
        if k.shape != state.n_atoms.shape or bool((k < 1).any()):
            raise ValueError(f"n_elements must be one count >= 1 per crystal, got {k.tolist()}")
        k = torch.minimum(k, state.n_atoms)
        if mask is not None:
            allowed = torch.zeros(k.shape[0], mask.shape[1]).index_add_(0, state.batch, mask.float()) > 0
            k = torch.minimum(k, allowed.sum(-1))
        return k

    def _type_clock(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) long timesteps -> the type process's time: t itself on the trained schedule, else the float
        T * (t / T)^p (SamplerConfig.type_reveal_power), which MaskedTypes.mask_prob reads as m = (t / T)^p."""
        p = self.config.type_reveal_power
        if p == 1.0 or self.model.type_process.continuous:
            return t
        T = self.model.config.num_steps
        return T * (t.double() / T) ** p

    def draw_n_atoms(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n,) atom counts from the training prior."""
        prior = torch.tensor(self.model.n_atoms_prior, dtype=torch.float64)
        return torch.multinomial(prior, n, replacement=True, generator=generator) + 1

    def initial_state(self, n_atoms: torch.Tensor, generator: torch.Generator) -> NoisyCrystal:
        m = self.model
        B, N = int(n_atoms.shape[0]), int(n_atoms.sum())
        T = self.timesteps[0]
        lattice_code = m.lattice_process.prior((B, 6), generator)
        frac = m.frac_process.prior((N, 3), generator)
        return NoisyCrystal(
            lattice_code=lattice_code,
            frac=frac,
            types=m.type_process.prior(N, generator),
            batch=batch_index(n_atoms),
            n_atoms=n_atoms,
            t=torch.full((B,), T, dtype=torch.long),
        )

    def iter_steps(
        self,
        *,
        n_atoms: torch.Tensor,
        seed: int,
        type_mask: torch.Tensor | None = None,
        hooks: Sequence[StepHook] = (),
        guidance: Guidance | None = None,
        initial: NoisyCrystal | None = None,
        n_elements: torch.Tensor | None = None,
    ) -> Iterator[StepInfo]:
        """Yield a StepInfo after every reverse step; the last one has s = 0 and the clean crystal.

        n_atoms: (B,) long. type_mask: (K,) bool of allowed vocabulary indices (or (N, K)). n_elements:
        (B,) long distinct elements per crystal, for a model conditioned on it or with element_budget
        (None: drawn from commit_n_elements_probs); capped by atom count and type mask.
        """
        m, c = self.model, self.config
        gen = torch.Generator().manual_seed(int(seed))
        state = initial if initial is not None else self.initial_state(n_atoms, gen)
        N = state.frac.shape[0]
        mask = None
        if type_mask is not None:
            mask = type_mask.expand(N, m.num_types) if type_mask.ndim == 1 else type_mask
            if not bool(mask.any(-1).all()):
                raise ValueError("type_mask allows no element for some atom")
        B = state.n_atoms.shape[0]
        committed = False
        budget = None
        if n_elements is not None and not self.takes_element_count:
            raise ValueError("n_elements needs a model trained with n_elements_condition or element_budget = true")
        if self.takes_element_count:
            # Unconditioned models without a budget draw nothing here, so their recorded samples stand.
            k = self._draw_n_elements(state, mask, gen) if n_elements is None else self._cap_n_elements(
                n_elements.to(torch.long), state, mask)
            if m.config.n_elements_condition > 0:
                state = replace(state, n_elements=k)
            if self._uses_budget:
                budget = k
        settings = guidance_settings(guidance) if guidance is not None else None
        schedule = self.timesteps
        if initial is not None:
            # Start part-way (reconstruction, SDEdit-style edits): from the initial state's step down.
            t0 = int(initial.t[0])
            schedule = [t0] + [ts for ts in self.timesteps if ts < t0]
        for i, (t, s) in enumerate(zip(schedule[:-1], schedule[1:])):
            state = replace(state, t=torch.full((B,), t, dtype=torch.long))
            t_vec, s_vec = state.t, torch.full((B,), s, dtype=torch.long)
            t_atom, s_atom = t_vec[state.batch], s_vec[state.batch]
            weight = settings.weight(i, t, m.config.num_steps) if settings is not None else 0.0
            for _ in range(c.corrector_steps):
                pred, _ = self._predict(state, mask, guidance, weight)
                score = pred.frac_score * m.frac_process.score_norm(t_atom).sqrt().unsqueeze(-1)
                frac = m.frac_process.corrector_step(state.frac, score, t_atom, c.step_lr, torch.randn((N, 3), generator=gen))
                state = replace(state, frac=frac)
            resampled = None
            if self._resamples_at(t):
                types, resampled = m.type_process.remask(state.types, c.type_resample, gen, batch=state.batch)
                state = replace(state, types=types)
            before = state
            repeats = settings.recurrence if settings is not None and weight > 0 else 1
            for rep in range(repeats):
                pred, x0 = self._predict(state, mask, guidance, weight)
                if c.commit_elements_at and not committed and t <= c.commit_elements_at:
                    committed = True
                    mask = self._element_set_mask(x0.type_probs, state, mask, gen)
                    x0 = self.clean_estimate(state, pred, mask)
                score = pred.frac_score * m.frac_process.score_norm(t_atom).sqrt().unsqueeze(-1)
                with torch.no_grad():
                    # Draw order (lattice, frac, types) fixes the samples of a recorded (checkpoint, seed).
                    lattice_code = m.lattice_process.posterior_step(
                        state.lattice_code, x0.lattice_code, t_vec, s_vec, torch.randn((B, 6), generator=gen)
                    )
                    frac = m.frac_process.predictor_step(state.frac, score, t_atom, s_atom, torch.randn((N, 3), generator=gen))
                    last = rep == repeats - 1
                    if not last and not m.type_process.continuous:
                        # Masked types return to their pre-step state before the repeat: skip the draw.
                        types = state.types
                    elif budget is None:
                        types = m.type_process.reverse_step(
                            state.types, x0.type_probs, self._type_clock(t_atom),
                            self._type_clock(s_atom), gen, force=resampled,
                        )
                    else:
                        assert isinstance(m.type_process, MaskedTypes)
                        types = m.type_process.reverse_step_within_budget(
                            state.types, x0.type_probs, self._type_clock(t_atom), self._type_clock(s_atom), gen,
                            batch=state.batch, n_elements=budget, force=resampled,
                        )
                    new = NoisyCrystal(
                        lattice_code=lattice_code,
                        frac=frac,
                        types=types,
                        batch=state.batch,
                        n_atoms=state.n_atoms,
                        t=s_vec,
                        n_elements=state.n_elements,
                    )
                info = StepInfo(index=i, t=t, s=s, x0=x0, state=new, model=m, generator=gen)
                # Hooks see every repetition of a recurrent step (an inpainted x_s is what gets re-noised).
                for hook in hooks:
                    new = hook(new, info)
                if rep < repeats - 1:
                    with torch.no_grad():
                        state = self._renoise(new, before, gen)
            state = new
            yield replace(info, state=state)

    def noised(self, batch: CrystalBatch, t: int, generator: torch.Generator) -> NoisyCrystal:
        """A clean batch corrupted to training step t by the forward processes (all fields)."""
        m = self.model
        B, N = batch.num_crystals, batch.frac.shape[0]
        t_vec = torch.full((B,), int(t), dtype=torch.long)
        t_atom = t_vec[batch.batch]
        code = m.lattice_process.marginal(m.coder.encode(batch.lattice, batch.n_atoms), t_vec, torch.randn((B, 6), generator=generator))
        frac = m.frac_process.marginal(batch.frac, t_atom, torch.randn((N, 3), generator=generator))
        return NoisyCrystal(
            lattice_code=code,
            frac=frac,
            types=m.type_process.noisy(batch.types, t_atom, generator),
            batch=batch.batch,
            n_atoms=batch.n_atoms,
            t=t_vec,
        )

    def reconstruct(self, batch: CrystalBatch, *, t: int, seed: int) -> CrystalBatch:
        """Noise ``batch`` to step t, then run the reverse process from there (reconstruction test). A
        model conditioned on the element count is given the true one, as it is given the atom count."""
        gen = torch.Generator().manual_seed(int(seed))
        initial = self.noised(batch, t, gen)
        last = None
        for last in self.iter_steps(n_atoms=batch.n_atoms, seed=seed + 1, initial=initial,
                                    n_elements=batch.n_elements if self.takes_element_count else None):
            pass
        assert last is not None
        return self.decode(last.state)

    def sample(
        self,
        *,
        n_atoms: torch.Tensor,
        seed: int,
        type_mask: torch.Tensor | None = None,
        hooks: Sequence[StepHook] = (),
        guidance: Guidance | None = None,
        n_elements: torch.Tensor | None = None,
    ) -> CrystalBatch:
        """Run the reverse process to the end and decode: lattice (B, 3, 3) A, frac, type indices."""
        last = None
        for last in self.iter_steps(n_atoms=n_atoms, seed=seed, type_mask=type_mask, hooks=hooks, guidance=guidance,
                                    n_elements=n_elements):
            pass
        assert last is not None
        return self.decode(last.state)

    def decode(self, state: NoisyCrystal) -> CrystalBatch:
        """Final (s = 0) state -> CrystalBatch. At s = 0 the type field equals the clean estimate (masked
        probabilities, or what a hook wrote; with masked types every atom is revealed), so its argmax is
        the atom type."""
        return CrystalBatch(
            lattice=self.model.coder.decode(state.lattice_code, state.n_atoms),
            frac=state.frac % 1.0,
            types=state.types[:, : self.model.num_types].argmax(-1),
            batch=state.batch,
            n_atoms=state.n_atoms,
        )


def can_fix_n_elements(model: DiffusionModel) -> bool:
    """Whether a caller may ask this model for a number of distinct elements per crystal: masked types
    (element_budget enforces it) or a network conditioned on it."""
    return not model.type_process.continuous or model.config.n_elements_condition > 0


def sample_many(
    *,
    model: DiffusionModel,
    config: SamplerConfig,
    n: int,
    seed: int,
    batch_size: int = 128,
    n_atoms: int | None = None,
    allowed_types: Sequence[int] | None = None,
    n_elements: int | None = None,
    guidance: Guidance | None = None,
) -> list[CrystalBatch]:
    """Sample ``n`` crystals in batches; deterministic for (seed, n, batch_size, options).

    n_atoms: fixed atom count, or None to draw counts from the training prior. allowed_types:
    vocabulary indices the types are restricted to (None: all). n_elements: distinct elements per
    crystal (capped by its atoms and the allowed types), or None to draw it from the data's statistics.
    guidance: applied to every batch (``Guidance``; None: unguided, the same crystals as before it existed).
    An asked-for count is exact with masked types (element_budget is switched on; a conditioned network
    also knows it, so it picks elements that fit the count); a continuous-type model must be conditioned
    on it and then follows it as well as it learned to. Returns one CrystalBatch per batch.
    """
    if n_elements is not None:
        if n_elements < 1:
            raise ValueError(f"n_elements must be >= 1, got {n_elements}")
        if not can_fix_n_elements(model):
            raise ValueError("n_elements needs a masked-type or element-count-conditioned checkpoint")
        if not model.type_process.continuous:
            config = replace(config, element_budget=True)
    sampler = Sampler(model=model, config=config)
    gen = torch.Generator().manual_seed(int(seed))
    if n_atoms is None:
        counts = sampler.draw_n_atoms(n, gen)
    else:
        if n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got {n_atoms}")
        counts = torch.full((n,), int(n_atoms), dtype=torch.long)
    mask = None
    if allowed_types is not None:
        mask = torch.zeros(model.num_types, dtype=torch.bool)
        mask[list(allowed_types)] = True
    out = []
    for k, start in enumerate(range(0, n, batch_size)):
        batch_counts = counts[start : start + batch_size]
        fixed = None if n_elements is None else torch.full_like(batch_counts, int(n_elements))
        out.append(sampler.sample(n_atoms=batch_counts, seed=int(seed) * 100_003 + k, type_mask=mask, n_elements=fixed,
                                  guidance=guidance))
    return out
