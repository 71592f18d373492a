"""`tessera train generator` and `tessera sample`: the entry points of generators/.

This module composes configuration (configs/generator.yaml) and reads the structure pool through
tools.pool, handing plain arrays to generators/ (which imports nothing from tools/ or agents/).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import typer
import yaml

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, fail
from tessera.tools.errors import DataError, InputError
from tessera.tools.paths import CONFIG_DIR, REPO_ROOT, repo_relative

DEFAULT_CONFIG = CONFIG_DIR / "generator.yaml"

train_app = typer.Typer(help="Train models.", no_args_is_help=True)
app.add_typer(train_app, name="train")


def load_generator_config(path: Path = DEFAULT_CONFIG) -> dict[str, Any]:
    if not path.exists():
        raise InputError(f"generator config not found: {path}")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or "model" not in cfg or "train" not in cfg:
        raise InputError(f"{path}: expected 'model' and 'train' sections")
    return cfg


def _repo_path(p: str | Path) -> Path:
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


@train_app.command("generator")
def train_generator(
    config: Path = typer.Option(DEFAULT_CONFIG, help="YAML with model/train sections"),
    max_steps: int = typer.Option(0, help="stop after this many more steps (0: run to total_steps)"),
    fresh: bool = typer.Option(False, help="ignore an existing work checkpoint and start over"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    max_minutes: float = typer.Option(0.0, help="stop (with a checkpoint) after this much wall time (0: no limit)"),
    init_from: Path = typer.Option(None, "--init-from", help="weights to start a new run from (default: the config's init_from)"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Train the crystal diffusion model on the pool's train split (resumes from work_dir/last.pt).

    A new run (no work checkpoint, or --fresh) starts from random weights, or from trained weights
    (--init-from or the config's ``init_from``: e.g. the shipped model, to fine-tune it into a different
    type process without re-learning lattices and coordinates).
    """
    import torch

    from tessera.generators.crystal import LatticeCoder
    from tessera.generators.model import DiffusionModel, ModelConfig, load_weights
    from tessera.generators.training import CrystalArrays, Trainer, TrainConfig, warm_start
    from tessera.tools.pool import pool_hash

    torch.set_num_threads(threads)
    cfg = load_generator_config(config)
    work_dir = _repo_path(cfg.get("work_dir", "data/checkpoints/work"))
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
    coder = LatticeCoder.fit(
        lattice=torch.as_tensor(np.stack(tr_l)), n_atoms=torch.tensor([len(z) for z in tr_z])
    )
    err_console.print(f"data: {len(train)} train, {len(val)} val crystals, {len(vocab)} elements ({time.time() - t0:.0f} s)")

    torch.manual_seed(tcfg.seed)
    model = DiffusionModel.create(config=mcfg, coder=coder, vocab=vocab, n_atoms_prior=prior)
    trainer = Trainer(
        model=model, config=tcfg, train=train, val=val, work_dir=work_dir,
        extra_meta={"pool_hash": pool_hash(), "data_split": "train", "val_split": "val"},
    )
    log_path = work_dir / "train_log.jsonl"
    if fresh:
        for p in (trainer.ckpt_path, trainer.best_path, log_path):
            p.unlink(missing_ok=True)
    resumed = not fresh and trainer.load_checkpoint()
    if resumed:
        err_console.print(f"resumed at step {trainer.step}")
    else:
        source_path = init_from or cfg.get("init_from")
        if source_path:
            source_path = _repo_path(source_path)
            if not source_path.exists():
                raise InputError(f"--init-from: no weights at {source_path}")
            fresh_params = warm_start(model, load_weights(source_path))
            trainer.reset_ema()
            trainer.extra_meta["init_from"] = repo_relative(source_path)
            trainer.extra_meta["lineage"] = training_lineage(source_path)
            err_console.print(f"initialised from {source_path} ({len(fresh_params)} tensors left fresh: {fresh_params})")
    n_params = sum(p.numel() for p in model.net.parameters())
    err_console.print(f"model: {n_params / 1e6:.2f} M parameters; {trainer.steps_per_epoch} steps/epoch")
    last = None
    with open(log_path, "a") as fh:
        deadline = time.time() + 60.0 * max_minutes if max_minutes > 0 else None
        for log in trainer.iter_steps(max_steps=max_steps or None, deadline=deadline):
            last = log
            if log.val is not None or log.step % tcfg.log_every == 0:
                rec = {k: v for k, v in log.__dict__.items()}
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                if not json_out:
                    msg = (f"step {log.step} loss {log.loss:.4f} (L {log.loss_lattice:.4f} F {log.loss_frac:.4f} "
                           f"A {log.loss_type:.4f}) lr {log.lr:.2e} {log.elapsed_s:.0f} s")
                    if log.val:
                        msg += " | " + " ".join(f"{k} {v:.4f}" for k, v in log.val.items())
                    err_console.print(msg, highlight=False)
    result = {"step": trainer.step, "best_val": trainer.best_val, "work_dir": str(work_dir),
              "best_checkpoint": str(trainer.best_path), "last": last.__dict__ if last else None}
    if json_out:
        emit_json(result)
    else:
        err_console.print(f"done at step {trainer.step}; best val loss {trainer.best_val:.4f}")


