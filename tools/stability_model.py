"""The stability model: from an UNRELAXED structure, predict its CHGNet-relaxed E_hull and P(stable).

What it sees (:func:`featurize`, one CHGNet 0.3.0 energy-only forward pass per structure, batched): CHGNet's
64-dimensional crystal feature (the mean of the last layer's atom features), and seven scalars: the single-point
energy per atom (eV/atom, uncorrected), the single-point E_hull estimate the prescreen's ``ehull`` stage gates on
(eV/atom, clipped to [-1, 5]), the smallest d_ij / (r_i + r_j) (covalent radii, capped at 1) and SCIGEN's space
occupation ratio (the prescreen's geometry numbers), log(n atoms), volume per atom (A^3) and the number of
elements. Shape ``(n, 71)``, float32; :data:`FEATURE_NAMES` names the columns. Forces and stress were left out on
purpose: the backward pass costs about 4x the energy-only pass (0.5 vs 0.13 CPU-s per structure measured here).

What it predicts (:class:`StabilityNet`, a small torch MLP with two heads): the relaxed E_hull (eV/atom, trained on
labels clipped to [-0.5, 1.5] with a Huber loss) and the logit of P(E_hull <= 0.1 eV/atom) (binary
cross-entropy). The stability call is P >= 0.5.

Versions live in a folder (default ``data/stability/``)::

    heldout.npz      the FIXED held-out set every version is measured on (generated crystals, one seed)
    train.npz        the base training set (features, labels, source of each row)
    v001/            model.pt (weights + settings), metrics.json (held-out metrics), lineage.json
                     (parent, data sources and counts, seed), added.npz (rows this version added, if any)

The promotion rule (:class:`Registry`): a new version is promoted when it beats its parent (the version that was
promoted when it was trained) on the held-out set: higher F1 at 0.1 eV/atom, ties broken by lower MAE. A worse
version is kept, not promoted; the prescreen uses the newest promoted version.

Active learning (:func:`learn_from`): relaxed candidates become labelled rows (their own ``e_hull``), the model is
fine-tuned from the promoted version on the base set plus every row added along its lineage plus the new ones,
measured on the held-out set and promoted if better. No UI; seconds to a minute per round.

Labels are CHGNet-level (relaxed with CHGNet 0.3.0, placed on the shipped reference hull), except WBM rows in the
base set whose label is the DFT formation energy placed on the same hull (``data/build_stability_data.py``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure

from tessera.tools.errors import DataError, InputError
from tessera.tools.measures import STABLE_E_HULL
from tessera.tools.paths import DATA_DIR, repo_relative

if TYPE_CHECKING:
    import torch

    from tessera.tools.candidate import Candidate

STABILITY_DIR: Path = DATA_DIR / "stability"
CRYSTAL_DIM = 64
SCALAR_NAMES: tuple[str, ...] = (
    "energy_per_atom", "e_hull_single_point", "min_distance_ratio", "space_occupation", "log_n_atoms",
    "volume_per_atom", "n_elements",
)
FEATURE_NAMES: tuple[str, ...] = tuple(f"crystal_fea_{k}" for k in range(CRYSTAL_DIM)) + SCALAR_NAMES
N_FEATURES = len(FEATURE_NAMES)
SP_COLUMN = FEATURE_NAMES.index("e_hull_single_point")
FEATURE_SPEC = "chgnet-0.3.0 crystal_fea(64) + 7 scalars, v1"
LABEL_CLIP = (-0.5, 1.5)
SP_CLIP = (-1.0, 5.0)
CALL_PROBABILITY = 0.5

EhullFn = Callable[[Structure, float], float]


# ---------------------------------------------------------------------------------------------- features


@dataclass
class FeatureBatch:
    """Features of a batch. ``x``: (n, 71) float32 (rows of failures are NaN); ``errors[i]`` says why row i failed."""

    x: np.ndarray
    errors: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        """(n,) bool: rows with every feature finite."""
        return np.isfinite(self.x).all(axis=1) if len(self.x) else np.zeros(0, dtype=bool)


def _scalars(structure: Structure, energy: float, e_hull_sp: float) -> list[float]:
    from tessera.tools.geometry import min_distance_ratio, space_occupation_ratio

    n = len(structure)
    ratio = min_distance_ratio(structure)[0]
    return [
        float(energy),
        float(np.clip(e_hull_sp, *SP_CLIP)),
        float(min(ratio, 1.0)),
        float(min(space_occupation_ratio(structure), 5.0)),
        float(np.log(max(n, 1))),
        float(min(abs(structure.volume) / max(n, 1), 200.0)),
        float(len(structure.composition.elements)),
    ]


def featurize(
    structures: Sequence[Structure],
    *,
    ehull_fn: EhullFn | None = None,
    batch_size: int = 16,
    threads: int | None = 1,
) -> FeatureBatch:
    """CHGNet 0.3.0 features of unrelaxed structures (one batched energy-only forward pass).

    ``ehull_fn(structure, energy_per_atom) -> eV/atom`` places the single-point energy on the reference hull
    (default: the configured :class:`tools.hull.ReferenceHull`). A structure CHGNet or the hull cannot handle
    gets a NaN row and its reason; the batch goes on.
    """
    n = len(structures)
    x = np.full((n, N_FEATURES), np.nan, dtype=np.float32)
    errors: list[str | None] = [None] * n
    if n == 0:
        return FeatureBatch(x=x, errors=errors)
    if ehull_fn is None:
        from tessera.tools.hull import ReferenceHull

        ehull_fn = ReferenceHull.default().ehull_fn()
    from tessera.tools.relax import compute_threads, load_chgnet, quiet_chgnet

    net = load_chgnet()

    def one_chunk(chunk: list[Structure]) -> list[dict[str, Any]]:
        preds = net.predict_structure(chunk, task="e", return_crystal_feas=True, batch_size=len(chunk))
        return preds if isinstance(preds, list) else [preds]

    with compute_threads(threads), quiet_chgnet():
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            try:
                preds: list[dict[str, Any] | None] = list(one_chunk([structures[i] for i in idx]))
            except (RuntimeError, ValueError, IndexError, TypeError):
                # One bad structure spoils a batched graph: evaluate this chunk one by one.
                preds = []
                for i in idx:
                    try:
                        preds.append(one_chunk([structures[i]])[0])
                    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                        preds.append(None)
                        errors[i] = f"CHGNet could not evaluate the structure: {type(exc).__name__}: {exc}"
            for i, p in zip(idx, preds):
                if p is None:
                    continue
                energy = float(np.asarray(p["e"]).reshape(-1)[0])
                if not math.isfinite(energy):
                    errors[i] = "CHGNet energy is not finite"
                    continue
                try:
                    e_hull_sp = float(ehull_fn(structures[i], energy))
                except Exception as exc:  # noqa: BLE001 - the hull's failure is this structure's reason
                    errors[i] = f"E_hull estimate failed: {type(exc).__name__}: {exc}"
                    continue
                if not math.isfinite(e_hull_sp):
                    errors[i] = "E_hull estimate is not finite"
                    continue
                crystal = np.asarray(p["crystal_fea"], dtype=np.float64).reshape(-1)[:CRYSTAL_DIM]
                row = np.concatenate([crystal, _scalars(structures[i], energy, e_hull_sp)])
                if not np.isfinite(row).all():
                    errors[i] = "CHGNet features are not finite"
                    continue
                x[i] = row.astype(np.float32)
    return FeatureBatch(x=x, errors=errors)


# ---------------------------------------------------------------------------------------------- model


class TrainParams(BaseModel):
    """How a version is trained (echoed into its lineage)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(64, ge=4, description="width of each hidden layer")
    depth: int = Field(2, ge=1, le=6, description="hidden layers")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(300, ge=1, description="passes over the training rows (from scratch)")
    finetune_epochs: int = Field(120, ge=1, description="passes when fine-tuning from a parent")
    lr: float = Field(3e-3, gt=0)
    finetune_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(128, ge=8)
    huber_beta: float = Field(0.1, gt=0, description="eV/atom, Huber transition of the E_hull loss")
    cls_weight: float = Field(0.5, ge=0, description="weight of the stable/unstable cross-entropy")
    source_weights: dict[str, float] = Field(
        default_factory=lambda: {"generated": 3.0, "wbm": 1.0, "pool": 0.5, "pyxtal": 2.0},
        description="loss weight of a row by its source (generated rows are the target distribution)",
    )
    threshold: float = Field(STABLE_E_HULL, description="eV/atom: the stability call's E_hull threshold")
    seed: int = 0


