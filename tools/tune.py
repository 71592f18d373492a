"""Tuning guidance strengths with Optuna: the job behind ``tessera tune``.

Guidance strengths decide whether steering helps or wrecks the samples, and the right values differ by
constraint. :func:`tune` lets Optuna choose them for one :class:`~tessera.tools.spec.DesignSpec`: the
guidance options (forward strength ``scale``, ``backward_steps``, ``backward_lr``, self-recurrence K,
``every``, ``schedule``), the motif's adaptive-demasking fraction ``release_below`` when the spec has a
motif, and the prescreen's unrelaxed E_hull ceiling. The bounds are ``configs/tune.yaml`` (:class:`TuneSpace`).

Objectives (one trial = one small pilot batch, always sampled with the spec's seed, so trials differ only
in their strengths):

- ``yield`` (default): sample ``pilot`` crystals at ``steps`` reverse steps, gate them with the prescreen
  (the trial's ceiling), relax at most ``relax`` of them best-first in this process (CHGNet), assess them
  (hull, uniqueness, novelty, constraints) and score S.U.N.-C candidates per CPU-second
  (``time.process_time`` over the whole trial: sampling, prescreen, relaxation, assessment). After
  sampling the trial reports its constraint-satisfaction share as an intermediate value; a share below
  ``pruning.min_share`` or below the ``pruning.percentile`` of finished trials prunes it before any
  CHGNet work (no crystal meeting the spec means no S.U.N.-C, whatever relaxation finds).
- ``pareto``: two objectives, no relaxation: the constraint-satisfaction share after sampling (maximised)
  and a stability proxy, the mean unrelaxed CHGNet E_hull estimate of the pilot crystals from the
  prescreen's ``ehull`` stage (minimised; capped at ``proxy_cap``, a crystal CHGNet cannot evaluate counts
  as the cap). The Pareto front is plotted to ``<out>/<study>_pareto.png``.

Studies live in an Optuna RDB storage: by default the SQLite file ``<out>/<study>.sqlite3``; a URL such as
``postgresql://user@host/db`` lets several workers (each on its own machine, each with its own ``seed``)
share one study. A study resumes across processes (``load_if_exists``): a second run adds ``trials`` more
trials; a trial whose process died is retried once (heartbeat). A study remembers the spec and settings
it was made with and refuses to mix in trials of another. Inspect it with optuna-dashboard (a separate
package, not a dependency): ``optuna-dashboard sqlite:///runs/tune/<study>.sqlite3``.

With ``open_run`` the job records a ``tune`` run (each trial as a tool call, the chosen values and the
study summary at the end); with ``save_spec`` it writes the spec with the chosen guidance options (and
``motif.release_below``) as a new, validated spec file. The chosen trial is the best one for ``yield``;
for ``pareto`` the front's trial with the highest share (ties: the lower proxy).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import optuna
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.tools.config import load_config
from tessera.tools.errors import InputError
from tessera.tools.paths import repo_relative
from tessera.tools.runlog import RunOpener
from tessera.tools.sample import SHIPPED_CHECKPOINT
from tessera.tools.spec import DesignSpec, GuidanceOptions, parse_spec

if TYPE_CHECKING:
    from tessera.tools.candidate import Candidate

Objective = Literal["yield", "pareto"]
Schedule = Literal["constant", "increasing", "decreasing"]
DEFAULT_OUT = Path("runs") / "tune"


# ---------------------------------------------------------------------------------------------- search space


class FloatRange(BaseModel):
    """A float parameter's bounds (low = high pins it); ``log`` draws on a log scale (needs low > 0)."""

    model_config = ConfigDict(extra="forbid")

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self

    def clip(self, value: float) -> float:
        return min(max(float(value), self.low), self.high)


class IntRange(BaseModel):
    """An integer parameter's bounds, inclusive (low = high pins it)."""

    model_config = ConfigDict(extra="forbid")

    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        if self.low > self.high:
            raise ValueError(f"low {self.low} > high {self.high}")
        return self

    def clip(self, value: int) -> int:
        return min(max(int(value), self.low), self.high)


class TPEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_startup_trials: int = Field(4, ge=0, description="random trials before TPE models the study")
    enqueue_spec: bool = Field(True, description="a new study's first trial runs the spec's own values (clipped)")


class PruningOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_share: float = Field(0.1, ge=0, le=1, description="prune below this constraint-satisfaction share (0: off)")
    percentile: float | None = Field(25.0, gt=0, lt=100, description="prune a share in the bottom this many "
                                     "percent of the finished trials' shares (None: off)")
    n_startup_trials: int = Field(4, ge=0, description="finished trials before the percentile rule applies")


