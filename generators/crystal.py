"""Crystal representation and batching.

A crystal is (lattice L (3, 3) in A with lattice vectors as rows, fractional coordinates F (n, 3) in
[0, 1), atom types A (n,) as indices into a fixed element vocabulary). A batch concatenates the atoms of
several crystals and keeps an index vector ``batch`` (atom -> crystal), as graph libraries do; no loose
dicts of arrays travel between stages.

The lattice is diffused in an invariant, normalised form (see ``LatticeCoder``): the symmetric matrix
logarithm of the stretch ``S = (L L^T)^(1/2)`` with the per-atom volume scale removed, standardised per
component. Any 6 numbers decode to a valid (positive-definite, non-degenerate) lattice, rotations of L
do not change the code, and the cell volume is exp(trace) so the volume per atom stays in the data's range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

# Upper-triangle index pairs of a symmetric 3x3 matrix (the 6 free components).
_TRIU = (torch.tensor([0, 1, 2, 0, 0, 1]), torch.tensor([0, 1, 2, 1, 2, 2]))


@dataclass(frozen=True)
class CrystalBatch:
    """A batch of B crystals with N atoms in total.

    lattice: (B, 3, 3) float, rows are lattice vectors in A.
    frac: (N, 3) float, fractional coordinates in [0, 1).
    types: (N,) long, indices into the element vocabulary (not atomic numbers).
    batch: (N,) long, crystal index of each atom (sorted, contiguous).
    n_atoms: (B,) long, atoms per crystal.
    """

    lattice: torch.Tensor
    frac: torch.Tensor
    types: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor

    @property
    def num_crystals(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def n_elements(self) -> torch.Tensor:
        """(B,) long number of distinct elements per crystal."""
        stride = int(self.types.max()) + 1 if self.types.numel() else 1
        pairs = torch.unique(self.batch * stride + self.types)  # one entry per (crystal, element)
        return torch.bincount(pairs // stride, minlength=self.num_crystals)

    def to(self, device: str | torch.device) -> "CrystalBatch":
        return CrystalBatch(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})

    def with_(self, **changes: torch.Tensor) -> "CrystalBatch":
        return replace(self, **changes)

    def split(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per-crystal numpy arrays (lattice (3, 3), frac (n, 3), types (n,))."""
        out = []
        offsets = torch.cumsum(self.n_atoms, 0) - self.n_atoms
        for b in range(self.num_crystals):
            s, n = int(offsets[b]), int(self.n_atoms[b])
            out.append(
                (
                    self.lattice[b].detach().cpu().double().numpy(),
                    self.frac[s : s + n].detach().cpu().double().numpy(),
                    self.types[s : s + n].detach().cpu().numpy(),
                )
            )
        return out


def batch_index(n_atoms: torch.Tensor) -> torch.Tensor:
    """(N,) crystal index of each atom from (B,) atom counts."""
    return torch.repeat_interleave(torch.arange(n_atoms.shape[0], device=n_atoms.device), n_atoms)


def collate(
    lattices: Sequence[np.ndarray], fracs: Sequence[np.ndarray], types: Sequence[np.ndarray]
) -> CrystalBatch:
    """Build a CrystalBatch from per-crystal arrays (lattice (3, 3) A, frac (n, 3), type indices (n,))."""
    n_atoms = torch.tensor([len(t) for t in types], dtype=torch.long)
    return CrystalBatch(
        lattice=torch.as_tensor(np.stack(lattices), dtype=torch.float32),
        frac=torch.as_tensor(np.concatenate(fracs) % 1.0, dtype=torch.float32),
        types=torch.as_tensor(np.concatenate(types), dtype=torch.long),
        batch=batch_index(n_atoms),
        n_atoms=n_atoms,
    )


def full_edges(n_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered atom pairs (i, j) within each crystal, self-pairs included.

    Returns (src, dst), each (E,) long with E = sum n_b^2; messages flow src -> dst.
    """
    device = n_atoms.device
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    n_sq = n_atoms * n_atoms
    edge_batch = torch.repeat_interleave(torch.arange(n_atoms.shape[0], device=device), n_sq)
    # Position of each edge inside its crystal's n x n block.
    local = torch.arange(int(n_sq.sum()), device=device) - torch.repeat_interleave(torch.cumsum(n_sq, 0) - n_sq, n_sq)
    n_e = n_atoms[edge_batch]
    src = offsets[edge_batch] + local // n_e
    dst = offsets[edge_batch] + local % n_e
    return src, dst


def sym_logm(g: torch.Tensor) -> torch.Tensor:
    """Matrix logarithm of symmetric positive-definite matrices (..., 3, 3)."""
    w, v = torch.linalg.eigh(g)
    return v @ torch.diag_embed(torch.log(w.clamp_min(1e-12))) @ v.transpose(-1, -2)


def sym_expm(x: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of symmetric matrices (..., 3, 3)."""
    w, v = torch.linalg.eigh(x)
    return v @ torch.diag_embed(torch.exp(w)) @ v.transpose(-1, -2)


def sym_to_vec(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) symmetric -> (..., 6): diagonal then (01, 02, 12) off-diagonals."""
    return x[..., _TRIU[0], _TRIU[1]]


def vec_to_sym(v: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) symmetric (inverse of sym_to_vec)."""
    out = v.new_zeros(*v.shape[:-1], 3, 3)
    out[..., _TRIU[0], _TRIU[1]] = v
    out[..., _TRIU[1], _TRIU[0]] = v
    return out


@dataclass(frozen=True)
class LatticeCoder:
    """Invariant, standardised 6-vector code of a lattice.

    code = (sym_to_vec(logm(S)) - log(n)/3 * [1,1,1,0,0,0] - mean) / std, S = (L L^T)^(1/2).
    Decoding gives L = expm(.) (a symmetric lattice matrix: the same crystal up to a rotation).
    mean, std: (6,) statistics of the training set's codes before standardisation.
    """

    mean: torch.Tensor
    std: torch.Tensor

    @staticmethod
    def raw(lattice: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        """(B, 3, 3) lattices, (B,) atom counts -> (B, 6) unstandardised codes."""
        g = lattice.double() @ lattice.double().transpose(-1, -2)
        v = sym_to_vec(0.5 * sym_logm(g))
        shift = torch.log(n_atoms.double()).unsqueeze(-1) / 3.0
        v = v.clone()
        v[..., :3] = v[..., :3] - shift
        return v.to(lattice.dtype)

    @classmethod
    def fit(cls, *, lattice: torch.Tensor, n_atoms: torch.Tensor) -> "LatticeCoder":
        raw = cls.raw(lattice, n_atoms)
        return cls(mean=raw.mean(0).float(), std=raw.std(0).clamp_min(1e-3).float())

    def encode(self, lattice: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        return (self.raw(lattice, n_atoms) - self.mean) / self.std

    def decode(self, code: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
        """(B, 6) codes -> (B, 3, 3) lattice matrices in A."""
        v = (code * self.std + self.mean).double()
        v = v.clone()
        v[..., :3] = v[..., :3] + torch.log(n_atoms.double()).unsqueeze(-1) / 3.0
        return sym_expm(vec_to_sym(v)).to(code.dtype)

    def state_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, list[float]]) -> "LatticeCoder":
        return cls(mean=torch.tensor(state["mean"]), std=torch.tensor(state["std"]))
