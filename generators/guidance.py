"""Universal guidance: differentiable losses on the predicted clean crystal and the guidance wrapper.

The sampler (``generators.sampler``) asks a ``Guidance`` for a (B,) loss of its clean estimate x0(x_t) and
applies its gradient (forward guidance through the denoiser, backward guidance as gradient steps on x0
itself, self-recurrence; see ``GuidanceSettings``). This module supplies the losses, as in universal guidance
on MatterGen (Bansal et al.'s forward/backward/recurrence applied to crystals):

- ``VolumePerAtom``: |det L| / n in A^3 per atom.
- ``Coordination``: mean soft coordination number of B-atoms around A-atoms under periodic boundaries.
- ``CoordinationHistogram``: a soft histogram of those coordination numbers against a target distribution
  (Jensen-Shannon or 1D Wasserstein).
- ``MinDistance``: a penalty on interatomic distances below d_min.
- ``Objective``: several terms combined by a weighted p-norm.

Every term works on a ``Crystals`` view (lattice (B, 3, 3) A, frac (N, 3), soft types (N, K), batch index),
built from the sampler's clean estimate or from a finished ``CrystalBatch`` (one-hot types), so the same code
guides sampling and reports a sample's value afterwards. Element sets are vocabulary indices; atoms count as
an element softly, by their type probabilities (a revealed atom of a masked model is exactly one-hot).

Soft cutoff: a pair at distance d counts sigmoid((r_c - d) / w): 1/2 at the cutoff r_c, > 0.98 at r_c - 4w,
< 4.6e-5 beyond r_c + 10w (pairs farther than that are not enumerated). Periodic images: all lattice
translations that can bring a pair within r_c + 10w (from the cell's plane spacings), capped at
``MAX_IMAGES`` per axis so a degenerate early estimate cannot blow up memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence

import torch
import torch.nn.functional as F

from tessera.generators.crystal import CrystalBatch, full_edges
from tessera.generators.denoiser import NoisyCrystal
from tessera.generators.sampler import CleanEstimate, GuidanceSettings

# Images per axis at most (in each direction): 3 covers a reach of 2.5 plane spacings.
MAX_IMAGES = 3
# Pairs beyond cutoff + REACH_WIDTHS * softness are left out (each would count < 4.6e-5).
REACH_WIDTHS = 10.0


@dataclass(frozen=True)
class Crystals:
    """What the losses read. lattice: (B, 3, 3) A, rows are vectors; frac: (N, 3); type_probs: (N, K) soft
    element indicators; batch: (N,) crystal of each atom; n_atoms: (B,)."""

    lattice: torch.Tensor
    frac: torch.Tensor
    type_probs: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    # Neighbour searches by reach (A), shared by the terms of one objective evaluated on this view.
    pair_cache: dict[float, "Pairs"] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_estimate(cls, x0: CleanEstimate, state: NoisyCrystal) -> "Crystals":
        return cls(lattice=x0.lattice, frac=x0.frac, type_probs=x0.type_probs, batch=state.batch, n_atoms=state.n_atoms)

    @classmethod
    def from_batch(cls, batch: CrystalBatch, num_types: int) -> "Crystals":
        """A finished batch, types as one-hot (float64 if the lattice is)."""
        probs = F.one_hot(batch.types, num_types).to(batch.lattice.dtype)
        return cls(lattice=batch.lattice, frac=batch.frac, type_probs=probs, batch=batch.batch, n_atoms=batch.n_atoms)


class Term(Protocol):
    def loss(self, c: Crystals) -> torch.Tensor:
        """(B,) differentiable, >= 0, lower is better."""
        ...


# -- targets ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A target set [lo, hi] for a per-crystal value (lo == hi: a point; +-inf: one-sided).

    loss(v) = distance(v) ** power with distance(v) = max(lo - v, 0) + max(v - hi, 0) (0 inside the set).
    tolerance: how far from the set a value still meets the target (``met``), in the value's unit.
    """

    lo: float
    hi: float
    power: float = 2.0
    tolerance: float = 0.0

    def __post_init__(self) -> None:
        if not self.lo <= self.hi:
            raise ValueError(f"target needs lo <= hi, got [{self.lo}, {self.hi}]")
        if not self.power > 0:
            raise ValueError(f"target power must be > 0, got {self.power}")

    @classmethod
    def point(cls, value: float, *, power: float = 2.0, tolerance: float = 0.0) -> "Target":
        return cls(lo=value, hi=value, power=power, tolerance=tolerance)

    @classmethod
    def interval(cls, lo: float, hi: float, *, power: float = 2.0, tolerance: float = 0.0) -> "Target":
        return cls(lo=lo, hi=hi, power=power, tolerance=tolerance)

    def distance(self, v: torch.Tensor) -> torch.Tensor:
        d = torch.zeros_like(v)
        if math.isfinite(self.lo):
            d = d + torch.relu(self.lo - v)
        if math.isfinite(self.hi):
            d = d + torch.relu(v - self.hi)
        return d

    def loss(self, v: torch.Tensor) -> torch.Tensor:
        return self.distance(v) ** self.power

    def met(self, v: torch.Tensor) -> torch.Tensor:
        """(B,) bool: within tolerance of the set."""
        return self.distance(v) <= self.tolerance


