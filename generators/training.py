"""Training of the diffusion model: per-field denoising losses, EMA, checkpoints, exact resume.

Determinism: batch order of epoch e is a permutation drawn from a generator seeded by (seed, e), and
the noise of step s from a generator seeded by (seed, s); a resumed run therefore sees exactly the
batches and noise of an uninterrupted one. The work checkpoint holds weights, EMA weights, optimiser
state, step, history and the global RNG state.

``Trainer.iter_steps()`` yields one ``StepLog`` per optimisation step (and validation results when
they are computed); the caller consumes it (logging, progress, deadlines).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tessera.generators.crystal import CrystalBatch, LatticeCoder, collate
from tessera.generators.denoiser import NoisyCrystal
from tessera.generators.model import DiffusionModel, save_weights


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the shipped model's (configs/generator.yaml). Steps are
    optimiser steps; times in seconds."""

    seed: int = 5
    batch_size: int = 128
    lr: float = 2e-4
    lr_min: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    total_steps: int = 14000
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    w_lattice: float = 1.0
    w_frac: float = 1.0
    w_type: float = 2.0
    # Share of training crystals whose element count is hidden from an n_elements-conditioned network
    # (it then sees 0, "not given"), so the same weights also sample without the condition.
    n_elements_drop: float = 0.1
    val_every: int = 500
    val_size: int = 512
    ckpt_every_steps: int = 250
    log_every: int = 50

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class CrystalArrays:
    """A data split as per-crystal arrays: lattices (3, 3) A, fracs (n, 3), type indices (n,)."""

    lattices: list[np.ndarray]
    fracs: list[np.ndarray]
    types: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.types)

    def batch(self, idx: Sequence[int]) -> CrystalBatch:
        return collate([self.lattices[i] for i in idx], [self.fracs[i] for i in idx], [self.types[i] for i in idx])

    @classmethod
    def from_numbers(
        cls, *, lattices: Sequence[np.ndarray], fracs: Sequence[np.ndarray], numbers: Sequence[np.ndarray], vocab: list[int]
    ) -> "CrystalArrays":
        """Map atomic numbers to vocabulary indices (every number must be in vocab)."""
        lookup = {z: i for i, z in enumerate(vocab)}
        types = [np.array([lookup[int(z)] for z in zs], dtype=np.int64) for zs in numbers]
        return cls(lattices=[np.asarray(x, dtype=np.float64) for x in lattices],
                   fracs=[np.asarray(f, dtype=np.float64) % 1.0 for f in fracs], types=types)


@dataclass
class StepLog:
    step: int
    loss: float
    loss_lattice: float
    loss_frac: float
    loss_type: float
    lr: float
    elapsed_s: float
    val: dict[str, float] | None = None


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def denoising_losses(
    model: DiffusionModel, batch: CrystalBatch, gen: torch.Generator, *, n_elements_drop: float = 0.0
) -> dict[str, torch.Tensor]:
    """Per-field losses of one batch at uniformly drawn timesteps (all fields share t per crystal).

    lattice: MSE of the code noise; frac: MSE of the normalised wrapped-normal score; type: cross-entropy
    of the clean type from its noisy one-hot. A network conditioned on the element count sees each
    crystal's true count, hidden (0) for a share ``n_elements_drop`` of them.
    """
    B, N = batch.num_crystals, batch.frac.shape[0]
    T = model.config.num_steps
    t = torch.randint(1, T + 1, (B,), generator=gen)
    t_atom = t[batch.batch]
    code0 = model.coder.encode(batch.lattice, batch.n_atoms)
    eps_l = torch.randn(B, 6, generator=gen)
    code_t = model.lattice_process.marginal(code0, t, eps_l)
    a_t = model.type_process.noisy(batch.types, t_atom, gen)
    f_t = model.frac_process.marginal(batch.frac, t_atom, torch.randn(N, 3, generator=gen))
    target = model.frac_process.target_score(f_t, batch.frac, t_atom) / model.frac_process.score_norm(t_atom).sqrt().unsqueeze(-1)
    n_elements = None
    if model.config.n_elements_condition > 0:
        # Drawn after every other noise of the step, so an unconditioned model's stream is unchanged.
        hidden = torch.rand(B, generator=gen) < n_elements_drop
        n_elements = batch.n_elements.masked_fill(hidden, 0)
    pred = model.net(NoisyCrystal(lattice_code=code_t, frac=f_t, types=a_t, batch=batch.batch, n_atoms=batch.n_atoms,
                                  t=t, n_elements=n_elements))
    return {
        "lattice": F.mse_loss(pred.lattice_eps, eps_l),
        "frac": F.mse_loss(pred.frac_score, target),
        "type": model.type_process.loss(pred.type_logits, batch.types, a_t),
    }


