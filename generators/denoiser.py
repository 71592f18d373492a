"""The denoiser: an invariant periodic message-passing network in the style of DiffCSP's CSPNet.

Every crystal is a fully connected graph (self-pairs included). An edge (i -> j) sees both node
features, the invariant lattice code (the standardised log-stretch of L L^T: see ``LatticeCoder``) and
Fourier features of the wrapped fractional difference f_j - f_i. A sinusoidal time embedding is added
to the nodes. Outputs are invariant to rotations of L (the code is), to translations of F (only
differences enter) and equivariant to atom permutations (sums over edges).

The sampler reaches any network through the one-method ``Backbone`` protocol (``predict``). To plug in
a different pre-trained model (a DiffCSP or MatterGen checkpoint), write one adapter class whose
``predict`` converts a ``NoisyCrystal`` to that model's inputs (DiffCSP: lattice matrix L_t, frac
coordinates, one-hot types, batch index, its own timestep) and returns a ``Prediction`` in our
parametrisation (lattice eps in our code space, or convert its L eps through ``LatticeCoder``; score
of F; type logits or, from an eps-predicting model, x0 = (a_t - sqrt(1 - abar) eps) / sqrt(abar)); the
corruption processes of the adapter must match the checkpoint's schedules. MatterGen's atom types use an
absorbing-state (masked) D3PM like our ``MaskedTypes``: its adapter maps our mask column to MatterGen's
mask token and returns its clean-type logits unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from tessera.generators.crystal import full_edges


@dataclass(frozen=True)
class NoisyCrystal:
    """The state x_t of the reverse process for B crystals, N atoms.

    lattice_code: (B, 6) noisy standardised lattice code.
    frac: (N, 3) noisy fractional coordinates in [0, 1).
    types: (N, K) noisy continuous one-hot of the atom types, or (N, K + 1) one-hot with a mask column
    for the masked type process.
    batch: (N,) crystal index per atom; n_atoms: (B,) atoms per crystal.
    t: (B,) long timestep per crystal (1..T).
    n_elements: (B,) long number of distinct elements the crystal is to have, 0 = not given; read only by
    a network trained with that condition (ModelConfig.n_elements_condition), ignored otherwise.
    """

    lattice_code: torch.Tensor
    frac: torch.Tensor
    types: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    t: torch.Tensor
    n_elements: torch.Tensor | None = None


@dataclass(frozen=True)
class Prediction:
    """What a backbone predicts from x_t.

    lattice_eps: (B, 6) noise of the lattice code.
    frac_score: (N, 3) normalised score of F (multiply by sqrt(E|s|^2) of the step for the true score).
    type_logits: (N, K) logits of the clean atom type.
    """

    lattice_eps: torch.Tensor
    frac_score: torch.Tensor
    type_logits: torch.Tensor


@runtime_checkable
class Backbone(Protocol):
    """One required method: predict the denoising targets for a noisy crystal batch."""

    def predict(self, state: NoisyCrystal) -> Prediction: ...


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def fourier_features(d: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(E, 3) wrapped fractional differences -> (E, 6 * n_freq) sin/cos of 2 pi k d, k = 1..n_freq."""
    k = torch.arange(1, n_freq + 1, dtype=d.dtype, device=d.device)
    x = 2.0 * math.pi * d.unsqueeze(-1) * k  # (E, 3, n_freq)
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1).flatten(1)


class CSPLayer(nn.Module):
    """One message-passing layer; the node part of the edge MLP's first linear is applied per node."""

    def __init__(self, *, hidden: int, edge_in: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.src = nn.Linear(hidden, hidden, bias=False)
        self.dst = nn.Linear(hidden, hidden, bias=True)
        self.edge = nn.Linear(edge_in, hidden, bias=False)
        self.edge_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(
        self, h: torch.Tensor, edge_feat: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, deg: torch.Tensor
    ) -> torch.Tensor:
        x = self.norm(h)
        m = self.edge_out(self.src(x)[src] + self.dst(x)[dst] + self.edge(edge_feat))
        agg = torch.zeros_like(x).index_add_(0, dst, m) / deg.unsqueeze(-1)
        return h + self.node(torch.cat([x, agg], dim=-1))


class CSPNet(nn.Module):
    """Denoiser network (a ``Backbone``).

    Args: num_types K (vocabulary size), hidden width, num_layers, n_freq Fourier frequencies,
    time_dim of the time embedding, type_state_dim: width of the noisy type state (K for the continuous
    one-hot, K + 1 for the masked process, whose last column is the mask token). max_n_elements: > 0
    adds a per-crystal embedding of the target number of distinct elements (index 0 = not given, counts
    above the maximum share its row); 0 leaves the network unconditioned.
    """

    def __init__(
        self,
        *,
        num_types: int,
        hidden: int = 256,
        num_layers: int = 4,
        n_freq: int = 10,
        time_dim: int = 64,
        type_state_dim: int | None = None,
        max_n_elements: int = 0,
    ) -> None:
        super().__init__()
        self.num_types, self.n_freq, self.time_dim = num_types, n_freq, time_dim
        self.type_in = nn.Linear(type_state_dim or num_types, hidden)
        self.time_in = nn.Sequential(nn.Linear(time_dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        # Lattice code (6) enters per crystal: into nodes, and into every edge via its graph features.
        self.lat_in = nn.Linear(6, hidden)
        self.max_n_elements = max_n_elements
        self.n_elements_in: nn.Embedding | None = None
        if max_n_elements > 0:
            # Zero rows: a network warm-started from an unconditioned one predicts exactly what it did.
            self.n_elements_in = nn.Embedding(max_n_elements + 1, hidden)
            nn.init.zeros_(self.n_elements_in.weight)
        edge_in = 6 * n_freq + 6
        self.layers = nn.ModuleList([CSPLayer(hidden=hidden, edge_in=edge_in) for _ in range(num_layers)])
        self.out_norm = nn.LayerNorm(hidden)
        self.frac_out = nn.Linear(hidden, 3, bias=False)
        self.type_out = nn.Linear(hidden, num_types)
        self.lat_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 6))

    def forward(self, state: NoisyCrystal) -> Prediction:
        batch, n_atoms = state.batch, state.n_atoms
        log_n = torch.log(n_atoms.float()).unsqueeze(-1)
        g = self.time_in(torch.cat([sinusoidal_embedding(state.t, self.time_dim), log_n], dim=-1))
        g = g + self.lat_in(state.lattice_code)
        if self.n_elements_in is not None:
            k = state.n_elements if state.n_elements is not None else torch.zeros_like(n_atoms)
            g = g + self.n_elements_in(k.clamp(0, self.max_n_elements))
        h = self.type_in(state.types) + g[batch]
        src, dst = full_edges(n_atoms)
        d = state.frac[src] - state.frac[dst]
        d = d - torch.round(d)
        edge_feat = torch.cat([fourier_features(d, self.n_freq), state.lattice_code[batch[dst]]], dim=-1)
        deg = n_atoms[batch].float()
        for layer in self.layers:
            h = layer(h, edge_feat, src, dst, deg)
        h = self.out_norm(h)
        pooled = torch.zeros(n_atoms.shape[0], h.shape[1], device=h.device).index_add_(0, batch, h)
        pooled = pooled / n_atoms.float().unsqueeze(-1)
        return Prediction(
            lattice_eps=self.lat_out(pooled), frac_score=self.frac_out(h), type_logits=self.type_out(h)
        )

    def predict(self, state: NoisyCrystal) -> Prediction:
        return self(state)