class TuneSpace(BaseModel):
    """What Optuna may choose, and within which bounds (``configs/tune.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    forward: list[bool] = Field(default_factory=lambda: [False, True], min_length=1,
                                description="forward guidance off and/or on")
    scale: FloatRange = Field(default_factory=lambda: FloatRange(low=0.1, high=2.0, log=True),
                              description="forward strength when forward is on")
    backward_steps: IntRange = Field(default_factory=lambda: IntRange(low=0, high=6))
    backward_lr: FloatRange = Field(default_factory=lambda: FloatRange(low=0.05, high=0.6, log=True))
    recurrence: IntRange = Field(default_factory=lambda: IntRange(low=1, high=4))
    every: IntRange = Field(default_factory=lambda: IntRange(low=1, high=3))
    schedule: list[Schedule] = Field(default_factory=lambda: ["constant", "increasing", "decreasing"], min_length=1)
    release_below: FloatRange = Field(default_factory=lambda: FloatRange(low=0.0, high=0.5))
    ehull_ceiling: FloatRange = Field(default_factory=lambda: FloatRange(low=0.3, high=2.0),
                                      description="eV/atom, the prescreen's unrelaxed E_hull ceiling (yield)")
    sampler: TPEOptions = Field(default_factory=TPEOptions)
    pruning: PruningOptions = Field(default_factory=PruningOptions)
    proxy_cap: float = Field(5.0, gt=0, description="eV/atom, cap of the unrelaxed E_hull estimates (pareto)")

    @model_validator(mode="after")
    def _within_limits(self) -> "TuneSpace":
        # The limits of GuidanceOptions / MotifSpec / the prescreen: a bound outside them would fail mid-study.
        limits: list[tuple[str, float, float, float | None, float | None]] = [
            ("scale", self.scale.low, self.scale.high, 0.0, None),
            ("backward_steps", self.backward_steps.low, self.backward_steps.high, 0, 20),
            ("backward_lr", self.backward_lr.low, self.backward_lr.high, 1e-9, None),
            ("recurrence", self.recurrence.low, self.recurrence.high, 1, 10),
            ("every", self.every.low, self.every.high, 1, None),
            ("release_below", self.release_below.low, self.release_below.high, 0.0, 0.999999),
            ("ehull_ceiling", self.ehull_ceiling.low, self.ehull_ceiling.high, 1e-9, None),
        ]
        for name, low, high, floor, ceil in limits:
            if floor is not None and low < floor:
                raise ValueError(f"{name}: low {low} is below the allowed {floor}")
            if ceil is not None and high > ceil:
                raise ValueError(f"{name}: high {high} is above the allowed {ceil}")
        return self


def load_tune_space(path: str | Path | None = None) -> TuneSpace:
    """The search space from YAML (default ``configs/tune.yaml``; built-in defaults when that file is absent)."""
    return load_config(TuneSpace, "tune", path)


# ---------------------------------------------------------------------------------------------- params, results


class TuneParams(BaseModel):
    """Everything that decides a tuning run; echoed in its result and the audit log."""

    model_config = ConfigDict(extra="forbid")

    spec: DesignSpec = Field(description="the design spec whose strengths are tuned (needs guidance terms or a motif)")
    trials: int = Field(ge=0, description="trials this process adds to the study (0: choose from the study as it is)")
    objective: Objective = Field("yield", description="yield: S.U.N.-C per CPU-second; pareto: share vs stability proxy")
    study: str | None = Field(None, description="study name (default: tune-<objective>-<spec hash>)")
    storage: str | None = Field(None, description="Optuna RDB URL (default: sqlite:///<out>/<study>.sqlite3)")
    out: Path = Field(DEFAULT_OUT, description="folder for the default SQLite file, pilot crystals and the plot")
    pilot: int = Field(8, ge=1, le=256, description="crystals per trial")
    steps: int = Field(100, ge=1, description="reverse sampling steps per trial")
    relax: int = Field(4, ge=0, description="relaxations per trial at most, best-first (yield)")
    relax_steps: int | None = Field(None, ge=1, description="FIRE steps per relaxation (None: configs/relax.yaml)")
    seed: int = Field(0, description="Optuna sampler seed (the pilot crystals use the spec's seed)")
    threads: int = Field(1, ge=1, description="torch threads")
    checkpoint: Path = Field(SHIPPED_CHECKPOINT, description="generator weights")
    space: TuneSpace = Field(default_factory=load_tune_space)
    save_spec: Path | None = Field(None, description="write the spec with the chosen values here (.json or .yaml)")

    def study_name(self) -> str:
        return self.study or f"tune-{self.objective}-{self.spec.spec_hash()[:10]}"

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        return f"sqlite:///{(self.out / f'{self.study_name()}.sqlite3').resolve()}"


class TrialReport(BaseModel):
    """One trial as recorded in the study (its parameters and the user attributes the job set)."""

    model_config = ConfigDict(extra="forbid")

    number: int
    state: str = Field(description="complete, pruned, fail or running")
    params: dict[str, Any]
    values: list[float] | None = Field(None, description="yield: [S.U.N.-C per CPU-s]; pareto: [share, proxy]")
    baseline: bool = Field(False, description="the spec's own values (the study's enqueued first trial)")
    n_pilot: int | None = None
    n_met: int | None = Field(None, description="pilot crystals meeting the spec after sampling")
    share: float | None = Field(None, description="n_met / n_pilot: the intermediate value")
    n_prescreen_passed: int | None = None
    n_relaxed: int | None = None
    n_stable: int | None = None
    n_sun: int | None = None
    n_sun_c: int | None = None
    mean_ehull_estimate: float | None = Field(None, description="eV/atom, capped mean of unrelaxed estimates (pareto)")
    cpu_seconds: float | None = Field(None, description="CPU s of the whole trial (process time)")
    cpu_sample_seconds: float | None = None
    cpu_evaluate_seconds: float | None = None
    wall_seconds: float | None = None
    sun_c_per_cpu_hour: float | None = None


ATTR_KEYS = ("n_pilot", "n_met", "share", "n_prescreen_passed", "n_relaxed", "n_stable", "n_sun", "n_sun_c",
             "mean_ehull_estimate", "cpu_seconds", "cpu_sample_seconds", "cpu_evaluate_seconds", "wall_seconds",
             "sun_c_per_cpu_hour")


class ChosenValues(BaseModel):
    """The values of the chosen trial, in the spec's terms."""

    model_config = ConfigDict(extra="forbid")

    trial: int
    values: list[float]
    params: dict[str, Any] = Field(description="the trial's parameters as Optuna drew them")
    guidance_options: GuidanceOptions | None = Field(None, description="None when the spec has no guidance terms")
    release_below: float | None = Field(None, description="motif specs only")
    ehull_ceiling: float | None = Field(None, description="eV/atom, yield only (configs/prescreen.yaml ehull.ceiling)")


