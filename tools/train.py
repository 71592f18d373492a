"""Training jobs for the crystal diffusion model: train (resumable) and ship a checkpoint.

These compose configuration (configs/generator.yaml) and read the structure pool through tools.pool,
handing plain arrays to ``tessera.generators`` (which imports nothing from tools/). Progress goes out
through callbacks; nothing here prints.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from tessera.tools.errors import DataError, InputError, ToolFailed
from tessera.tools.hashing import file_sha256
from tessera.tools.paths import CONFIG_DIR, REPO_ROOT, repo_relative
from tessera.tools.sample import SAMPLER_CONFIG, load_sampler_settings

GENERATOR_CONFIG: Path = CONFIG_DIR / "generator.yaml"
MAX_SHIPPED_MB: float = 25.0
"""Shipped weights live in git: a bigger file would make every clone slow (and hit hosting limits)."""


def load_generator_config(path: Path = GENERATOR_CONFIG) -> dict[str, Any]:
    """The generator recipe: a YAML with ``model`` and ``train`` sections (and work_dir, shipped, init_from)."""
    if not path.exists():
        raise InputError(f"generator config not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or "model" not in cfg or "train" not in cfg:
        raise InputError(f"{path}: expected 'model' and 'train' sections")
    return cfg


def repo_path(p: str | Path) -> Path:
    """A path from a config: absolute as given, relative to the repository otherwise."""
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p


def pool_split_arrays(split: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Niggli-reduced (lattices (3, 3) A, fracs (n, 3), atomic numbers (n,)) of one pool split.

    Niggli reduction (as CDVAE/DiffCSP preprocess MP-20) gives one compact cell per crystal, which
    narrows the lattice distribution the model must learn.
    """
    from tessera.tools.pool import load_pool, row_to_structure

    lattices, fracs, numbers = [], [], []
    for _, row in load_pool(split).iterrows():  # type: ignore[arg-type]
        s = row_to_structure(row).get_reduced_structure()
        lattices.append(s.lattice.matrix.copy())
        fracs.append(s.frac_coords % 1.0)
        numbers.append(np.array(s.atomic_numbers, dtype=np.int64))
    if not lattices:
        raise DataError(f"pool split {split!r} is empty")
    return lattices, fracs, numbers


def training_lineage(source: Path) -> list[dict[str, Any]]:
    """The training stages behind warm-start weights, oldest first, from their JSON (when there is one).

    Each stage keeps what reproduces it: its config, step count, metrics, data hash and the sha256 of the
    weights it started from; a model fine-tuned three times carries three entries plus its own run.
    """
    meta_path = source.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    stage = {k: meta[k] for k in ("init_from", "step", "metrics", "train_config", "pool_hash") if k in meta}
    stage["weights_sha256"] = file_sha256(source)
    stage["model_config"] = meta.get("model_config")
    return [*meta.get("lineage", []), stage]


class TrainParams(BaseModel):
    """Options of a training run (the recipe itself is the generator config)."""

    model_config = ConfigDict(extra="forbid")

    config: Path = Field(GENERATOR_CONFIG, description="YAML with model/train sections")
    max_steps: int = Field(0, ge=0, description="stop after this many more steps (0: run to total_steps)")
    fresh: bool = Field(False, description="ignore an existing work checkpoint and start over")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    max_minutes: float = Field(0.0, ge=0, description="stop (with a checkpoint) after this much wall time (0: none)")
    init_from: Path | None = Field(None, description="weights a new run starts from (default: the config's init_from)")


class TrainResult(BaseModel):
    """Where a training run ended."""

    model_config = ConfigDict(extra="forbid")

    params: TrainParams
    step: int
    best_val: float | None
    work_dir: Path
    best_checkpoint: Path
    last: dict[str, Any] | None = Field(None, description="the last logged step (losses, lr, elapsed s)")