class Trainer:
    """Owns the model, its EMA copy, the optimiser and the data; checkpoints into ``work_dir``."""

    def __init__(
        self,
        *,
        model: DiffusionModel,
        config: TrainConfig,
        train: CrystalArrays,
        val: CrystalArrays,
        work_dir: Path,
        extra_meta: dict[str, Any] | None = None,
    ) -> None:
        self.model, self.config, self.train, self.val = model, config, train, val
        self.work_dir = Path(work_dir)
        self.extra_meta = dict(extra_meta or {})
        self.ema = [p.detach().clone() for p in model.net.parameters()]
        decay, no_decay = [], []
        for name, p in model.net.named_parameters():
            (no_decay if p.ndim < 2 else decay).append(p)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        self.step = 0
        self.elapsed_s = 0.0
        self.best_val = math.inf
        self.history: list[dict[str, Any]] = []
        self.steps_per_epoch = max(1, len(train) // config.batch_size)

    # -- schedule and data ------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        frac = min(1.0, (step - c.warmup_steps) / max(1, c.total_steps - c.warmup_steps))
        return c.lr_min + 0.5 * (c.lr - c.lr_min) * (1.0 + math.cos(math.pi * frac))

    def batch_indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(self.config.seed * 7919 + epoch))
        bs = self.config.batch_size
        return perm[pos * bs : (pos + 1) * bs].numpy()

    # -- EMA --------------------------------------------------------------------------------
    def _update_ema(self) -> None:
        params = [p.detach() for p in self.model.net.parameters()]
        # Warm-up of the decay (as in common EMA implementations): early EMA weights are not dominated by
        # the random initialisation, so an early checkpoint already samples sensibly.
        decay = min(self.config.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        torch._foreach_lerp_(self.ema, params, 1.0 - decay)

    def reset_ema(self) -> None:
        """EMA := current weights (after a warm start replaced the initial ones)."""
        with torch.no_grad():
            for e, p in zip(self.ema, self.model.net.parameters()):
                e.copy_(p.detach())

    def ema_state_dict(self) -> dict[str, torch.Tensor]:
        names = [n for n, _ in self.model.net.named_parameters()]
        sd = {k: v.detach().clone() for k, v in self.model.net.state_dict().items()}
        for n, e in zip(names, self.ema):
            sd[n] = e.detach().clone()
        return sd

    def ema_model(self) -> DiffusionModel:
        m = DiffusionModel.from_meta(self.model.meta(), self.ema_state_dict())
        m.net.eval()
        return m

    # -- one step, validation ----------------------------------------------------------------
    def train_step(self) -> StepLog:
        t0 = time.perf_counter()
        c = self.config
        self.model.net.train()
        batch = self.train.batch(self.batch_indices(self.step))
        losses = denoising_losses(self.model, batch, _step_generator(c.seed, self.step), n_elements_drop=c.n_elements_drop)
        loss = c.w_lattice * losses["lattice"] + c.w_frac * losses["frac"] + c.w_type * losses["type"]
        lr = self.lr_at(self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.net.parameters(), c.grad_clip)
        self.opt.step()
        self._update_ema()
        self.step += 1
        self.elapsed_s += time.perf_counter() - t0
        return StepLog(
            step=self.step,
            loss=float(loss.detach()),
            loss_lattice=float(losses["lattice"].detach()),
            loss_frac=float(losses["frac"].detach()),
            loss_type=float(losses["type"].detach()),
            lr=lr,
            elapsed_s=self.elapsed_s,
        )

    @torch.no_grad()
    def validate(self, model: DiffusionModel | None = None) -> dict[str, float]:
        """Held-out losses (fixed subset, fixed noise: comparable across steps); EMA weights by default."""
        model = model or self.ema_model()
        model.net.eval()
        n = min(self.config.val_size, len(self.val))
        gen = torch.Generator().manual_seed(12345)
        sums = {"lattice": 0.0, "frac": 0.0, "type": 0.0}
        count = 0
        for start in range(0, n, 256):
            idx = list(range(start, min(n, start + 256)))
            losses = denoising_losses(model, self.val.batch(idx), gen)
            for k in sums:
                sums[k] += float(losses[k]) * len(idx)
            count += len(idx)
        out = {f"val_{k}": v / count for k, v in sums.items()}
        c = self.config
        out["val_loss"] = c.w_lattice * out["val_lattice"] + c.w_frac * out["val_frac"] + c.w_type * out["val_type"]
        return out

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def ckpt_path(self) -> Path:
        return self.work_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.work_dir / "best_ema.pt"

    def save_checkpoint(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        blob = {
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "best_val": self.best_val,
            "history": self.history,
            "net": self.model.net.state_dict(),
            "ema": self.ema,
            "opt": self.opt.state_dict(),
            "rng": torch.get_rng_state(),
            "meta": self.model.meta(),
            "train_config": asdict(self.config),
            # What the run was started from (init_from, lineage) is known only at its start; a resumed
            # process must carry it into the best checkpoint's JSON too.
            "extra_meta": self.extra_meta,
        }
        tmp = self.ckpt_path.with_name(self.ckpt_path.name + ".tmp")
        torch.save(blob, tmp)
        tmp.replace(self.ckpt_path)

    def load_checkpoint(self, path: Path | None = None) -> bool:
        """Restore from ``path`` (default: work_dir/last.pt); False if there is none."""
        path = Path(path or self.ckpt_path)
        if not path.exists():
            return False
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if blob["meta"]["model_config"] != self.model.config.to_dict():
            raise ValueError(f"checkpoint {path} was trained with a different model config")
        self.model.net.load_state_dict(blob["net"])
        with torch.no_grad():
            for e, saved in zip(self.ema, blob["ema"]):
                e.copy_(saved)
        self.opt.load_state_dict(blob["opt"])
        torch.set_rng_state(blob["rng"])
        self.step, self.elapsed_s = int(blob["step"]), float(blob["elapsed_s"])
        self.best_val, self.history = float(blob["best_val"]), list(blob["history"])
        self.extra_meta = {**blob.get("extra_meta", {}), **self.extra_meta}
        return True

    # -- loop ----------------------------------------------------------------------------------
    def iter_steps(self, *, max_steps: int | None = None, deadline: float | None = None) -> Iterator[StepLog]:
        """Train until total_steps (or max_steps more steps, or wall-clock ``deadline``); yield every step."""
        c = self.config
        stop = c.total_steps if max_steps is None else min(c.total_steps, self.step + max_steps)
        while self.step < stop:
            log = self.train_step()
            if self.step % c.val_every == 0 or self.step == c.total_steps:
                log.val = self.validate()
                if log.val["val_loss"] < self.best_val:
                    self.best_val = log.val["val_loss"]
                    save_weights(self.ema_model(), self.best_path,
                                 extra={**self.extra_meta, "step": self.step, "metrics": log.val, "train_config": asdict(c)})
            if log.val is not None or self.step % c.log_every == 0:
                self.history.append({k: v for k, v in asdict(log).items()})
            if self.step % c.ckpt_every_steps == 0 or self.step == stop:
                self.save_checkpoint()
            yield log
            if deadline is not None and time.time() > deadline:
                self.save_checkpoint()
                return


def warm_start(model: DiffusionModel, source: DiffusionModel) -> list[str]:
    """Initialise ``model``'s network from a trained ``source`` (same vocabulary and lattice coder).

    Every parameter of equal shape is copied. The type input layer may differ when ``model`` uses the
    masked type process and ``source`` the continuous one-hot: its K element columns are copied,
    multiplied by the source's type_scale (a revealed atom's input is a plain one-hot, where the source
    saw about type_scale * one-hot for a clean atom), and the mask column starts at zero, the mean input
    the source saw for pure noise. A deeper ``model`` (more message-passing layers, same width) keeps the
    source's layers first; each extra layer's last node linear starts at zero, so the residual layer is
    the identity and the grown network predicts exactly what the source did (training then moves it).
    Returns the names of parameters left at their fresh initialisation.
    """
    if model.vocab != source.vocab:
        raise ValueError("warm start needs the same element vocabulary")
    src = source.net.state_dict()
    dst = model.net.state_dict()
    fresh = []
    with torch.no_grad():
        for name, value in dst.items():
            if name not in src:
                fresh.append(name)
            elif src[name].shape == value.shape:
                value.copy_(src[name])
            elif name == "type_in.weight" and value.shape[1] == src[name].shape[1] + 1:
                value.zero_()
                value[:, :-1] = src[name] * source.config.type_scale
            else:
                fresh.append(name)
        n_source_layers = len(source.net.layers)
        for layer in list(model.net.layers)[n_source_layers:]:
            # Zero residual branch: why the grown network starts as the source (see docstring).
            last = layer.node[-1]
            last.weight.zero_()
            last.bias.zero_()
    # state_dict() tensors share storage with the parameters: the copies above already set the weights.
    model.coder = source.coder
    return fresh