class TuneResult(BaseModel):
    """What :func:`tune` did, echoing its parameters."""

    model_config = ConfigDict(extra="forbid")

    params: TuneParams
    study: str
    storage: str = Field(description="the storage URL, password hidden")
    dashboard: str = Field(description="the command that opens the study in optuna-dashboard")
    n_trials: int = Field(description="trials in the study, all processes")
    n_complete: int
    n_pruned: int
    n_failed: int
    trials: list[TrialReport] = Field(description="the trials this process ran")
    chosen: ChosenValues | None = Field(None, description="None when no trial has completed")
    front: list[TrialReport] = Field(default_factory=list, description="pareto: the Pareto-optimal trials")
    baseline: TrialReport | None = Field(None, description="the spec's own values, when the study ran them")
    saved_spec: Path | None = None
    saved_spec_hash: str | None = None
    plot: Path | None = None
    seconds: float
    warnings: list[str] = Field(default_factory=list)
    run_id: str | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object of ``tessera tune --json``."""
        data = self.model_dump(mode="json", exclude={"params"})
        data["params"] = self.params.model_dump(mode="json", exclude={"spec", "space"})
        data["params"]["spec_hash"] = self.params.spec.spec_hash()
        return data


# ---------------------------------------------------------------------------------------------- the search space


def suggest(trial: optuna.Trial, space: TuneSpace, *, guidance: bool, motif: bool, ceiling: bool) -> dict[str, Any]:
    """Draw one trial's values (define-by-run: ``scale`` exists only when ``forward`` is on)."""
    out: dict[str, Any] = {}

    def f(name: str, rng: FloatRange) -> float:
        return trial.suggest_float(name, rng.low, rng.high, log=rng.log)

    if guidance:
        forward = trial.suggest_categorical("forward", list(space.forward))
        out["scale"] = f("scale", space.scale) if forward else 0.0
        out["backward_steps"] = trial.suggest_int("backward_steps", space.backward_steps.low, space.backward_steps.high)
        out["backward_lr"] = f("backward_lr", space.backward_lr)
        out["recurrence"] = trial.suggest_int("recurrence", space.recurrence.low, space.recurrence.high)
        out["every"] = trial.suggest_int("every", space.every.low, space.every.high)
        out["schedule"] = trial.suggest_categorical("schedule", list(space.schedule))
    if motif:
        out["release_below"] = f("release_below", space.release_below)
    if ceiling:
        out["ehull_ceiling"] = f("ehull_ceiling", space.ehull_ceiling)
    return out


def tuned_options(base: GuidanceOptions, params: dict[str, Any]) -> GuidanceOptions:
    """``base`` with a trial's guidance values (``scale`` 0 when forward guidance is off)."""
    update: dict[str, Any] = {k: params[k] for k in ("backward_steps", "backward_lr", "recurrence", "every", "schedule")
                              if k in params}
    if "forward" in params:
        update["scale"] = float(params["scale"]) if params["forward"] else 0.0
    return GuidanceOptions.model_validate({**base.model_dump(), **update})


