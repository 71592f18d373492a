"""SCIGEN-style motif inpainting: a StepHook that holds part of every crystal to a lattice-motif template.

The first k atoms of each crystal (k = template sites) are the motif; the others are generated freely. After
every reverse step t -> s the hook replaces the constrained part of the state x_s by the template noised to
level s (RePaint/SCIGEN inpainting; the network itself is untouched):

- motif atoms' fractional coordinates: the template sites (z = 0 for a 2D net), noised by the wrapped-normal
  marginal at s (``StepInfo.renoise_frac``);
- motif atoms' types: the motif element, as a type state at s (``renoise_types``; with masked types simply
  revealed, which is exact for an absorbing process);
- the cell. Our lattice code is not a vector of lattice entries but the standardised matrix log of the metric
  G = L L^T (``LatticeCoder``), in which the constrained and the free cell parameters mix, so there is no
  coordinate mask. The cell part is a projection instead: take the clean-lattice estimate x0(x_t) the sampler
  computed for this step and decode it to a metric; set the in-plane block to the template's (a, b, gamma for
  the bond length) and alpha = beta = 90 deg; keep its free part, the stacking period c, clamped to
  ``c_range``; encode the projected metric and noise it to level s (``renoise_lattice_code``); that code
  replaces the state's. ``c_mode`` says what "keep c" means: "volume" (default) keeps the estimate's cell
  volume, c = V / (a b sin gamma), so the density the network predicts for this N survives the change of the
  in-plane cell; "length" keeps |c| of the estimate. A 3D net (pyrochlore) fixes the whole cell.

At the last step (s = 0) the hook writes the clean template, not a noised one, so the sampled crystal has the
exact motif (up to float32 round-off of the lattice code, ~1e-5 relative). With ``release_below`` (adaptive
demasking) the coordinates and the cell are released once s < release_below * T: the network then refines
the motif with the rest of the crystal and the result is checked by the detector's tolerances instead;
types stay pinned to the end. Default: never released.

Atom counts and types: ``motif_n_atoms_prior`` restricts the model's N prior to N >= k + min_free_atoms,
``MotifInpainting.type_mask`` allows only the motif element on the motif atoms and the chosen free-atom
elements on the others (a per-atom (N, K) mask for ``Sampler.iter_steps``), and ``initial_state`` writes the
template noised to T into the start state so the first network call already sees it. ``sample_with_motif``
puts these together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from tessera.generators.crystal import CrystalBatch
from tessera.generators.denoiser import NoisyCrystal
from tessera.generators.model import DiffusionModel
from tessera.generators.motifs import MotifTemplate, default_bond_length, resolve_template
from tessera.generators.sampler import Sampler, StepInfo


def _atomic_number(element: str | int) -> int:
    from pymatgen.core import Element

    try:
        return int(element) if isinstance(element, (int, np.integer)) else int(Element(str(element)).Z)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"unknown element {element!r}") from exc


@dataclass(frozen=True)
class MotifConstraint:
    """What to hold fixed. Units: A, degrees.

    template: the net (a name, custom file path, dict or MotifTemplate; see ``motifs.resolve_template``).
    element: motif element (symbol or atomic number). bond_length: motif bond (A); None = the element's
    default (``motifs.default_bond_length``). c_range: (min, max) stacking period in A for a 2D net; None =
    (bond length, 20 A): adjacent motif layers no closer than the in-plane bond. c_mode: "volume" or
    "length" (see the module docstring). free_elements: elements allowed on the free atoms (None = any in
    the model's vocabulary). min_free_atoms: atoms beyond the motif every crystal gets at least (N prior).
    release_below: adaptive demasking, fraction of T below which coordinates and cell are released (None =
    never; the end then holds the exact template).
    """

    template: MotifTemplate
    element: int
    bond_length: float
    c_range: tuple[float, float]
    c_mode: str = "volume"
    free_elements: tuple[int, ...] | None = None
    min_free_atoms: int = 1
    release_below: float | None = None

    @classmethod
    def build(
        cls,
        *,
        lattice: str | dict | MotifTemplate,
        element: str | int,
        bond_length: float | None = None,
        c_range: tuple[float, float] | None = None,
        c_mode: str = "volume",
        free_elements: Sequence[str | int] | None = None,
        min_free_atoms: int = 1,
        release_below: float | None = None,
    ) -> "MotifConstraint":
        """Validate and resolve the options; one clear ValueError per bad option."""
        template = resolve_template(lattice)
        z = _atomic_number(element)
        d = default_bond_length(z) if bond_length is None else float(bond_length)
        if not d > 0:
            raise ValueError(f"bond_length must be > 0 A, got {bond_length}")
        lo, hi = (d, 20.0) if c_range is None else (float(c_range[0]), float(c_range[1]))
        if not 0 < lo <= hi:
            raise ValueError(f"c_range must be 0 < min <= max (A), got {c_range}")
        if c_mode not in ("volume", "length"):
            raise ValueError(f"c_mode must be 'volume' or 'length', got {c_mode!r}")
        if min_free_atoms < 0:
            raise ValueError(f"min_free_atoms must be >= 0, got {min_free_atoms}")
        if release_below is not None and not 0.0 <= release_below < 1.0:
            raise ValueError(f"release_below must be a fraction of T in [0, 1), got {release_below}")
        free = None if free_elements is None else tuple(sorted({_atomic_number(e) for e in free_elements}))
        if free is not None and not free:
            raise ValueError("free_elements is empty; give at least one element or None for any")
        return cls(template=template, element=z, bond_length=d, c_range=(lo, hi), c_mode=c_mode,
                   free_elements=free, min_free_atoms=int(min_free_atoms), release_below=release_below)

    @property
    def num_motif_atoms(self) -> int:
        return self.template.num_sites

    def clean_metric(self, c: torch.Tensor) -> torch.Tensor:
        """(B,) stacking periods (A, ignored for a 3D net) -> (B, 3, 3) float64 template metrics (A^2)."""
        t, d = self.template, self.bond_length
        if t.dims == 3:
            g = torch.as_tensor(t.metric(d), dtype=torch.float64)
            return g.expand(c.shape[0], 3, 3).clone()
        a, b, gamma = t.in_plane_cell(d)
        g = torch.zeros(c.shape[0], 3, 3, dtype=torch.float64)
        g[:, 0, 0], g[:, 1, 1] = a * a, b * b
        g[:, 0, 1] = g[:, 1, 0] = a * b * math.cos(math.radians(gamma))
        g[:, 2, 2] = c.double() ** 2
        return g

    def in_plane_area(self) -> float:
        a, b, gamma = self.template.in_plane_cell(self.bond_length)
        return a * b * math.sin(math.radians(gamma))

    def stacking_period(self, lattice: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3) lattices (A) -> (B,) c for the projection (c_mode), clamped to c_range."""
        if self.c_mode == "volume":
            c = torch.linalg.det(lattice.double()).abs() / self.in_plane_area()
        else:
            c = lattice.double()[:, 2].norm(dim=-1)
        c = torch.nan_to_num(c, nan=self.c_range[0], posinf=self.c_range[1])
        return c.clamp(*self.c_range)


def metric_to_lattice(g: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) metrics -> (B, 3, 3) lattice rows (Cholesky: a along x, b in the xy plane)."""
    return torch.linalg.cholesky(g)


def motif_n_atoms_prior(prior: Sequence[float], *, num_motif_atoms: int, min_free_atoms: int = 1,
                        max_atoms: int | None = None) -> list[float]:
    """The model's atom-count prior (index i = i + 1 atoms) restricted to num_motif_atoms + min_free_atoms <=
    N <= max_atoms (default: the prior's largest N) and renormalised; SCIGEN draws N this way. Where the
    prior has no mass left (motifs as large as the training cells), N is uniform over the allowed range."""
    lo = num_motif_atoms + min_free_atoms
    hi = len(prior) if max_atoms is None else int(max_atoms)
    if lo > hi:
        raise ValueError(f"the motif needs {num_motif_atoms} atoms + {min_free_atoms} free, more than the "
                         f"atom budget of {hi} per cell")
    p = np.zeros(max(hi, len(prior)))
    p[: len(prior)] = prior
    p[: lo - 1] = 0.0
    p[hi:] = 0.0
    if p.sum() <= 0:
        p[lo - 1 : hi] = 1.0
    return (p[:hi] / p.sum()).tolist()


MIN_VOLUME_PER_ATOM_FIXED_CELL: float = 9.0
"""A^3/atom: the densest crystals of the training pool sit near 6-10 A^3/atom (metals and light-element
compounds); more atoms than volume / 9 in a cell fixed by a 3D net (pyrochlore: about 93 A^3 for Mn) would be
overlapping atoms, not a crystal, so the N prior stops there."""


class MotifInpainting:
    """The StepHook (``hook(state, info) -> state``) holding the first k atoms of every crystal to the
    template, plus the pieces a run needs (N prior, type mask, start state). See the module docstring."""

    def __init__(self, *, model: DiffusionModel, constraint: MotifConstraint) -> None:
        if constraint.element not in model.vocab:
            raise ValueError(f"motif element Z={constraint.element} is not in the model's vocabulary")
        if constraint.free_elements is not None:
            missing = [z for z in constraint.free_elements if z not in model.vocab]
            if missing:
                raise ValueError(f"free elements {missing} (atomic numbers) are not in the model's vocabulary")
        self.model, self.constraint = model, constraint
        self.type_index = model.vocab.index(constraint.element)
        self.frac0 = torch.as_tensor(constraint.template.frac, dtype=torch.float32)

    @property
    def k(self) -> int:
        return self.constraint.num_motif_atoms

    # -- pieces of a run ---------------------------------------------------------------------------------
    def n_atoms_prior(self, max_atoms: int | None = None) -> list[float]:
        """The training prior over N restricted to room for the motif and its free atoms, and capped by the
        largest cell the constraint allows (see ``max_atoms_for_cell``)."""
        cap = self.max_atoms_for_cell()
        if cap is not None:
            max_atoms = cap if max_atoms is None else min(max_atoms, cap)
        return motif_n_atoms_prior(self.model.n_atoms_prior, num_motif_atoms=self.k,
                                   min_free_atoms=self.constraint.min_free_atoms, max_atoms=max_atoms)

    def max_atoms_for_cell(self) -> int | None:
        """The most atoms the constrained cell holds at ``MIN_VOLUME_PER_ATOM_FIXED_CELL``: a 3D net fixes
        the whole cell; a 2D net fixes the in-plane cell and caps c at ``c_range[1]``, so a one-site net
        (triangular, square: about 5-6 A^2 in plane for a 3d metal, 20 A at most along c) holds about 12 atoms,
        not the 20 the training prior may draw (which came out at 5 A^3/atom, overlapping, in 255 of 256
        triangular-Co crystals). None when the cap is above every N the prior knows."""
        t = self.constraint.template
        if t.dims == 3:
            volume = abs(float(np.linalg.det(t.lattice_matrix(self.constraint.bond_length))))
        else:
            volume = self.constraint.in_plane_area() * float(self.constraint.c_range[1])
        cap = max(self.k + self.constraint.min_free_atoms, int(volume // MIN_VOLUME_PER_ATOM_FIXED_CELL))
        return cap if cap < len(self.model.n_atoms_prior) else None

    max_atoms_for_fixed_cell = max_atoms_for_cell  # the earlier name

    def draw_n_atoms(self, n: int, generator: torch.Generator, max_atoms: int | None = None) -> torch.Tensor:
        """(n,) atom counts from ``n_atoms_prior``."""
        p = torch.tensor(self.n_atoms_prior(max_atoms), dtype=torch.float64)
        return torch.multinomial(p, n, replacement=True, generator=generator) + 1

    def motif_atoms(self, n_atoms: torch.Tensor) -> torch.Tensor:
        """(B * k,) long indices of the motif atoms (the first k of each crystal); ValueError if a crystal is
        smaller than the motif."""
        if bool((n_atoms < self.k).any()):
            raise ValueError(f"every crystal needs at least the {self.k} motif atoms, got counts {n_atoms.tolist()}")
        offsets = torch.cumsum(n_atoms, 0) - n_atoms
        return (offsets.unsqueeze(-1) + torch.arange(self.k)).flatten()

    def type_mask(self, n_atoms: torch.Tensor) -> torch.Tensor:
        """(N, K) bool per-atom mask for ``Sampler.iter_steps``: motif atoms the motif element only, free
        atoms the free elements (all when none were given)."""
        K, N = self.model.num_types, int(n_atoms.sum())
        mask = torch.ones(N, K, dtype=torch.bool)
        if self.constraint.free_elements is not None:
            mask[:] = False
            mask[:, [self.model.vocab.index(z) for z in self.constraint.free_elements]] = True
        idx = self.motif_atoms(n_atoms)
        mask[idx] = False
        mask[idx, self.type_index] = True
        return mask

    def initial_state(self, sampler: Sampler, n_atoms: torch.Tensor, generator: torch.Generator) -> NoisyCrystal:
        """The sampler's start state with the motif part written at level T (pass as ``initial``)."""
        state = sampler.initial_state(n_atoms, generator)
        T = int(state.t[0])
        x0_lattice = self.model.coder.decode(state.lattice_code, n_atoms)
        return self._write(state, s=T, x0_lattice=x0_lattice, generator=generator, full=True)

    # -- the hook ------------------------------------------------------------------------------------------
    def released(self, s: int) -> bool:
        r = self.constraint.release_below
        return r is not None and s < r * self.model.config.num_steps

    def __call__(self, state: NoisyCrystal, info: StepInfo) -> NoisyCrystal:
        return self._write(state, s=info.s, x0_lattice=info.x0.lattice, generator=info.generator,
                           full=not self.released(info.s))

    def clean_lattice_code(self, x0_lattice: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3) clean-lattice estimate -> (B, 6) code of its projection onto the template cell."""
        c = self.constraint.stacking_period(x0_lattice)
        lattice = metric_to_lattice(self.constraint.clean_metric(c))
        return self.model.coder.encode(lattice.float(), n_atoms).to(x0_lattice.dtype)

    def _write(self, state: NoisyCrystal, *, s: int, x0_lattice: torch.Tensor, generator: torch.Generator,
               full: bool) -> NoisyCrystal:
        m = self.model
        idx = self.motif_atoms(state.n_atoms)
        B = state.n_atoms.shape[0]
        s_atom = torch.full((idx.shape[0],), int(s), dtype=torch.long)
        types = state.types.clone()
        onehot = torch.zeros(idx.shape[0], dtype=torch.long) + self.type_index
        # Draw order (types, frac, lattice) is fixed so a (seed, options) run reproduces.
        types[idx] = m.type_process.known(onehot, s_atom, generator).to(types.dtype)
        if not full:
            return replace(state, types=types)
        frac0 = self.frac0.repeat(B, 1)
        frac, code0 = state.frac.clone(), self.clean_lattice_code(x0_lattice, state.n_atoms)
        if s == 0:
            # The end of sampling: the clean template, not a noised one (the renoise helpers are exact at
            # s = 0 too; this says so and does not depend on it).
            frac[idx] = frac0 % 1.0
            code = code0
        else:
            frac[idx] = m.frac_process.marginal(frac0, s_atom, torch.randn(frac0.shape, generator=generator))
            s_vec = torch.full((B,), int(s), dtype=torch.long)
            code = m.lattice_process.marginal(code0, s_vec, torch.randn(code0.shape, generator=generator))
        return replace(state, frac=frac, types=types, lattice_code=code.to(state.lattice_code.dtype))


def sample_with_motif(
    *,
    sampler: Sampler,
    constraint: MotifConstraint,
    n: int,
    seed: int,
    n_atoms: int | torch.Tensor | None = None,
    max_atoms: int | None = None,
    n_elements: int | None = None,
    hooks: Sequence = (),
    guidance=None,
) -> CrystalBatch:
    """Sample n crystals whose first k atoms form the motif. n_atoms: fixed count, (n,) counts, or None to
    draw from the motif N prior (up to max_atoms). n_elements: distinct elements per crystal (motif element
    included) for a model with element_budget / the count condition. Seeded: same options, same output."""
    hook = MotifInpainting(model=sampler.model, constraint=constraint)
    gen = torch.Generator().manual_seed(int(seed))
    if n_atoms is None:
        counts = hook.draw_n_atoms(n, gen, max_atoms)
    elif isinstance(n_atoms, torch.Tensor):
        counts = n_atoms.to(torch.long)
    else:
        counts = torch.full((n,), int(n_atoms), dtype=torch.long)
    if counts.shape != (n,):
        raise ValueError(f"n_atoms must give one count per crystal ({n}), got shape {tuple(counts.shape)}")
    hook.motif_atoms(counts)  # one clear error before any work
    initial = hook.initial_state(sampler, counts, gen)
    k = None
    if n_elements is not None:
        if n_elements < 1:
            raise ValueError(f"n_elements must be >= 1, got {n_elements}")
        k = torch.full((n,), int(n_elements), dtype=torch.long)
    last = None
    for last in sampler.iter_steps(n_atoms=counts, seed=int(seed) + 1, type_mask=hook.type_mask(counts),
                                   hooks=[hook, *hooks], guidance=guidance, initial=initial, n_elements=k):
        pass
    assert last is not None
    return sampler.decode(last.state)


__all__ = ["MotifConstraint", "MotifInpainting", "motif_n_atoms_prior", "sample_with_motif", "metric_to_lattice"]