def interval_distance(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Distance of each value to [lo, hi] (0 inside)."""
    return Target(lo=lo, hi=hi).distance(v)


# -- geometry --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pairs:
    """Periodic neighbour pairs within a reach: P entries (atom src, atom dst of the same crystal, one
    lattice translation), an atom and its own image at zero offset excluded. dist: (P,) A, differentiable;
    src, dst, edge_batch: (P,) long."""

    src: torch.Tensor
    dst: torch.Tensor
    edge_batch: torch.Tensor
    dist: torch.Tensor


def plane_spacings(lattice: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rows a, b, c -> (B, 3) distances between lattice planes (V / |b x c|, ...) in A."""
    vol = torch.det(lattice).abs()
    a, b, c = lattice[:, 0], lattice[:, 1], lattice[:, 2]
    areas = torch.stack([torch.linalg.cross(b, c), torch.linalg.cross(c, a), torch.linalg.cross(a, b)], 1).norm(dim=-1)
    return vol.unsqueeze(-1) / areas.clamp_min(1e-12)


def periodic_pairs(c: Crystals, reach: float) -> Pairs:
    """Every pair within ``reach`` A under periodic boundaries, distances differentiable in lattice and frac.

    The fractional difference is wrapped to [-1/2, 1/2) (the wrap is a constant shift, so gradients pass),
    then shifted by every integer offset with |k_i| <= ceil(reach / h_i + 1/2) (h: plane spacings, batch
    minimum, capped at MAX_IMAGES). The search runs without gradients; only the pairs found within reach
    are recomputed with them, so autograd memory scales with the neighbours, not with pairs x images. A search
    is kept on the view (``Crystals.pair_cache``) and serves every later term with a reach as short or shorter.
    """
    for (r_cached, cached) in c.pair_cache.items():
        if r_cached >= reach:
            keep = cached.dist <= reach
            return Pairs(src=cached.src[keep], dst=cached.dst[keep], edge_batch=cached.edge_batch[keep],
                         dist=cached.dist[keep])
    src, dst = full_edges(c.n_atoms)
    eb = c.batch[src]
    d = c.frac[dst] - c.frac[src]
    d = d - torch.round(d).detach()
    with torch.no_grad():
        lat = c.lattice.detach()
        h = plane_spacings(lat).amin(0) if lat.shape[0] else torch.ones(3)
        r = torch.ceil(reach / h.clamp_min(1e-6) + 0.5).clamp(max=MAX_IMAGES).long().tolist()
        offsets = torch.cartesian_prod(*[torch.arange(-k, k + 1, dtype=c.frac.dtype) for k in r])  # (M, 3)
        # |(d + o) L|^2 = dGd + 2 dGo + oGo with the metric G = L L^T: one (E, 3) x (3, M) product per
        # search instead of an (E, M, 3) Cartesian tensor.
        gram = lat @ lat.transpose(-1, -2)
        dg = torch.einsum("ek,ekl->el", d.detach(), gram[eb])
        ogo = torch.einsum("mk,bkl,ml->bm", offsets, gram, offsets)
        d2 = (dg * d.detach()).sum(-1, keepdim=True) + 2.0 * dg @ offsets.T + ogo[eb]
        self_pair = (src == dst).unsqueeze(1) & (offsets.abs().sum(-1) == 0).unsqueeze(0)
        # The margin absorbs the rounding of the expanded form; kept pairs are recomputed exactly below.
        keep = (d2 <= reach**2 * (1 + 1e-4) + 1e-6) & ~self_pair
        e, k = keep.nonzero(as_tuple=True)
    vec = torch.einsum("pk,pkl->pl", d[e] + offsets[k], c.lattice[eb[e]])
    # clamp before sqrt: coincident atoms get a finite (zero) gradient instead of NaN.
    dist = (vec**2).sum(-1).clamp_min(1e-12).sqrt()
    pairs = Pairs(src=src[e], dst=dst[e], edge_batch=eb[e], dist=dist)
    c.pair_cache[reach] = pairs
    return pairs


def _indicator(probs: torch.Tensor, elements: Sequence[int]) -> torch.Tensor:
    """(N,) soft membership of each atom in an element set (sum of its type probabilities)."""
    return probs[:, list(elements)].sum(-1)


def _per_crystal(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, index, values)


# -- terms -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VolumePerAtom:
    """Cell volume per atom |det L| / n (A^3 per atom) against ``target``."""

    target: Target

    def value(self, c: Crystals) -> torch.Tensor:
        return torch.det(c.lattice).abs() / c.n_atoms.to(c.lattice.dtype)

    def loss(self, c: Crystals) -> torch.Tensor:
        return self.target.loss(self.value(c))


@dataclass(frozen=True)
class Coordination:
    """Soft coordination number of ``neighbour``-atoms around ``center``-atoms (vocabulary indices).

    Per atom i: CN_i = sum_{j != i or image != 0} p_B(j) sigmoid((cutoff - d_ij) / softness), over periodic
    images; per crystal the p_A-weighted mean over atoms (p_A, p_B: soft membership from type probabilities).
    A crystal without A atoms has value 0 and no gradient through coordinates. cutoff, softness in A.
    """

    center: tuple[int, ...]
    neighbour: tuple[int, ...]
    cutoff: float
    target: Target | None = None
    softness: float = 0.1

    def __post_init__(self) -> None:
        if not (self.cutoff > 0 and self.softness > 0):
            raise ValueError(f"cutoff and softness must be > 0, got {self.cutoff}, {self.softness}")

    def per_atom(self, c: Crystals, pairs: Pairs | None = None) -> torch.Tensor:
        """(N,) soft count of neighbour atoms around each atom (whatever its own element)."""
        pairs = pairs if pairs is not None else periodic_pairs(c, self.cutoff + REACH_WIDTHS * self.softness)
        s = torch.sigmoid((self.cutoff - pairs.dist) / self.softness)  # (P,)
        w = _indicator(c.type_probs, self.neighbour)[pairs.dst]
        return _per_crystal(s * w, pairs.src, c.frac.shape[0])

    def center_weights(self, c: Crystals) -> torch.Tensor:
        return _indicator(c.type_probs, self.center)

    def value(self, c: Crystals) -> torch.Tensor:
        """(B,) mean coordination number of the crystal's A atoms."""
        w = self.center_weights(c)
        B = c.n_atoms.shape[0]
        num = _per_crystal(w * self.per_atom(c), c.batch, B)
        return num / _per_crystal(w, c.batch, B).clamp_min(1e-6)

    def loss(self, c: Crystals) -> torch.Tensor:
        if self.target is None:
            raise ValueError("Coordination needs a target to be a loss")
        return self.target.loss(self.value(c))


@dataclass(frozen=True)
class CoordinationHistogram:
    """Distribution of A-centred coordination numbers against ``target_probs`` (P(CN = 0), P(CN = 1), ...).

    Each A atom spreads its soft CN over the integer bins 0..M (M = len(target_probs) - 1) with a Gaussian
    kernel of width ``bin_width`` (normalised per atom; larger CNs land in the last bin); the crystal's
    histogram is the p_A-weighted average. metric: "js" (Jensen-Shannon divergence, nats, <= ln 2) or
    "wasserstein" (1D earth mover's distance over the integer bins, in coordination units).
    """

    center: tuple[int, ...]
    neighbour: tuple[int, ...]
    cutoff: float
    target_probs: tuple[float, ...]
    metric: Literal["js", "wasserstein"] = "js"
    softness: float = 0.1
    bin_width: float = 0.5

    def __post_init__(self) -> None:
        if len(self.target_probs) < 2 or min(self.target_probs) < 0 or not sum(self.target_probs) > 0:
            raise ValueError("target_probs must be >= 2 non-negative numbers with a positive sum")
        if self.metric not in ("js", "wasserstein"):
            raise ValueError(f"metric must be 'js' or 'wasserstein', got {self.metric!r}")

    def _coordination(self) -> Coordination:
        return Coordination(center=self.center, neighbour=self.neighbour, cutoff=self.cutoff, softness=self.softness)

    def value(self, c: Crystals) -> torch.Tensor:
        """(B, M + 1) soft histogram per crystal (rows sum to 1 where the crystal has A atoms)."""
        coord = self._coordination()
        cn = coord.per_atom(c)
        bins = torch.arange(len(self.target_probs), dtype=cn.dtype)
        k = torch.softmax(-((cn.unsqueeze(-1) - bins) ** 2) / (2 * self.bin_width**2), -1)  # (N, M + 1)
        w = coord.center_weights(c)
        B = c.n_atoms.shape[0]
        hist = torch.zeros(B, bins.shape[0], dtype=cn.dtype).index_add(0, c.batch, w.unsqueeze(-1) * k)
        return hist / _per_crystal(w, c.batch, B).clamp_min(1e-6).unsqueeze(-1)

    def loss(self, c: Crystals) -> torch.Tensor:
        q = self.value(c)
        p = torch.tensor(self.target_probs, dtype=q.dtype)
        p = (p / p.sum()).expand_as(q)
        if self.metric == "wasserstein":
            return (q.cumsum(-1) - p.cumsum(-1)).abs().sum(-1)
        m = 0.5 * (p + q)
        eps = 1e-12
        kl = lambda a: (a * (torch.log(a + eps) - torch.log(m + eps))).sum(-1)  # noqa: E731
        return 0.5 * kl(p) + 0.5 * kl(q)


@dataclass(frozen=True)
class MinDistance:
    """Penalty sum over atom pairs (each unordered pair once, all images) of max(d_min - d, 0)^2 (A^2)."""

    d_min: float

    def value(self, c: Crystals) -> torch.Tensor:
        """(B,) shortest periodic interatomic distance, or inf where none is below d_min."""
        pairs = periodic_pairs(c, self.d_min)
        out = torch.full((c.n_atoms.shape[0],), float("inf"), dtype=c.lattice.dtype)
        return out.scatter_reduce(0, pairs.edge_batch, pairs.dist, reduce="amin")

    def loss(self, c: Crystals) -> torch.Tensor:
        pairs = periodic_pairs(c, self.d_min)
        pen = torch.relu(self.d_min - pairs.dist) ** 2
        return 0.5 * _per_crystal(pen, pairs.edge_batch, c.n_atoms.shape[0])


@dataclass(frozen=True)
class RadiusOverlap:
    """Element-aware overlap penalty: sum over atom pairs of max(f (r_i + r_j) - d_ij, 0)^2 (A^2), halved
    (the pair list holds both directions), with r_i = sum_k p_ik radii_k the type-weighted covalent radius.

    radii: (K,) A per vocabulary index (the caller's table, e.g. Cordero covalent radii); factor f: the
    fraction of the radius sum below which a pair counts as overlapping. The guard beside coordination terms
    (tools/steering.py): those terms pull neighbours inside a cutoff and, unopposed, pull atoms onto each other.
    """

    radii: tuple[float, ...]
    factor: float = 0.7

    def __post_init__(self) -> None:
        if not self.radii or min(self.radii) <= 0:
            raise ValueError("radii must be positive, one per vocabulary entry")
        if not 0 < self.factor <= 2:
            raise ValueError(f"factor must be in (0, 2], got {self.factor}")

    def _pairs(self, c: Crystals) -> tuple[Pairs, torch.Tensor]:
        radii = torch.tensor(self.radii, dtype=c.lattice.dtype)
        r_atom = c.type_probs.to(c.lattice.dtype) @ radii  # (N,)
        pairs = periodic_pairs(c, 2.0 * self.factor * float(max(self.radii)))
        return pairs, self.factor * (r_atom[pairs.src] + r_atom[pairs.dst])

    def value(self, c: Crystals) -> torch.Tensor:
        """(B,) smallest d_ij / (r_i + r_j) over pairs within 2 f max(radii) A (inf where none), the ratio
        tools.geometry.min_distance_ratio measures; a pair overlaps when its ratio is below f."""
        pairs, limit = self._pairs(c)
        ratio = self.factor * pairs.dist / limit.clamp_min(1e-9)
        out = torch.full((c.n_atoms.shape[0],), float("inf"), dtype=c.lattice.dtype)
        return out.scatter_reduce(0, pairs.edge_batch, ratio, reduce="amin")

    def loss(self, c: Crystals) -> torch.Tensor:
        pairs, limit = self._pairs(c)
        pen = torch.relu(limit - pairs.dist) ** 2
        return 0.5 * _per_crystal(pen, pairs.edge_batch, c.n_atoms.shape[0])


@dataclass(frozen=True)
class Objective:
    """Weighted p-norm of several terms: (sum_i w_i l_i^p)^(1/p) per crystal (p = 1: weighted sum)."""

    terms: tuple[Term, ...]
    weights: tuple[float, ...] | None = None
    p: float = 2.0

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("an objective needs at least one term")
        if self.weights is not None and len(self.weights) != len(self.terms):
            raise ValueError("one weight per term")
        if not self.p >= 1:
            raise ValueError(f"p must be >= 1, got {self.p}")

    def loss(self, c: Crystals) -> torch.Tensor:
        weights = self.weights or (1.0,) * len(self.terms)
        total = sum(w * t.loss(c).clamp_min(0) ** self.p for w, t in zip(weights, self.terms))
        if self.p == 1:
            return total
        # The tiny offset keeps the gradient finite where every term is 0.
        return (total + 1e-12) ** (1.0 / self.p)


# -- the guidance the sampler takes ----------------------------------------------------------------------
@dataclass(frozen=True)
class UniversalGuidance:
    """A ``Guidance`` for the sampler: the objective's loss on the clean estimate, with its settings
    (strength, schedule, normalisation, backward steps, recurrence; ``GuidanceSettings``)."""

    objective: Term
    settings: GuidanceSettings = field(default_factory=GuidanceSettings)

    @property
    def scale(self) -> float:
        return self.settings.scale

    def loss(self, x0: CleanEstimate, state: NoisyCrystal) -> torch.Tensor:
        return self.objective.loss(Crystals.from_estimate(x0, state))