def tuned_spec(spec: DesignSpec, params: dict[str, Any]) -> DesignSpec:
    """The spec with a trial's values: guidance options and ``motif.release_below`` (validated again)."""
    data = spec.model_dump(mode="json")
    if spec.guidance:
        data["guidance_options"] = tuned_options(spec.guidance_options, params).model_dump(mode="json")
    if spec.motif is not None and "release_below" in params:
        data["motif"]["release_below"] = float(params["release_below"])
    return parse_spec(data, source="tuned spec")


def baseline_params(spec: DesignSpec, space: TuneSpace, *, ceiling: float | None) -> dict[str, Any]:
    """The spec's own values as trial parameters, clipped to the space (a choice outside it is left to Optuna)."""
    g = spec.guidance_options
    out: dict[str, Any] = {}
    if spec.guidance:
        forward = g.scale > 0
        if forward in space.forward:
            out["forward"] = forward
            if forward:
                out["scale"] = space.scale.clip(g.scale)
        out["backward_steps"] = space.backward_steps.clip(g.backward_steps)
        out["backward_lr"] = space.backward_lr.clip(g.backward_lr)
        out["recurrence"] = space.recurrence.clip(g.recurrence)
        out["every"] = space.every.clip(g.every)
        if g.schedule in space.schedule:
            out["schedule"] = g.schedule
    if spec.motif is not None:
        out["release_below"] = space.release_below.clip(spec.motif.release_below or 0.0)
    if ceiling is not None:
        out["ehull_ceiling"] = space.ehull_ceiling.clip(ceiling)
    return out


def trial_report(trial: optuna.trial.FrozenTrial) -> TrialReport:
    """A study's trial as a :class:`TrialReport` (from any process)."""
    attrs = trial.user_attrs
    # A pruned trial carries its last intermediate value (the share) as its value: not an objective value.
    complete = trial.state == optuna.trial.TrialState.COMPLETE
    return TrialReport(number=trial.number, state=trial.state.name.lower(), params=dict(trial.params),
                       values=list(trial.values) if complete and trial.values is not None else None,
                       baseline=bool(attrs.get("baseline")), **{k: attrs.get(k) for k in ATTR_KEYS})


# ---------------------------------------------------------------------------------------------- storage, study


def shown_url(url: str) -> str:
    """The URL with its password hidden (for messages and the audit log)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # unparsable: shown as given (no password to find in it)
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage with a heartbeat (a trial whose process died is retried once); InputError if
    the URL cannot be opened."""
    import sqlalchemy.exc
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) and not path.parent.exists():
            raise InputError(f"--storage {url}: folder {path.parent} does not exist")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=60, grace_period=180,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except (ImportError, ValueError, RuntimeError, OSError, sqlalchemy.exc.SQLAlchemyError) as exc:
        cause = exc.__cause__ if isinstance(exc, ImportError) and exc.__cause__ is not None else exc
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise InputError(f"--storage {shown_url(url)}: cannot open it ({type(cause).__name__}: {first})") from None


IDENTITY_KEY = "tessera_tune"


def study_identity(params: TuneParams) -> dict[str, Any]:
    """What makes trials comparable: the spec, the objective, the pilot settings and the search space."""
    return {"spec_hash": params.spec.spec_hash(), "objective": params.objective, "pilot": params.pilot,
            "steps": params.steps, "relax": params.relax, "relax_steps": params.relax_steps,
            "checkpoint": repo_relative(params.checkpoint), "space": params.space.model_dump(mode="json")}


class ShareGate(optuna.pruners.BasePruner):
    """Prune on the constraint-satisfaction share: below a floor, or in the bottom percentile of finished trials."""

    def __init__(self, options: PruningOptions) -> None:
        self.floor = optuna.pruners.ThresholdPruner(lower=options.min_share) if options.min_share > 0 else None
        # Optuna's percentile is the share kept at the top ("25: the top 25% are kept"); ours is the share pruned
        # at the bottom.
        self.percentile = (optuna.pruners.PercentilePruner(100.0 - options.percentile,
                                                           n_startup_trials=options.n_startup_trials)
                           if options.percentile is not None else None)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return any(p.prune(study, trial) for p in (self.floor, self.percentile) if p is not None)


def open_study(params: TuneParams, storage: optuna.storages.BaseStorage) -> tuple[optuna.Study, bool]:
    """Create or load the study; (study, created). InputError when it was made for another spec or settings."""
    name = params.study_name()
    directions = ["maximize"] if params.objective == "yield" else ["maximize", "minimize"]
    existing = {s.study_name: s for s in optuna.study.get_all_study_summaries(storage, include_best_trial=False)}
    created = name not in existing
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, load_if_exists=True,
                                pruner=ShareGate(params.space.pruning))
    if [d.name.lower() for d in study.directions] != directions:
        raise InputError(f"study {name} has objective(s) {[d.name.lower() for d in study.directions]}, not "
                         f"{params.objective}: choose another --study")
    identity = study_identity(params)
    old = study.user_attrs.get(IDENTITY_KEY)
    if old is None:
        study.set_user_attr(IDENTITY_KEY, identity)
        study.set_user_attr("spec", params.spec.model_dump(mode="json"))
    elif old != identity:
        differ = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        raise InputError(f"study {name} was made with other settings ({', '.join(differ)} differ): resume it with the "
                         f"same spec and options, or choose another --study")
    n_before = len(study.get_trials(deepcopy=False))
    # A resumed study must not redraw the first process's values: the sampler's seed moves on with the study.
    study.sampler = optuna.samplers.TPESampler(seed=params.seed + 7919 * n_before,
                                               n_startup_trials=params.space.sampler.n_startup_trials)
    return study, created