def _torch():
    import torch

    return torch


def _build_net(params: TrainParams, n_in: int = N_FEATURES) -> "torch.nn.Module":
    torch = _torch()
    nn = torch.nn

    class StabilityNet(nn.Module):
        """Standardise -> MLP -> (E_hull in eV/atom, logit of P(E_hull <= threshold)). Input (n, 71)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(n_in))
            self.register_buffer("scale", torch.ones(n_in))
            layers: list[nn.Module] = []
            width = n_in
            for _ in range(params.depth):
                layers += [nn.Linear(width, params.hidden), nn.SiLU(), nn.Dropout(params.dropout)]
                width = params.hidden
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(width, 2)
            # The single-point estimate is the strongest single feature: give it a direct path to the E_hull head.
            self.skip = nn.Linear(1, 1)

        def forward(self, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
            z = (x - self.mean) / self.scale
            out = self.head(self.body(z))
            e_hull = out[:, 0] + self.skip(x[:, SP_COLUMN:SP_COLUMN + 1]).squeeze(1)
            return e_hull, out[:, 1]

    return StabilityNet()


class StabilityModel:
    """A trained version: weights, settings, and where it came from. ``predict`` takes features (n, 71)."""

    def __init__(self, *, net: "torch.nn.Module", params: TrainParams, name: str = "unsaved") -> None:
        self.net = net
        self.params = params
        self.name = name

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted relaxed E_hull in eV/atom, P(stable at the threshold)), each (n,); NaN rows give NaN."""
        torch = _torch()
        x = np.asarray(x, dtype=np.float32).reshape(-1, N_FEATURES)
        e = np.full(len(x), np.nan)
        p = np.full(len(x), np.nan)
        ok = np.isfinite(x).all(axis=1)
        if ok.any():
            self.net.eval()
            with torch.no_grad():
                eh, logit = self.net(torch.from_numpy(x[ok]))
            e[ok] = eh.double().numpy()
            p[ok] = torch.sigmoid(logit).double().numpy()
        return e, p

    def predict_structures(self, structures: Sequence[Structure], *, ehull_fn: EhullFn | None = None,
                           threads: int | None = 1) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """Featurize then predict: (E_hull, P(stable), error per structure)."""
        feats = featurize(structures, ehull_fn=ehull_fn, threads=threads)
        e, p = self.predict(feats.x)
        return e, p, feats.errors

    def state(self) -> dict[str, Any]:
        return {"state_dict": self.net.state_dict(), "params": self.params.model_dump(), "feature_spec": FEATURE_SPEC,
                "n_features": N_FEATURES}

    def save(self, path: Path) -> None:
        torch = _torch()
        torch.save(self.state(), path)

    @classmethod
    def load(cls, path: Path, *, name: str | None = None) -> "StabilityModel":
        torch = _torch()
        if not path.exists():
            raise DataError(f"{repo_relative(path)}: no stability model weights")
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if blob.get("feature_spec") != FEATURE_SPEC:
            raise DataError(f"{repo_relative(path)}: features '{blob.get('feature_spec')}' differ from '{FEATURE_SPEC}'")
        params = TrainParams.model_validate(blob["params"])
        net = _build_net(params, int(blob["n_features"]))
        net.load_state_dict(blob["state_dict"])
        net.eval()
        return cls(net=net, params=params, name=name or path.parent.name)


