"""Campaigns: a design session described in a YAML file, run, resumed, listed and scheduled.

A campaign file (``configs/campaigns/*.yaml``) holds a goal or a spec, rounds, budgets, stopping rules
and an optional cron schedule::

    name: kagome-mn-nightly
    goal: "kagome net of Mn with Sn or Ge, at most 12 atoms"     # or  spec: {...} / spec_file: path
    rounds: 3
    samples_per_round: 32          # overrides the spec's budgets.samples
    relaxations: 24                # the whole campaign
    wall_minutes: 60
    stop_after_hits: 5
    schedule: "0 2 * * *"          # cron (minute hour day month weekday); optional
    options: {steps: 0, confirm: sevennet}   # SessionOptions fields

Each run of a campaign is one design session in ``<root>/<campaign>-<UTC time>-<hex>/``; the root defaults
to ``campaigns`` beside the default store. While a session runs it holds an exclusive ``flock`` on
``<root>/locks/<campaign>.lock``: the scheduler never starts a campaign whose lock is held, and a killed
process releases its lock with its file descriptors, so a crash never leaves a campaign stuck "running".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tessera.tools.config import describe_validation_error
from tessera.tools.errors import InputError
from tessera.tools.spec import DesignSpec, load_spec, parse_spec

from tessera.agents.session import CHECKPOINT_FILE, SESSION_FILE, DesignSession, SessionHooks, SessionOptions, SessionOutcome


class CampaignFile(BaseModel):
    """A campaign as its YAML file states it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="used in folder and lock names")
    goal: str | None = Field(None, description="in words, for the planner")
    spec: dict[str, Any] | None = Field(None, description="a DesignSpec inline")
    spec_file: str | None = Field(None, description="a DesignSpec file (relative to the campaign file)")
    rounds: int = Field(1, ge=1, le=1000)
    samples_per_round: int | None = Field(None, ge=1)
    relaxations: int | None = Field(None, ge=0, description="relaxations in the whole campaign")
    wall_minutes: float | None = Field(None, gt=0)
    stop_after_hits: int | None = Field(None, ge=1)
    seed: int | None = Field(None, description="overrides the spec's seed (a scheduled run adds nothing: same seed)")
    schedule: str | None = Field(None, description="cron expression: minute hour day month weekday")
    options: dict[str, Any] = Field(default_factory=dict, description="SessionOptions fields")

    @model_validator(mode="after")
    def _one_source(self) -> "CampaignFile":
        given = [k for k in ("goal", "spec", "spec_file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"a campaign needs exactly one of goal, spec, spec_file (got {given or 'none'})")
        if self.schedule is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.schedule)
            except ValueError as exc:
                raise ValueError(f"schedule {self.schedule!r} is not a cron expression ({exc})") from None
        return self


def load_campaign(path: Path) -> CampaignFile:
    """Read and validate a campaign file; one InputError line naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"campaign file {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"campaign file {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"campaign file {path}: expected a mapping of settings")
    try:
        campaign = CampaignFile.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"campaign file {path}: {describe_validation_error(exc)}") from None
    try:
        SessionOptions.model_validate(campaign.options)
    except ValidationError as exc:
        raise InputError(f"campaign file {path}: options: {describe_validation_error(exc)}") from None
    return campaign


def campaign_spec(campaign: CampaignFile, *, base_dir: Path) -> DesignSpec | None:
    """The campaign's spec with its budget overrides applied, or None for a goal (planned at run time)."""
    if campaign.spec is not None:
        spec = parse_spec(campaign.spec, source=f"campaign {campaign.name}: spec")
    elif campaign.spec_file is not None:
        spec = load_spec(base_dir / campaign.spec_file)
    else:
        return None
    return apply_overrides(spec, campaign)


def apply_overrides(spec: DesignSpec, campaign: CampaignFile) -> DesignSpec:
    """Budgets and seed of the campaign file over the spec's (re-validated)."""
    data = spec.model_dump(mode="json")
    budgets = data["budgets"]
    if campaign.samples_per_round is not None:
        budgets["samples"] = campaign.samples_per_round
    if campaign.relaxations is not None:
        budgets["relaxations"] = campaign.relaxations
    if campaign.wall_minutes is not None:
        budgets["wall_minutes"] = campaign.wall_minutes
    if campaign.seed is not None:
        data["seed"] = campaign.seed
    return parse_spec(data, source=f"campaign {campaign.name}")


def default_campaign_root() -> Path:
    """``campaigns`` beside the default store (platform user data folder)."""
    from tessera.store.settings import default_store_location

    return Path(default_store_location()).parent / "campaigns"


class CampaignBusy(InputError):
    """Another process is running this campaign."""


@contextlib.contextmanager
def campaign_lock(root: Path, name: str) -> Iterator[None]:
    """Hold ``<root>/locks/<name>.lock`` for the duration (exclusive, non-blocking: CampaignBusy if held)."""
    locks = Path(root) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(locks / f"{name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CampaignBusy(f"campaign {name} is already running (lock {locks / (name + '.lock')} is held)") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock (and a killed process releases it the same way)


def is_running(root: Path, name: str) -> bool:
    """True when some process holds the campaign's lock."""
    try:
        with campaign_lock(root, name):
            return False
    except CampaignBusy:
        return True


def _session(work: Path, store: str | None, hooks: SessionHooks | None, planner: Any = None) -> DesignSession:
    return DesignSession(work, store=store, hooks=hooks, planner=planner)


def run_campaign(
    path: Path,
    *,
    root: Path | None = None,
    store: str | None = None,
    hooks: SessionHooks | None = None,
    planner: Any = None,
    session_id: str | None = None,
) -> SessionOutcome:
    """Start a new session of the campaign in ``path`` (CampaignBusy when one is still running)."""
    from tessera.agents.session import new_session_id

    path = Path(path)
    campaign = load_campaign(path)
    spec = campaign_spec(campaign, base_dir=path.parent)
    root = Path(root) if root is not None else default_campaign_root()
    options = SessionOptions.model_validate({**campaign.options, "rounds": campaign.rounds,
                                            "stop_after_hits": campaign.stop_after_hits})
    if options.learn and options.learn_root is None:
        # One model lineage per campaign: each night's session goes on from what the last one learned.
        options = options.model_copy(update={"learn_root": str((Path(root) if root is not None else
                                                                default_campaign_root()) / "stability" / campaign.name)})
    sid = session_id or new_session_id(campaign.name)
    with campaign_lock(root, campaign.name):
        session = _session(root / sid, store, hooks, planner)
        try:
            plan = None
            if campaign.goal is not None and spec is None:
                # Planned at run time; the budget overrides are applied to the planned spec.
                plan = session.planner().plan(campaign.goal)
                spec = apply_overrides(plan.spec, campaign)
                if hooks is not None and hooks.on_message is not None and plan.unused:
                    hooks.on_message(f"planner could not use: {', '.join(plan.unused)}")
            return session.start(goal=campaign.goal, spec=spec, options=options, session_id=sid, plan=plan,
                                 extra={"campaign": campaign.name, "campaign_file": str(path.resolve())})
        finally:
            session.close()


def resume_campaign(session_id: str, *, root: Path | None = None, store: str | None = None,
                    hooks: SessionHooks | None = None) -> SessionOutcome:
    """Continue a killed or interrupted session from its last finished node. ``session_id`` names a session
    under ``root``, or is the path of any session folder (a ``tessera design --out`` folder too)."""
    root = Path(root) if root is not None else default_campaign_root()
    work = root / session_id
    if not (work / SESSION_FILE).exists() and (Path(session_id) / SESSION_FILE).exists():
        work = Path(session_id)  # a session folder given by path (e.g. a `tessera design` session)
        root = work.resolve().parent
    if not (work / SESSION_FILE).exists():
        raise InputError(f"no campaign session {session_id!r} in {root}")
    meta = json.loads((work / SESSION_FILE).read_text(encoding="utf-8"))
    with campaign_lock(root, str(meta.get("campaign") or work.name)):
        session = _session(work, store if store is not None else meta.get("store"), hooks)
        try:
            return session.resume()
        finally:
            session.close()


class CampaignStatus(BaseModel):
    """One campaign session as ``tessera campaign list`` shows it."""

    session_id: str
    campaign: str | None
    created_at: str | None
    status: Literal["running", "finished", "rejected", "awaiting_approval", "interrupted", "not started"]
    rounds_done: int
    rounds: int | None
    hits: int
    stop_reason: str | None
    report_path: str | None
    work_dir: str


def campaign_status(work: Path) -> CampaignStatus:
    """Status of the session in ``work`` (read from its checkpoint; never resumes anything)."""
    work = Path(work)
    if not (work / SESSION_FILE).exists():
        raise InputError(f"{work} holds no campaign session")
    meta = json.loads((work / SESSION_FILE).read_text(encoding="utf-8"))
    values: dict[str, Any] = {}
    pending: tuple = ()
    interrupted = False
    if (work / CHECKPOINT_FILE).exists():
        session = DesignSession(work)
        try:
            snap = session.graph.get_state(session._config())
            values, pending = dict(snap.values or {}), tuple(snap.next or ())
            interrupted = any(getattr(t, "interrupts", None) for t in (snap.tasks or ()))
        finally:
            session.close()
    name = meta.get("campaign")
    root = work.parent
    if name and is_running(root, str(name)) and pending:
        status = "running"
    elif values.get("rejected"):
        status = "rejected"
    elif interrupted:
        status = "awaiting_approval"
    elif values.get("report_path") and not pending:
        status = "finished"
    elif values or pending:
        status = "interrupted"
    else:
        status = "not started"
    return CampaignStatus(
        session_id=str(meta.get("session_id", work.name)), campaign=name, created_at=meta.get("created_at"),
        status=status, rounds_done=len(values.get("rounds_done") or []),
        rounds=(meta.get("options") or {}).get("rounds"), hits=int(values.get("hits") or 0),
        stop_reason=values.get("stop_reason"), report_path=values.get("report_path"), work_dir=str(work),
    )


def list_campaigns(root: Path | None = None) -> list[CampaignStatus]:
    """Every campaign session under ``root``, newest first."""
    root = Path(root) if root is not None else default_campaign_root()
    if not root.is_dir():
        return []
    found = [campaign_status(d) for d in root.iterdir() if (d / SESSION_FILE).exists()]
    return sorted(found, key=lambda s: s.created_at or "", reverse=True)