# ---------------------------------------------------------------------------------------------- one trial


def _share(candidates: list["Candidate"]) -> tuple[int, float]:
    met = sum(c.provenance.get("constraints_satisfied") is True for c in candidates)
    return met, met / len(candidates) if candidates else 0.0


def stability_proxy(candidates: list["Candidate"], *, cap: float) -> float:
    """eV/atom: mean unrelaxed E_hull estimate (the CHGNet single point of the prescreen's ``ehull`` stage, read
    from that stage even when a learned stage ran too), each capped at ``cap``; a crystal without an estimate
    counts as ``cap``."""
    from tessera.tools.evaluate import EHULL_STAGE

    values = []
    for c in candidates:
        outcome = c.prescreen.get(EHULL_STAGE)
        e = outcome.value if outcome is not None else None
        values.append(cap if e is None or not math.isfinite(e) else min(e, cap))
    return sum(values) / len(values) if values else cap


class PilotOutcome(BaseModel):
    """What one pilot batch gave (a trial's user attributes; the benchmark's fresh-seed arms)."""

    model_config = ConfigDict(extra="forbid")

    n_pilot: int
    n_met: int = Field(description="crystals meeting the spec after sampling")
    share: float = Field(description="n_met / n_pilot")
    n_prescreen_passed: int | None = None
    n_relaxed: int | None = None
    n_stable: int | None = None
    n_sun: int | None = None
    n_sun_c: int | None = None
    mean_ehull_estimate: float | None = Field(None, description="eV/atom, capped (pareto)")
    cpu_seconds: float = Field(description="process time of the whole batch: sampling, prescreen, relaxation, assessment")
    cpu_sample_seconds: float
    cpu_evaluate_seconds: float
    wall_seconds: float
    sun_c_per_cpu_hour: float | None = None
    stopped_after_sampling: bool = Field(False, description="the after-sampling hook stopped it (a pruned trial)")

    def objective_values(self, objective: Objective) -> float | tuple[float, float]:
        """yield: S.U.N.-C per CPU-second; pareto: (share, mean unrelaxed E_hull estimate)."""
        if objective == "pareto":
            return self.share, float(self.mean_ehull_estimate if self.mean_ehull_estimate is not None else math.inf)
        return (self.n_sun_c or 0) / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


def pilot_evaluate_params(*, objective: Objective, relax: int, relax_steps: int | None, ceiling: float | None) -> Any:
    """The EvaluateParams of a pilot batch: gated prescreen (yield) or every stage on every crystal (pareto),
    the ceiling, at most ``relax`` relaxations in this process, no second judge (CHGNet level)."""
    from tessera.tools.evaluate import EvaluateParams
    from tessera.tools.relax import load_relax_params

    relax_params = load_relax_params()
    if relax_steps is not None:
        relax_params = relax_params.model_copy(update={"steps": relax_steps})
    ev = EvaluateParams(gate=objective == "yield", relax=relax_params, confirm=None, max_relaxations=relax, workers=0)
    if ceiling is not None:
        ehull = ev.prescreen.ehull.model_copy(update={"ceiling": ceiling})
        ev = ev.model_copy(update={"prescreen": ev.prescreen.model_copy(update={"ehull": ehull})})
    return ev