# ---------------------------------------------------------------------------------------------- data


@dataclass
class LabelledSet:
    """Rows of features with relaxed E_hull labels (eV/atom). ``source``: generated | wbm | pool | pyxtal."""

    x: np.ndarray                 # (n, 71) float32
    y: np.ndarray                 # (n,) float64, eV/atom
    source: np.ndarray            # (n,) str
    ids: np.ndarray               # (n,) str, a stable key per row (structure_key of the initial CIF, or an id)

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls) -> "LabelledSet":
        return cls(x=np.zeros((0, N_FEATURES), np.float32), y=np.zeros(0), source=np.zeros(0, dtype="<U16"),
                   ids=np.zeros(0, dtype="<U80"))

    @classmethod
    def concat(cls, parts: Iterable["LabelledSet"]) -> "LabelledSet":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(x=np.concatenate([p.x for p in parts]).astype(np.float32), y=np.concatenate([p.y for p in parts]),
                   source=np.concatenate([p.source.astype(str) for p in parts]),
                   ids=np.concatenate([p.ids.astype(str) for p in parts]))

    def finite(self) -> "LabelledSet":
        keep = np.isfinite(self.x).all(axis=1) & np.isfinite(self.y)
        return self.subset(keep)

    def subset(self, keep: np.ndarray) -> "LabelledSet":
        return LabelledSet(x=self.x[keep], y=self.y[keep], source=self.source[keep], ids=self.ids[keep])

    def save(self, path: Path, **extra: np.ndarray) -> None:
        np.savez_compressed(path, x=self.x.astype(np.float32), y=self.y.astype(np.float64),
                            source=self.source.astype(str), ids=self.ids.astype(str), **extra)

    @classmethod
    def load(cls, path: Path) -> "LabelledSet":
        if not path.exists():
            raise DataError(f"{repo_relative(path)}: no such stability data file")
        with np.load(path, allow_pickle=False) as z:
            return cls(x=z["x"].astype(np.float32), y=z["y"].astype(np.float64), source=z["source"].astype(str),
                       ids=z["ids"].astype(str))


