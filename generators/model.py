"""A trained generator bundle: network + corruption processes + lattice coder + vocabulary + atom-count prior.

``DiffusionModel`` is what a checkpoint restores and what the sampler and training share. It holds no
sampling loop (that lives in ``generators.sampler``) and no optimiser (``generators.training``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tessera.generators.corruption import DDPM, GaussianTypes, MaskedTypes, TypeProcess, WrappedNormal
from tessera.generators.crystal import LatticeCoder
from tessera.generators.denoiser import CSPNet


@dataclass(frozen=True)
class ModelConfig:
    """Network and diffusion hyper-parameters (units: sigmas in fractional coordinates).

    Defaults are the shipped model's (configs/generator.yaml), except type_process and
    n_elements_condition: checkpoints written before those options existed omit them from their
    model_config, and ``from_dict`` must read such a checkpoint as the gaussian, unconditioned network it
    is (the shipped model's warm start and the earlier stages of its lineage are such checkpoints).
    """

    hidden: int = 192
    num_layers: int = 4
    n_freq: int = 10
    time_dim: int = 64
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sigma_min: float = 0.005
    sigma_max: float = 0.5
    # Clean type vector = type_scale * one-hot. With K ~ 90 types and scale 1 an atom's element only
    # becomes identifiable below abar ~ 0.9 (the last ~15% of the reverse process), so all atoms commit
    # at once and independently (a "soup" of elements); a larger scale decides composition earlier.
    type_scale: float = 3.0
    # "gaussian": DDPM on the (scaled) continuous one-hot, as DiffCSP. "masked": absorbing-state discrete
    # diffusion (MatterGen's choice), atoms revealed one at a time; type_scale is then unused.
    type_process: str = "gaussian"
    # > 0: the network also sees the number of distinct elements the crystal is to have (1..this; more
    # share the top row), so the sampler can draw it from the data's statistics or take it from a goal
    # ("a ternary"). Without it the type head must guess the count from the revealed atoms and tends to
    # add one element too many. 0 = unconditioned.
    n_elements_condition: int = 0

    def __post_init__(self) -> None:
        if self.type_process not in ("gaussian", "masked"):
            raise ValueError(f"type_process must be 'gaussian' or 'masked', got {self.type_process!r}")
        if self.n_elements_condition < 0:
            raise ValueError(f"n_elements_condition must be >= 0, got {self.n_elements_condition}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class DiffusionModel:
    """Everything needed to denoise and sample.

    vocab: atomic numbers, index i of a type vector <-> element vocab[i].
    n_atoms_prior: probability of each atom count 1..len(prior) (index 0 is one atom).
    """

    config: ModelConfig
    net: CSPNet
    coder: LatticeCoder
    vocab: list[int]
    n_atoms_prior: list[float]
    lattice_process: DDPM = field(init=False)
    type_process: TypeProcess = field(init=False)
    frac_process: WrappedNormal = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.lattice_process = DDPM(num_steps=c.num_steps, beta_start=c.beta_start, beta_end=c.beta_end)
        if c.type_process == "masked":
            self.type_process = MaskedTypes(num_steps=c.num_steps, num_types=len(self.vocab))
        else:
            # The continuous types share the lattice's noise schedule.
            self.type_process = GaussianTypes(self.lattice_process, num_types=len(self.vocab), type_scale=c.type_scale)
        self.frac_process = WrappedNormal(num_steps=c.num_steps, sigma_min=c.sigma_min, sigma_max=c.sigma_max)

    @classmethod
    def create(
        cls, *, config: ModelConfig, coder: LatticeCoder, vocab: list[int], n_atoms_prior: list[float]
    ) -> "DiffusionModel":
        net = CSPNet(
            num_types=len(vocab),
            hidden=config.hidden,
            num_layers=config.num_layers,
            n_freq=config.n_freq,
            time_dim=config.time_dim,
            type_state_dim=len(vocab) + 1 if config.type_process == "masked" else len(vocab),
            max_n_elements=config.n_elements_condition,
        )
        return cls(config=config, net=net, coder=coder, vocab=list(vocab), n_atoms_prior=list(n_atoms_prior))

    @property
    def num_types(self) -> int:
        return len(self.vocab)

    def meta(self) -> dict[str, Any]:
        """JSON-able description (everything but the weights)."""
        return {
            "model_config": self.config.to_dict(),
            "lattice_coder": self.coder.state_dict(),
            "vocab": self.vocab,
            "n_atoms_prior": self.n_atoms_prior,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], state_dict: dict[str, torch.Tensor] | None = None) -> "DiffusionModel":
        model = cls.create(
            config=ModelConfig.from_dict(meta["model_config"]),
            coder=LatticeCoder.from_state_dict(meta["lattice_coder"]),
            vocab=[int(z) for z in meta["vocab"]],
            n_atoms_prior=[float(p) for p in meta["n_atoms_prior"]],
        )
        if state_dict is not None:
            model.net.load_state_dict(state_dict)
        return model


def save_weights(model: DiffusionModel, path: Path, *, extra: dict[str, Any]) -> None:
    """Ship weights only: ``path`` (.pt state dict + meta) and ``path.with_suffix('.json')`` (meta + extra)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = model.meta()
    state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"meta": meta, "state_dict": state}, tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({**meta, **extra}, indent=1, default=str) + "\n")


def load_weights(path: Path) -> DiffusionModel:
    """Restore a DiffusionModel from ``save_weights`` output (eval mode)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DiffusionModel.from_meta(blob["meta"], blob["state_dict"])
    model.net.eval()
    return model