def run_pilot(
    spec: DesignSpec,
    values: dict[str, Any],
    *,
    objective: Objective,
    n: int,
    steps: int,
    relax: int,
    out: Path,
    hull: Any,
    relax_steps: int | None = None,
    threads: int = 1,
    checkpoint: Path = SHIPPED_CHECKPOINT,
    proxy_cap: float = 5.0,
    after_sampling: Callable[[PilotOutcome], bool] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> PilotOutcome:
    """One pilot batch of ``spec`` (its seed) with the strengths ``values`` (a trial's parameters; missing
    ones keep the spec's values, a missing ``ehull_ceiling`` configs/prescreen.yaml's): sample ``n`` crystals at
    ``steps`` into ``out``; then (pareto) prescreen every stage and average the unrelaxed E_hull estimates, or
    (yield) gate with the prescreen, relax at most ``relax`` best-first in this process and assess.
    ``after_sampling`` sees the outcome so far and returns True to stop there (pruning); ``hull`` is the
    ReferenceHull shared by the batches. CPU time is this process's (``time.process_time``)."""
    from tessera.tools.evaluate import check_constraints, iter_assess, iter_prescreen, iter_relax, relaxation_queue
    from tessera.tools.sample import SampleParams, sample_crystals

    def stage(what: str) -> None:
        if on_stage is not None:
            on_stage(what)

    spec = tuned_spec(spec, values)
    spec = spec.model_copy(update={"budgets": spec.budgets.model_copy(update={"samples": n})})
    ev = pilot_evaluate_params(objective=objective, relax=relax, relax_steps=relax_steps,
                               ceiling=values.get("ehull_ceiling"))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    stage(f"sampling {n}")
    candidates = sample_crystals(SampleParams.from_spec(spec, out=out, steps=steps, threads=threads,
                                                        checkpoint=checkpoint)).candidates
    cpu_sample = time.process_time() - cpu0
    n_met, share = _share(candidates)

    def outcome(**more: Any) -> PilotOutcome:
        cpu = time.process_time() - cpu0
        return PilotOutcome(n_pilot=len(candidates), n_met=n_met, share=share, cpu_seconds=cpu,
                            cpu_sample_seconds=cpu_sample, cpu_evaluate_seconds=cpu - cpu_sample,
                            wall_seconds=time.perf_counter() - wall0, **more)

    if after_sampling is not None:
        so_far = outcome()
        if after_sampling(so_far):
            return so_far.model_copy(update={"stopped_after_sampling": True})
    stage("prescreen")
    for _ in iter_prescreen(candidates, ev, hull=hull):
        pass
    n_passed = sum(bool(c.prescreen) and all(o.passed for o in c.prescreen.values()) for c in candidates)
    if objective == "pareto":
        return outcome(n_prescreen_passed=n_passed, mean_ehull_estimate=stability_proxy(candidates, cap=proxy_cap))
    queue = relaxation_queue(candidates, limit=relax)
    for k, _ in enumerate(iter_relax(candidates, queue, ev), start=1):
        stage(f"relax {k}/{len(queue)}")
    stage("assess")
    for _ in iter_assess(candidates, ev, hull=hull):
        pass
    constraints = check_constraints(candidates)
    n_sun_c = constraints.n_sun_c if constraints is not None else 0
    done = outcome(n_prescreen_passed=n_passed, n_relaxed=sum(c.relaxed for c in candidates),
                   n_stable=sum(bool(c.stable) for c in candidates),
                   n_sun=sum(bool(c.stable and c.unique and c.novel) for c in candidates), n_sun_c=n_sun_c)
    done.sun_c_per_cpu_hour = 3600.0 * n_sun_c / done.cpu_seconds if done.cpu_seconds > 0 else 0.0
    return done


class _Trial:
    """The objective function Optuna calls: one pilot batch with the trial's values."""

    def __init__(self, params: TuneParams, *, hull: Any, on_stage: Callable[[int, str], None] | None) -> None:
        self.params = params
        self.hull = hull
        self.on_stage = on_stage
        self.work = params.out / params.study_name()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        p = self.params
        spec = p.spec
        yield_mode = p.objective == "yield"
        values = suggest(trial, p.space, guidance=bool(spec.guidance), motif=spec.motif is not None, ceiling=yield_mode)

        def prune(so_far: PilotOutcome) -> bool:
            trial.report(so_far.share, step=0)
            return trial.should_prune()

        result = run_pilot(spec, values, objective=p.objective, n=p.pilot, steps=p.steps, relax=p.relax,
                           out=self.work / f"trial-{trial.number:05d}", hull=self.hull, relax_steps=p.relax_steps,
                           threads=p.threads, checkpoint=p.checkpoint, proxy_cap=p.space.proxy_cap,
                           after_sampling=prune if yield_mode else None,
                           on_stage=(lambda what: self.on_stage(trial.number, what)) if self.on_stage else None)
        for key, value in result.model_dump(exclude={"stopped_after_sampling"}, exclude_none=True).items():
            trial.set_user_attr(key, value)
        if result.stopped_after_sampling:
            raise optuna.TrialPruned(f"constraint-satisfaction share {result.share:.2f} after sampling")
        return result.objective_values(p.objective)


# ---------------------------------------------------------------------------------------------- the job


def _warm_up(params: TuneParams, hull: Any) -> None:
    """One throwaway crystal through every stage a trial runs (guided sampling, the prescreen, in yield mode a
    short relaxation and the assessment), before any trial's clock starts: loading CHGNet, the hull of the
    spec's chemical system, the novelty pool and torch's first calls would otherwise land on the first trial
    (the spec's own values, the baseline). A spec the model cannot sample fails here, before the study."""
    from tessera.tools.evaluate import EvaluateParams, iter_assess, iter_prescreen, iter_relax, relaxation_queue
    from tessera.tools.relax import load_relax_params
    from tessera.tools.sample import SampleParams, sample_crystals

    spec = params.spec.model_copy(update={"budgets": params.spec.budgets.model_copy(update={"samples": 1})})
    sampled = sample_crystals(SampleParams.from_spec(spec, out=params.out / params.study_name() / "warm-up",
                                                     steps=2, threads=params.threads, checkpoint=params.checkpoint))
    candidates = sampled.candidates
    relax = load_relax_params().model_copy(update={"steps": 2})
    ev = EvaluateParams(gate=False, relax=relax, confirm=None, max_relaxations=1, workers=0)
    for _ in iter_prescreen(candidates, ev, hull=hull):
        pass
    if params.objective == "yield":
        for c in candidates:  # the warm-up crystal is relaxed whatever the prescreen thought of it
            c.error = None
        for _ in iter_relax(candidates, relaxation_queue(candidates, limit=1), ev):
            pass
        for _ in iter_assess(candidates, ev, hull=hull):
            pass


def write_spec(spec: DesignSpec, path: Path) -> None:
    """A spec file (YAML for .yaml/.yml, else JSON) that :func:`tessera.tools.spec.load_spec` reads back."""
    data = spec.model_dump(mode="json")
    text = (yaml.safe_dump(data, sort_keys=False) if path.suffix.lower() in (".yaml", ".yml")
            else json.dumps(data, indent=1) + "\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--save-spec {path}: cannot write it ({exc.strerror or exc})") from None


def choose(study: optuna.Study, objective: Objective) -> optuna.trial.FrozenTrial | None:
    """The chosen trial: the best (yield), or the Pareto trial with the highest share, then the lowest proxy.

    Ties go to the spec's own values (no evidence to change them: a study whose trials all found 0 S.U.N.-C
    keeps the spec as it is), then to the earliest trial."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return None
    if objective == "yield":
        return max(done, key=lambda t: (t.values[0], bool(t.user_attrs.get("baseline")), -t.number))
    return max(study.best_trials, key=lambda t: (t.values[0], -t.values[1], bool(t.user_attrs.get("baseline")),
                                                 -t.number))


def plot_pareto(study: optuna.Study, png: Path, *, title: str, cap: float) -> Path:
    """Share vs stability proxy of every finished trial, the Pareto front joined and the spec's values marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials}
    fig, ax = plt.subplots(figsize=(6, 4.2))
    rest = [t for t in done if t.number not in front]
    ax.scatter([t.values[0] for t in rest], [t.values[1] for t in rest], c="0.6", s=22, label="trial")
    pts = sorted(((t.values[0], t.values[1], t.number) for t in done if t.number in front))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", c="tab:red", ms=6, label="Pareto front")
    for x, y, n in pts:
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    base = [t for t in done if t.user_attrs.get("baseline")]
    if base:
        ax.scatter([base[0].values[0]], [base[0].values[1]], marker="*", s=140, c="tab:blue", zorder=3,
                   label="spec's own values")
    ax.set_xlabel("constraint-satisfaction share after sampling")
    ax.set_ylabel("mean unrelaxed E_hull estimate (eV/atom)")
    ax.set_title(f"{title}\nE_hull: CHGNet single point before relaxation, capped at {cap:g} eV/atom", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def tune(
    params: TuneParams,
    *,
    open_run: RunOpener | None = None,
    on_trial: Callable[[TrialReport], None] | None = None,
    on_stage: Callable[[int, str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run ``params.trials`` more trials of the study (creating or resuming it) and choose values.

    ``on_trial`` hears each finished (or pruned) trial; ``on_stage`` hears (trial number, what it is doing).
    With ``open_run`` a ``tune`` run is recorded: opened before any work, each trial logged as a tool call as
    it finishes, the chosen values and the study summary in its summary. Raises InputError for a spec with
    nothing to tune, a storage that cannot be opened or a study made with other settings.
    """
    spec = params.spec
    if not spec.guidance and spec.motif is None:
        raise InputError("the spec has neither guidance terms nor a motif: there are no strengths to tune")
    if params.objective == "pareto" and not spec.guidance and params.space.release_below.low == params.space.release_below.high:
        raise InputError("nothing to tune: the spec has no guidance terms and release_below is pinned")
    warnings_out: list[str] = []

    def warn(message: str) -> None:
        warnings_out.append(message)
        if on_warning is not None:
            on_warning(message)

    t0 = time.perf_counter()
    name = params.study_name()
    url = params.storage_url()
    if params.storage is None:
        try:
            params.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--out {params.out}: cannot create it ({exc.strerror or exc})") from None
    storage = open_storage(url)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study, created = open_study(params, storage)
        run_params = {"study": name, "storage": shown_url(url), "objective": params.objective, "trials": params.trials,
                      "pilot": params.pilot, "steps": params.steps, "relax": params.relax,
                      "relax_steps": params.relax_steps, "seed": params.seed, "spec_hash": spec.spec_hash(),
                      "spec": spec.model_dump(mode="json"), "space": params.space.model_dump(mode="json"),
                      "resumed": not created}
        run = open_run("tune", run_params, seed=params.seed) if open_run is not None else None
        with run if run is not None else nullcontext():
            if created and params.space.sampler.enqueue_spec:
                baseline = baseline_params(spec, params.space, ceiling=_default_ceiling()
                                           if params.objective == "yield" else None)
                study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)
            from tessera.tools.hull import ReferenceHull

            hull = ReferenceHull.default()
            if params.trials:
                if on_stage is not None:
                    on_stage(-1, "warming up")
                _warm_up(params, hull)
            objective = _Trial(params, hull=hull, on_stage=on_stage)
            mine: list[TrialReport] = []

            def after(_study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
                report = trial_report(frozen)
                mine.append(report)
                if run is not None:
                    run.log_tool_call(tool="tune_trial", arguments={"trial": report.number, **report.params},
                                      result_summary=report.model_dump(mode="json", exclude={"params"}),
                                      seconds=report.wall_seconds or 0.0)
                if on_trial is not None:
                    on_trial(report)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(objective, n_trials=params.trials, callbacks=[after], gc_after_trial=False)
            result = _summarise(study, params, name, url, mine, warn, t0, warnings_out)
            if run is not None:
                run.log_tool_call(tool="tune", arguments={"study": name, "trials": params.trials},
                                  result_summary=_run_summary(result), seconds=result.seconds)
                run.finish(_run_summary(result))
                result.run_id = run.run_id
    finally:
        optuna.logging.set_verbosity(verbosity)
    return result


def _default_ceiling() -> float:
    from tessera.tools.prescreen import load_prescreen_params

    return load_prescreen_params().ehull.ceiling


def _summarise(study: optuna.Study, params: TuneParams, name: str, url: str, mine: list[TrialReport],
               warn: Callable[[str], None], t0: float, warnings_out: list[str]) -> TuneResult:
    S = optuna.trial.TrialState
    everything = study.get_trials(deepcopy=False)
    chosen_trial = choose(study, params.objective)
    chosen = None
    saved, saved_hash, plot = None, None, None
    front: list[TrialReport] = []
    if params.objective == "pareto" and chosen_trial is not None:
        front = sorted((trial_report(t) for t in study.best_trials), key=lambda r: r.number)
    if chosen_trial is None:
        warn("no trial has completed yet: nothing chosen" + (", no spec written" if params.save_spec else ""))
    else:
        values = dict(chosen_trial.params)
        spec = tuned_spec(params.spec, values)
        chosen = ChosenValues(trial=chosen_trial.number, values=list(chosen_trial.values), params=values,
                              guidance_options=spec.guidance_options if params.spec.guidance else None,
                              release_below=values.get("release_below"), ehull_ceiling=values.get("ehull_ceiling"))
        if params.save_spec is not None:
            write_spec(spec, params.save_spec)
            saved, saved_hash = params.save_spec, spec.spec_hash()
        if params.objective == "pareto":
            plot = plot_pareto(study, params.out / f"{name}_pareto.png", cap=params.space.proxy_cap,
                               title=f"{name}: {len(front)} Pareto-optimal of "
                                     f"{sum(t.state == S.COMPLETE for t in everything)} trials "
                                     f"(pilot {params.pilot}, {params.steps} steps)")
    # The baseline trial is enqueued once; a killed one is retried with its attributes: report the finished copy.
    baselines = sorted((t for t in everything if t.user_attrs.get("baseline")),
                       key=lambda t: (t.state == S.COMPLETE, t.number))
    baseline = trial_report(baselines[-1]) if baselines else None
    return TuneResult(params=params, study=name, storage=shown_url(url), dashboard=f"optuna-dashboard {shown_url(url)}",
                      n_trials=len(everything), n_complete=sum(t.state == S.COMPLETE for t in everything),
                      n_pruned=sum(t.state == S.PRUNED for t in everything),
                      n_failed=sum(t.state == S.FAIL for t in everything), trials=mine, chosen=chosen, front=front,
                      baseline=baseline, saved_spec=saved, saved_spec_hash=saved_hash, plot=plot,
                      seconds=time.perf_counter() - t0, warnings=list(warnings_out))


def _run_summary(result: TuneResult) -> dict[str, Any]:
    return {"study": result.study, "storage": result.storage, "n_trials": result.n_trials,
            "n_complete": result.n_complete, "n_pruned": result.n_pruned, "n_failed": result.n_failed,
            "trials_this_run": [t.number for t in result.trials],
            "chosen": result.chosen.model_dump(mode="json") if result.chosen is not None else None,
            "baseline": result.baseline.model_dump(mode="json") if result.baseline is not None else None,
            "front": [t.number for t in result.front],
            "saved_spec": str(result.saved_spec) if result.saved_spec is not None else None,
            "saved_spec_hash": result.saved_spec_hash, "plot": str(result.plot) if result.plot else None}