def load_extra(path: Path, key: str) -> np.ndarray | None:
    """An extra column saved beside a set (e.g. the held-out set's relax_seconds), or None."""
    with np.load(path, allow_pickle=False) as z:
        return z[key] if key in z.files else None


# ---------------------------------------------------------------------------------------------- metrics


class StabilityMetrics(BaseModel):
    """The stability call (predicted stable vs relaxed E_hull <= threshold) on a labelled set."""

    model_config = ConfigDict(extra="forbid")

    n: int
    n_stable: int = Field(description="rows whose label is <= threshold")
    threshold: float
    precision: float
    recall: float
    f1: float
    mae: float = Field(description="eV/atom, |predicted - label| with labels clipped to [-0.5, 1.5]")
    tp: int
    fp: int
    fn: int
    tn: int


def classification_metrics(pred_stable: np.ndarray, y: np.ndarray, *, threshold: float = STABLE_E_HULL,
                           e_pred: np.ndarray | None = None) -> StabilityMetrics:
    """Precision, recall, F1 of a boolean call against labels (eV/atom); MAE when ``e_pred`` is given."""
    truth = np.asarray(y) <= threshold + 1e-12
    pred = np.asarray(pred_stable, dtype=bool)
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    tn = int((~pred & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    mae = float("nan")
    if e_pred is not None and len(y):
        mae = float(np.mean(np.abs(np.asarray(e_pred) - np.clip(y, *LABEL_CLIP))))
    return StabilityMetrics(n=len(truth), n_stable=int(truth.sum()), threshold=threshold, precision=precision,
                            recall=recall, f1=f1, mae=mae, tp=tp, fp=fp, fn=fn, tn=tn)


def evaluate_model(model: StabilityModel, data: LabelledSet) -> StabilityMetrics:
    """The model's stability call (P >= 0.5) and E_hull MAE on the labelled rows of ``data``."""
    data = data.finite()
    e, p = model.predict(data.x)
    return classification_metrics(p >= CALL_PROBABILITY, data.y, threshold=model.params.threshold, e_pred=e)


def beats(new: StabilityMetrics, old: StabilityMetrics | None) -> bool:
    """The promotion rule: higher F1 at the threshold; equal F1 (within 1e-9) and lower MAE."""
    if old is None:
        return True
    if new.f1 > old.f1 + 1e-9:
        return True
    return abs(new.f1 - old.f1) <= 1e-9 and new.mae < old.mae


# ---------------------------------------------------------------------------------------------- training


def _seed_everything(seed: int) -> None:
    torch = _torch()
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def train(
    data: LabelledSet,
    *,
    params: TrainParams | None = None,
    parent: StabilityModel | None = None,
    threads: int | None = 1,
) -> StabilityModel:
    """Train a version on ``data`` (from scratch, or fine-tuned from ``parent``); deterministic for a seed.

    Fine-tuning keeps the parent's standardisation (its feature mean and scale) and uses ``finetune_epochs`` and
    ``finetune_lr``.
    """
    torch = _torch()
    from tessera.tools.relax import compute_threads

    params = params or (parent.params if parent is not None else TrainParams())
    data = data.finite()
    if len(data) < 8:
        raise InputError(f"{len(data)} labelled rows with finite features: too few to train a stability model")
    with compute_threads(threads):
        _seed_everything(params.seed)
        net = _build_net(params)
        if parent is not None:
            net.load_state_dict(parent.net.state_dict())
            epochs, lr = params.finetune_epochs, params.finetune_lr
        else:
            mean = data.x.astype(np.float64).mean(axis=0)
            scale = data.x.astype(np.float64).std(axis=0)
            scale[scale < 1e-6] = 1.0
            net.mean.copy_(torch.from_numpy(mean).float())
            net.scale.copy_(torch.from_numpy(scale).float())
            epochs, lr = params.epochs, params.lr
        x = torch.from_numpy(data.x)
        y = torch.from_numpy(np.clip(data.y, *LABEL_CLIP)).float()
        stable = torch.from_numpy((data.y <= params.threshold).astype(np.float32))
        w_np = np.array([params.source_weights.get(str(s), 1.0) for s in data.source], dtype=np.float32)
        w = torch.from_numpy(w_np / w_np.mean())
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=params.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        gen = torch.Generator().manual_seed(params.seed)
        n = len(y)
        huber = torch.nn.SmoothL1Loss(reduction="none", beta=params.huber_beta)
        bce = torch.nn.BCEWithLogitsLoss(reduction="none")
        net.train()
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, params.batch_size):
                b = order[start:start + params.batch_size]
                e_pred, logit = net(x[b])
                loss = (w[b] * (huber(e_pred, y[b]) / params.huber_beta
                                + params.cls_weight * bce(logit, stable[b]))).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
        net.eval()
    return StabilityModel(net=net, params=params)


# ---------------------------------------------------------------------------------------------- versions


class Lineage(BaseModel):
    """Where a version came from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parent: str | None = None
    created: str
    feature_spec: str = FEATURE_SPEC
    data_sources: dict[str, int] = Field(default_factory=dict, description="source -> rows used in training")
    n_train: int = 0
    fine_tuned: bool = Field(False, description="fine-tuned from its parent (learn_from), not trained from scratch")
    n_added: int = Field(0, description="rows this version added (active learning)")
    added_note: str | None = None
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0


class VersionRecord(BaseModel):
    """metrics.json of a version: its held-out metrics, its parent's, and the promotion decision."""

    model_config = ConfigDict(extra="forbid")

    name: str
    heldout: StabilityMetrics
    parent: str | None = None
    parent_heldout: StabilityMetrics | None = None
    promoted: bool
    rule: str = "promoted when F1 at the threshold on the fixed held-out set beats the parent's (tie: lower MAE)"
    heldout_file: str = "heldout.npz"
    heldout_n: int = 0


@dataclass
class StabilityVersion:
    """A saved version: its folder, model, metrics and lineage."""

    name: str
    path: Path
    record: VersionRecord
    lineage: Lineage

    @property
    def promoted(self) -> bool:
        return self.record.promoted

    def model(self) -> StabilityModel:
        return StabilityModel.load(self.path / "model.pt", name=self.name)


class Registry:
    """The versions in a folder (default ``data/stability/``), the fixed held-out set and the base training set."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else STABILITY_DIR

    @property
    def heldout_path(self) -> Path:
        return self.root / "heldout.npz"

    @property
    def train_path(self) -> Path:
        return self.root / "train.npz"

    def heldout(self) -> LabelledSet:
        return LabelledSet.load(self.heldout_path)

    def base_train(self) -> LabelledSet:
        return LabelledSet.load(self.train_path) if self.train_path.exists() else LabelledSet.empty()

    def versions(self) -> list[StabilityVersion]:
        """Every saved version, oldest first (by name: v001, v002, ...)."""
        out: list[StabilityVersion] = []
        if not self.root.exists():
            return out
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("v")):
            if (d / "metrics.json").exists() and (d / "lineage.json").exists() and (d / "model.pt").exists():
                out.append(StabilityVersion(
                    name=d.name, path=d,
                    record=VersionRecord.model_validate_json((d / "metrics.json").read_text()),
                    lineage=Lineage.model_validate_json((d / "lineage.json").read_text()),
                ))
        return out

    def version(self, name: str) -> StabilityVersion:
        for v in self.versions():
            if v.name == name:
                return v
        raise InputError(f"no stability model version '{name}' in {repo_relative(self.root)}")

    def promoted(self) -> StabilityVersion | None:
        """The newest promoted version (the one the prescreen uses), or None."""
        good = [v for v in self.versions() if v.promoted]
        return good[-1] if good else None

    def resolve(self, name: str = "promoted") -> StabilityVersion:
        """``promoted`` (the newest promoted version), ``latest`` (newest of all), or a version name."""
        if name == "promoted":
            v = self.promoted()
            if v is None:
                raise DataError(f"no promoted stability model in {repo_relative(self.root)}")
            return v
        if name == "latest":
            vs = self.versions()
            if not vs:
                raise DataError(f"no stability model in {repo_relative(self.root)}")
            return vs[-1]
        return self.version(name)

    def next_name(self) -> str:
        nums = [int(v.name[1:]) for v in self.versions() if v.name[1:].isdigit()]
        return f"v{(max(nums) + 1) if nums else 1:03d}"

    def added_along(self, version: StabilityVersion | None) -> LabelledSet:
        """Every row added by ``version`` and the ancestors it was fine-tuned from (the active-learning memory).

        The walk stops at a version trained from scratch: it saw the base set only, not its parent's additions.
        """
        parts: list[LabelledSet] = []
        seen: set[str] = set()
        by_name = {v.name: v for v in self.versions()}
        while version is not None and version.name not in seen:
            seen.add(version.name)
            added = version.path / "added.npz"
            if added.exists():
                parts.append(LabelledSet.load(added))
            if not version.lineage.fine_tuned:
                break
            version = by_name.get(version.lineage.parent) if version.lineage.parent else None
        return LabelledSet.concat(reversed(parts))

    def save_version(
        self,
        model: StabilityModel,
        *,
        parent: StabilityVersion | None,
        train_data: LabelledSet,
        added: LabelledSet | None = None,
        added_note: str | None = None,
        seconds: float = 0.0,
        name: str | None = None,
        fine_tuned: bool = False,
    ) -> StabilityVersion:
        """Measure ``model`` on the held-out set, decide promotion against ``parent``, write the version folder."""
        heldout = self.heldout()
        metrics = evaluate_model(model, heldout)
        parent_metrics = parent.record.heldout if parent is not None else None
        name = name or self.next_name()
        path = self.root / name
        if path.exists():
            raise InputError(f"stability model version {name} already exists in {repo_relative(self.root)}")
        path.mkdir(parents=True)
        model.name = name
        model.save(path / "model.pt")
        sources, counts = np.unique(train_data.source.astype(str), return_counts=True)
        lineage = Lineage(
            name=name, parent=parent.name if parent is not None else None,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            data_sources={str(s): int(c) for s, c in zip(sources, counts)}, n_train=len(train_data),
            fine_tuned=fine_tuned, n_added=len(added) if added is not None else 0, added_note=added_note,
            seed=model.params.seed,
            params=model.params.model_dump(), seconds=round(seconds, 2),
        )
        record = VersionRecord(name=name, heldout=metrics, parent=lineage.parent, parent_heldout=parent_metrics,
                               promoted=beats(metrics, parent_metrics), heldout_n=len(heldout))
        if added is not None and len(added):
            added.save(path / "added.npz")
        (path / "lineage.json").write_text(lineage.model_dump_json(indent=2) + "\n")
        (path / "metrics.json").write_text(record.model_dump_json(indent=2) + "\n")
        return StabilityVersion(name=name, path=path, record=record, lineage=lineage)


def train_version(*, root: Path | str | None = None, params: TrainParams | None = None,
                  threads: int | None = 1) -> StabilityVersion:
    """Train from scratch on the base training set of ``root`` and save the next version.

    Its parent is the currently promoted version (if any), so the promotion rule applies to it as to a fine-tune.
    """
    reg = Registry(root)
    t0 = time.perf_counter()
    data = reg.base_train().finite()
    model = train(data, params=params or TrainParams(), threads=threads)
    return reg.save_version(model, parent=reg.promoted(), train_data=data, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- active learning


def label_from_energy(structure: Structure, energy_per_atom: float, *, hull: Any = None) -> float:
    """The label of a relaxed structure: its E_hull (eV/atom) on the shipped reference hull from its CHGNet energy
    per atom (eV/atom, uncorrected), exactly as ``tessera evaluate`` places it (:class:`tools.hull.ReferenceHull`)."""
    if hull is None:
        from tessera.tools.hull import ReferenceHull

        hull = ReferenceHull.default()
    return float(hull.e_hull_value(structure, float(energy_per_atom)))


def labelled_from_candidates(
    candidates: Sequence["Candidate"],
    *,
    ehull_fn: EhullFn | None = None,
    source: str = "generated",
    threads: int | None = 1,
) -> LabelledSet:
    """Relaxed candidates with a finite ``e_hull`` -> rows (features of ``initial_cif``, label ``e_hull``)."""
    from tessera.tools.hashing import structure_key

    use: list[tuple[str, Structure, float]] = []
    for c in candidates:
        if not c.relaxed or c.e_hull is None or not math.isfinite(c.e_hull) or not c.initial_cif:
            continue
        try:
            with warnings.catch_warnings():
                # Our own CIFs: pymatgen's note that it rounded coordinates to ideal values is noise here.
                warnings.filterwarnings("ignore", message="Issues encountered while parsing CIF", category=UserWarning)
                s = Structure.from_str(c.initial_cif, fmt="cif")
        except (ValueError, KeyError, IndexError):
            continue
        use.append((structure_key(c.initial_cif), s, float(c.e_hull)))
    if not use:
        return LabelledSet.empty()
    feats = featurize([s for _, s, _ in use], ehull_fn=ehull_fn, threads=threads)
    out = LabelledSet(x=feats.x, y=np.array([e for _, _, e in use]), source=np.array([source] * len(use)),
                      ids=np.array([k for k, _, _ in use]))
    return out.finite()


def learn_from(
    candidates: Sequence["Candidate"],
    *,
    root: Path | str | None = None,
    ehull_fn: EhullFn | None = None,
    params: TrainParams | None = None,
    min_new: int = 1,
    threads: int | None = 1,
) -> StabilityVersion | None:
    """One active-learning step: add the relaxed candidates as labels, fine-tune, measure, promote if better.

    The new rows are the candidates' unrelaxed structures (``initial_cif``) labelled by their relaxed ``e_hull``;
    rows already in the held-out set, the base set or learned along the promoted lineage are skipped. The model is
    fine-tuned from the promoted version on the base training set + every row added along its lineage + the new
    rows, measured on the fixed held-out set and saved as the next version; it is promoted only if it beats its
    parent there (:func:`beats`).

    Returns:
        The new version (``.promoted`` says whether the prescreen now uses it), or None when fewer than
        ``min_new`` new labelled rows arrived (nothing trained, nothing saved).
    """
    reg = Registry(root)
    t0 = time.perf_counter()
    parent = reg.promoted()
    if parent is None:
        raise DataError(f"no promoted stability model in {repo_relative(reg.root)} to fine-tune")
    new = labelled_from_candidates(candidates, ehull_fn=ehull_fn, threads=threads)
    base = reg.base_train()
    memory = reg.added_along(parent)
    base_ids = set(base.ids.tolist())
    if len(memory):  # a rebuilt base set may already hold rows an earlier round added: count them once
        memory = memory.subset(np.array([i not in base_ids for i in memory.ids], dtype=bool))
    known = set(reg.heldout().ids.tolist()) | set(memory.ids.tolist()) | base_ids
    new = new.subset(np.array([i not in known for i in new.ids], dtype=bool)) if len(new) else new
    if len(new):  # the same crystal twice in one batch counts once
        _, first = np.unique(new.ids, return_index=True)
        new = new.subset(np.sort(first))
    if len(new) < max(min_new, 1):
        return None
    data = LabelledSet.concat([base, memory, new])
    parent_model = parent.model()
    model = train(data, params=params or parent_model.params, parent=parent_model, threads=threads)
    note = f"{len(new)} relaxed candidates ({int((new.y <= model.params.threshold).sum())} stable)"
    return reg.save_version(model, parent=parent, train_data=data, added=new, added_note=note,
                            seconds=time.perf_counter() - t0, fine_tuned=True)


def load_promoted(root: Path | str | None = None, version: str = "promoted") -> StabilityModel:
    """The model the prescreen uses: the newest promoted version (or a named one)."""
    return Registry(root).resolve(version).model()


def predict_candidates(structures: Sequence[Structure], *, model: StabilityModel | None = None,
                       ehull_fn: EhullFn | None = None) -> list[dict[str, float | str | None]]:
    """For notebooks and agents: one dict per structure with ``e_hull_pred``, ``p_stable`` and ``error``."""
    model = model or load_promoted()
    e, p, errors = model.predict_structures(structures, ehull_fn=ehull_fn)
    return [{"e_hull_pred": float(a), "p_stable": float(b), "error": err} for a, b, err in zip(e, p, errors)]


__all__ = [
    "FEATURE_NAMES", "FeatureBatch", "LabelledSet", "Lineage", "Registry", "StabilityMetrics", "StabilityModel",
    "StabilityVersion", "TrainParams", "VersionRecord", "beats", "classification_metrics", "evaluate_model",
    "featurize", "label_from_energy", "labelled_from_candidates", "learn_from", "load_promoted",
    "predict_candidates", "train", "train_version",
]