def train_generator(
    params: TrainParams,
    *,
    on_log: Callable[[Any], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the diffusion model on the pool's train split, resuming from ``work_dir/last.pt``.

    A new run (no work checkpoint, or ``fresh``) starts from random weights, or from trained weights
    (``init_from`` or the config's: e.g. the shipped model, to fine-tune it without re-learning lattices and
    coordinates). Each logged step (a ``StepLog``) is appended to ``work_dir/train_log.jsonl`` and handed to
    ``on_log``; ``on_message`` hears the setup lines (data sizes, resume point, parameter count).
    """
    import torch

    from tessera.generators.crystal import LatticeCoder
    from tessera.generators.model import DiffusionModel, ModelConfig, load_weights
    from tessera.generators.training import CrystalArrays, Trainer, TrainConfig, warm_start
    from tessera.tools.pool import pool_hash

    say = on_message or (lambda _msg: None)
    torch.set_num_threads(params.threads)
    cfg = load_generator_config(params.config)
    work_dir = repo_path(cfg.get("work_dir", "data/checkpoints/work"))
    work_dir.mkdir(parents=True, exist_ok=True)
    tcfg = TrainConfig.from_dict(cfg["train"])
    mcfg = ModelConfig.from_dict(cfg["model"])

    t0 = time.time()
    tr_l, tr_f, tr_z = pool_split_arrays("train")
    va_l, va_f, va_z = pool_split_arrays("val")
    vocab = sorted({int(z) for zs in tr_z for z in zs})
    vocab_set = set(vocab)
    keep = [i for i, zs in enumerate(va_z) if set(int(z) for z in zs) <= vocab_set]
    train = CrystalArrays.from_numbers(lattices=tr_l, fracs=tr_f, numbers=tr_z, vocab=vocab)
    val = CrystalArrays.from_numbers(
        lattices=[va_l[i] for i in keep], fracs=[va_f[i] for i in keep], numbers=[va_z[i] for i in keep], vocab=vocab
    )
    counts = np.bincount([len(z) for z in tr_z])[1:].astype(float)
    prior = (counts / counts.sum()).tolist()
    coder = LatticeCoder.fit(lattice=torch.as_tensor(np.stack(tr_l)), n_atoms=torch.tensor([len(z) for z in tr_z]))
    say(f"data: {len(train)} train, {len(val)} val crystals, {len(vocab)} elements ({time.time() - t0:.0f} s)")

    torch.manual_seed(tcfg.seed)
    model = DiffusionModel.create(config=mcfg, coder=coder, vocab=vocab, n_atoms_prior=prior)
    trainer = Trainer(
        model=model, config=tcfg, train=train, val=val, work_dir=work_dir,
        extra_meta={"pool_hash": pool_hash(), "data_split": "train", "val_split": "val"},
    )
    log_path = work_dir / "train_log.jsonl"
    if params.fresh:
        for p in (trainer.ckpt_path, trainer.best_path, log_path):
            p.unlink(missing_ok=True)
    resumed = not params.fresh and trainer.load_checkpoint()
    if resumed:
        say(f"resumed at step {trainer.step}")
    else:
        source = params.init_from or cfg.get("init_from")
        if source:
            source_path = repo_path(source)
            if not source_path.exists():
                raise InputError(f"--init-from: no weights at {source_path} (the recipe's comments say how to "
                                 f"restore them from git history)")
            fresh_params = warm_start(model, load_weights(source_path))
            trainer.reset_ema()
            trainer.extra_meta["init_from"] = repo_relative(source_path)
            trainer.extra_meta["lineage"] = training_lineage(source_path)
            say(f"initialised from {source_path} ({len(fresh_params)} tensors left fresh: {fresh_params})")
    n_params = sum(p.numel() for p in model.net.parameters())
    say(f"model: {n_params / 1e6:.2f} M parameters; {trainer.steps_per_epoch} steps/epoch")
    last = None
    deadline = time.time() + 60.0 * params.max_minutes if params.max_minutes > 0 else None
    with open(log_path, "a") as fh:
        for log in trainer.iter_steps(max_steps=params.max_steps or None, deadline=deadline):
            last = log
            if log.val is not None or log.step % tcfg.log_every == 0:
                fh.write(json.dumps(dict(log.__dict__)) + "\n")
                fh.flush()
                if on_log is not None:
                    on_log(log)
    return TrainResult(params=params, step=trainer.step, best_val=trainer.best_val, work_dir=work_dir,
                       best_checkpoint=trainer.best_path, last=dict(last.__dict__) if last else None)


class ShipParams(BaseModel):
    """Which weights to ship and how many crystals to sample for the shipped record's quick check."""

    model_config = ConfigDict(extra="forbid")

    source: Path | None = Field(None, description="weights to ship (default: the config's work_dir/best_ema.pt)")
    config: Path = Field(GENERATOR_CONFIG, description="YAML with model/train sections (and 'shipped')")
    n_check: int = Field(64, ge=1, description="crystals sampled (seed 0) for the record's sample statistics")


class ShipResult(BaseModel):
    """The shipped file and its record."""

    model_config = ConfigDict(extra="forbid")

    params: ShipParams
    shipped: Path
    step: int | None
    metrics: dict[str, Any] | None
    sample_check: dict[str, Any]
    size_mb: float


def ship_generator(params: ShipParams) -> ShipResult:
    """Copy EMA weights (no optimiser state) to the config's ``shipped`` path, with a JSON of config, pool
    hash, step, metrics, lineage and quick sample statistics (validity, volume per atom, speed)."""
    import torch

    from tessera.generators.convert import to_structures
    from tessera.generators.model import load_weights
    from tessera.generators.sampler import sample_many
    from tessera.tools.measures import is_compositionally_valid, is_structurally_valid

    cfg = load_generator_config(params.config)
    src = params.source or repo_path(cfg.get("work_dir", "data/checkpoints/work")) / "best_ema.pt"
    dst = repo_path(cfg.get("shipped", "data/checkpoints/generator.pt"))
    if not src.exists():
        raise InputError(f"no weights to ship at {src}")
    size_mb = src.stat().st_size / 1e6
    if size_mb > MAX_SHIPPED_MB:
        raise InputError(f"{src} is {size_mb:.1f} MB (> {MAX_SHIPPED_MB:.0f} MB limit for shipped weights)")
    meta_src = src.with_suffix(".json")
    meta = json.loads(meta_src.read_text()) if meta_src.exists() else {}
    model = load_weights(src)
    torch.set_num_threads(2)
    sampler_config, _ = load_sampler_settings(SAMPLER_CONFIG)
    t0 = time.perf_counter()
    batches = sample_many(model=model, config=sampler_config, n=params.n_check, seed=0)
    seconds = time.perf_counter() - t0
    structures = [s for b in batches for s in to_structures(b, model.vocab)]
    if not structures:
        raise ToolFailed(f"{src}: sampling produced no crystals to check")
    vpa = np.array([s.volume / len(s) for s in structures])
    check = {
        "n": len(structures), "seed": 0, "crystals_per_s": len(structures) / seconds,
        "structural_validity": float(np.mean([is_structurally_valid(s) for s in structures])),
        "compositional_validity": float(np.mean([is_compositionally_valid(s) for s in structures])),
        "vol_per_atom_min": float(vpa.min()), "vol_per_atom_median": float(np.median(vpa)),
        "vol_per_atom_max": float(vpa.max()),
        "n_elements_hist_1to5": np.bincount([len(s.composition.elements) for s in structures], minlength=6)[1:6].tolist(),
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    record = {**meta, "weights": "EMA", "sampler": dict(sampler_config.__dict__), "sample_check": check, "size_mb": size_mb}
    if meta.get("lineage"):
        record["training_steps_total"] = (sum(int(st.get("step") or 0) for st in meta["lineage"])
                                          + int(meta.get("step") or 0))
    dst.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return ShipResult(params=params, shipped=dst, step=meta.get("step"), metrics=meta.get("metrics"),
                      sample_check=check, size_mb=size_mb)