SHIPPED_CHECKPOINT = REPO_ROOT / "data" / "checkpoints" / "generator.pt"
SAMPLER_CONFIG = CONFIG_DIR / "sampler.yaml"


def parse_elements(text: str, vocab: list[int]) -> list[int]:
    """'Li,Co,O' -> vocabulary indices; one clear error for an unknown or unsupported element."""
    from pymatgen.core import Element

    idx = []
    for sym in [s.strip() for s in text.split(",") if s.strip()]:
        try:
            z = Element(sym).Z
        except ValueError:
            raise InputError(f"--elements: {sym!r} is not an element symbol") from None
        if z not in vocab:
            raise InputError(f"--elements: {sym} does not occur in the training data, the model cannot place it")
        idx.append(vocab.index(z))
    if not idx:
        raise InputError("--elements: no element given")
    return idx


@app.command("sample")
def sample_cmd(
    out: Path = typer.Option(..., "--out", help="output directory (candidates.jsonl + one CIF per crystal)"),
    n: int = typer.Option(16, "--n", min=1, help="number of crystals"),
    atoms: int = typer.Option(0, "--atoms", min=0, help="atoms per cell (0: draw from the training prior)"),
    elements: str = typer.Option("", "--elements", help="restrict atom types, e.g. Li,Co,O"),
    n_elements: int = typer.Option(0, "--n-elements", min=0,
                                   help="distinct elements per crystal, e.g. 3 for ternaries (0: drawn from the data)"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same crystals)"),
    checkpoint: Path = typer.Option(SHIPPED_CHECKPOINT, "--checkpoint", help="weights file (default: shipped)"),
    steps: int = typer.Option(0, "--steps", min=0, help="reverse steps (0: configs/sampler.yaml)"),
    sampler_config: Path = typer.Option(SAMPLER_CONFIG, "--sampler-config", help="sampler YAML"),
    settings: list[str] = typer.Option([], "--set", help="override a sampler setting, e.g. --set type_resample=1 "
                                       "(repeatable; YAML values; see configs/sampler.yaml)"),
    threads: int = typer.Option(2, help="torch CPU threads"),
    store: str = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the run in a store"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Sample crystals with the trained diffusion model, offline; record the run in the store."""
    summary, _ = sample_to_folder(out=out, n=n, seed=seed, atoms=atoms, elements=elements, n_elements=n_elements,
                                  checkpoint=checkpoint, steps=steps, sampler_config=sampler_config, threads=threads,
                                  store=store, no_store=no_store, settings=settings)
    if json_out:
        emit_json(summary)
    else:
        err_console.print(f"wrote {summary['n']} crystals to {out} ({summary['crystals_per_s']:.2f} crystals/s)")


def sample_to_folder(
    *,
    out: Path,
    n: int,
    seed: int,
    atoms: int = 0,
    elements: str = "",
    n_elements: int = 0,
    checkpoint: Path = SHIPPED_CHECKPOINT,
    steps: int = 0,
    sampler_config: Path = SAMPLER_CONFIG,
    threads: int = 2,
    store: str | None = None,
    no_store: bool = False,
    settings: Sequence[str] = (),
) -> tuple[dict[str, Any], list[Path]]:
    """Sample ``n`` crystals into ``out`` (candidates.jsonl + one CIF each), recording a ``sample`` run.

    n_elements: distinct elements per crystal (0: drawn from the train split's statistics); capped by the
    atom count and by ``elements``. settings: "KEY=VALUE" overrides of the sampler YAML. Returns the summary
    (n, seconds, crystals_per_s, seed, checkpoint, run_id, ...) and this run's CIF paths (in sample order; other files already in ``out`` are not among
    them). Bad options exit with one clear line (``fail``).
    """
    import torch

    from tessera.agents.recording import finish_sample_run, open_sample_run
    from tessera.generators.convert import to_structures
    from tessera.generators.model import load_weights
    from tessera.generators.sampler import Sampler, SamplerConfig, can_fix_n_elements, parse_overrides, sample_many
    from tessera.tools.candidate import Candidate

    torch.set_num_threads(threads)
    if not checkpoint.exists():
        fail(f"checkpoint not found: {checkpoint}")
    if not sampler_config.exists():
        fail(f"sampler config not found: {sampler_config}")
    scfg = yaml.safe_load(sampler_config.read_text()) or {}
    batch_size = int(scfg.pop("batch_size", 128))
    if steps:
        scfg["num_steps"] = steps
    try:
        overrides = parse_overrides(settings)
        batch_size = int(overrides.pop("batch_size", batch_size))
        config = SamplerConfig.from_dict({**scfg, **overrides})
    except (ValueError, TypeError) as exc:
        fail(f"--set: {exc}")
    model = load_weights(checkpoint)
    try:
        Sampler(model=model, config=config)  # checks the settings against this checkpoint before any work
    except ValueError as exc:
        fail(f"sampler settings: {exc}")
    allowed = parse_elements(elements, model.vocab) if elements else None
    if n_elements and not can_fix_n_elements(model):
        fail(f"--n-elements: checkpoint {checkpoint.name} has neither an element-count condition nor masked types")
    if n_elements and allowed is not None and n_elements > len(set(allowed)):
        err_console.print(f"warning: --n-elements {n_elements} but only {len(set(allowed))} elements allowed; capped")
    if atoms > len(model.n_atoms_prior):
        err_console.print(f"warning: {atoms} atoms is beyond the training range (<= {len(model.n_atoms_prior)})")
    ckpt_name = repo_relative(checkpoint)
    run_params = {"n": n, "atoms": atoms or None, "elements": elements or None, "n_elements": n_elements or None,
                  "seed": seed, "checkpoint": ckpt_name,
                  "batch_size": batch_size, "sampler": config.__dict__, "out": str(out)}
    run = None if no_store else open_sample_run(store, run_params, checkpoint=checkpoint, seed=seed)
    with run if run is not None else nullcontext():
        t0 = time.perf_counter()
        batches = sample_many(model=model, config=config, n=n, seed=seed, batch_size=batch_size,
                              n_atoms=atoms or None, allowed_types=allowed, n_elements=n_elements or None)
        seconds = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        structures = [s for batch in batches for s in to_structures(batch, model.vocab)]
        candidates = [
            Candidate.from_structure(s, id=f"gen-s{seed}-{i:05d}", source=f"sample:{ckpt_name}",
                                     provenance={"seed": seed, "index": i, "checkpoint": ckpt_name})
            for i, s in enumerate(structures)
        ]
        cif_paths = [out / f"{c.id}.cif" for c in candidates]
        with open(out / "candidates.jsonl", "w") as fh:
            for i, (c, s, path) in enumerate(zip(candidates, structures, cif_paths)):
                path.write_text(c.cif or "")
                fh.write(json.dumps({
                    "id": c.id, "formula": c.formula, "n_atoms": c.n_atoms, "cif": c.cif, "seed": seed, "index": i,
                    "checkpoint": ckpt_name, "volume_per_atom": s.volume / len(s),
                    "elements_allowed": elements or None, "n_elements_asked": n_elements or None,
                    "sampler": config.__dict__,
                }) + "\n")
        summary = {"n": len(candidates), "out": str(out), "seconds": seconds,
                   "crystals_per_s": len(candidates) / seconds, "seed": seed, "checkpoint": ckpt_name,
                   "batch_size": batch_size, "sampler": config.__dict__}
        if run is not None:
            summary["run_id"] = finish_sample_run(run, candidates, summary, seconds=seconds)
    return summary, cif_paths


def training_lineage(source: Path) -> list[dict[str, Any]]:
    """The training stages behind warm-start weights, oldest first, from their JSON (when there is one).

    Each stage keeps what reproduces it: its config, step count, metrics, data hash and the sha256 of the
    weights it started from; a model fine-tuned three times carries three entries plus its own run.
    """
    from tessera.store.provenance import file_sha256

    meta_path = source.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    stage = {k: meta[k] for k in ("init_from", "step", "metrics", "train_config", "pool_hash") if k in meta}
    stage["weights_sha256"] = file_sha256(source)
    stage["model_config"] = meta.get("model_config")
    return [*meta.get("lineage", []), stage]


@train_app.command("ship-generator")
def ship_generator(
    source: Path = typer.Option(None, "--from", help="weights to ship (default: work_dir/best_ema.pt)"),
    config: Path = typer.Option(DEFAULT_CONFIG, help="YAML with model/train sections"),
    n_check: int = typer.Option(64, help="crystals sampled to record quick sample statistics"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Copy EMA weights (no optimiser state) to data/checkpoints/ with a JSON of config, pool hash, step, metrics."""
    import shutil

    import torch

    from tessera.generators.convert import to_structures
    from tessera.generators.model import load_weights
    from tessera.generators.sampler import SamplerConfig, sample_many
    from tessera.tools.measures import is_compositionally_valid, is_structurally_valid

    cfg = load_generator_config(config)
    src = source or _repo_path(cfg.get("work_dir", "data/checkpoints/work")) / "best_ema.pt"
    dst = _repo_path(cfg.get("shipped", "data/checkpoints/generator.pt"))
    if not src.exists():
        fail(f"no weights to ship at {src}")
    meta_src = src.with_suffix(".json")
    meta = json.loads(meta_src.read_text()) if meta_src.exists() else {}
    model = load_weights(src)
    torch.set_num_threads(2)
    scfg = yaml.safe_load(SAMPLER_CONFIG.read_text()) or {}
    scfg.pop("batch_size", None)
    t0 = time.perf_counter()
    batches = sample_many(model=model, config=SamplerConfig.from_dict(scfg), n=n_check, seed=0)
    seconds = time.perf_counter() - t0
    structures = [s for b in batches for s in to_structures(b, model.vocab)]
    vpa = np.array([s.volume / len(s) for s in structures])
    check = {
        "n": len(structures), "seed": 0, "crystals_per_s": len(structures) / seconds,
        "structural_validity": float(np.mean([is_structurally_valid(s) for s in structures])),
        "compositional_validity": float(np.mean([is_compositionally_valid(s) for s in structures])),
        "vol_per_atom_min": float(vpa.min()), "vol_per_atom_median": float(np.median(vpa)), "vol_per_atom_max": float(vpa.max()),
        "n_elements_hist_1to5": np.bincount([len(s.composition.elements) for s in structures], minlength=6)[1:6].tolist(),
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    size_mb = dst.stat().st_size / 1e6
    if size_mb > 25:
        fail(f"{dst} is {size_mb:.1f} MB (> 25 MB limit)")
    record = {**meta, "weights": "EMA", "sampler": scfg, "sample_check": check, "size_mb": size_mb}
    if meta.get("lineage"):
        record["training_steps_total"] = sum(int(st.get("step") or 0) for st in meta["lineage"]) + int(meta.get("step") or 0)
    dst.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    if json_out:
        emit_json({"shipped": str(dst), "step": meta.get("step"), "metrics": meta.get("metrics"), "sample_check": check})
    else:
        err_console.print(f"shipped {src} (step {meta.get('step')}) -> {dst} ({size_mb:.1f} MB); check: {check}")
