"""Scheduled campaigns: APScheduler with a persistent SQLite job store, one cron job per campaign file.

``tessera schedule`` keeps one job per campaign file that states a ``schedule`` (job id = campaign name) in
``<root>/schedule.sqlite``. The store outlives the process, and that is what makes a restart safe:

- a run that fell due while no scheduler was up is still due when one comes back (no misfire grace), and a
  backlog of missed runs becomes one run (coalesce);
- syncing the folder into the store keeps a job's pending or missed next run time unless its cron
  expression changed; files removed from the folder lose their jobs;
- a campaign still running (its flock is held, by this process or any other) is skipped, never started
  twice; a campaign that fails is one line in the log and the scheduler goes on;
- a run counts as done once it is handed to a worker: a scheduler killed mid-run does not start it again,
  ``tessera campaign resume SESSION`` continues it from its last finished step.

Every decision lands in ``<root>/schedule_log.jsonl`` (time, campaign, action started/skipped/finished/
failed, session id, message; a failure's traceback in ``detail``). One scheduler works a root at a time
(``<root>/schedule.lock``): APScheduler 3 must not share a job store between running schedulers.

Cron is read as crontab reads it (minute hour day month weekday, in UTC). APScheduler 3 counts weekdays
from Monday = 0, crontab from Sunday = 0, so weekday numbers are translated to names before they reach the
trigger ("1-5" stays Monday to Friday).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_REMOVED,
    EVENT_JOB_SUBMITTED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, Field

from tessera.agents.campaign import CampaignBusy, is_running, load_campaign, run_campaign
from tessera.agents.session import SessionHooks, new_session_id
from tessera.tools.errors import InputError, TesseraError

SCHEDULE_DB: str = "schedule.sqlite"
SCHEDULE_LOG: str = "schedule_log.jsonl"
SCHEDULE_LOCK: str = "schedule.lock"  # not under locks/: a campaign may be called "schedule"
JOB_FUNC: str = "tessera.agents.schedule:run_scheduled"
"""The job function by import path: the SQLite store pickles this reference, not the function."""
SUBMIT_DEADLINE_S: float = 60.0
"""How long ``run_due`` waits for the due jobs to be handed to the executor (a store that does not answer)."""

log = logging.getLogger(__name__)

Action = Literal["started", "skipped", "finished", "failed"]


class ScheduleEvent(BaseModel):
    """One line of ``schedule_log.jsonl``."""

    time: str = Field(description="UTC, ISO 8601, seconds")
    campaign: str
    action: Action
    session_id: str | None = None
    message: str
    detail: str | None = Field(None, description="a failure's traceback (the user sees only message)")


class ScheduledJob(BaseModel):
    """One job of the store, as ``tessera schedule --list`` shows it."""

    campaign: str
    schedule: str = Field(description="minute hour day month weekday, weekdays by name (UTC)")
    file: str
    next_run_time: datetime | None = Field(description="UTC; None: paused")
    due: bool = Field(description="the next run time has passed: the next scheduler pass starts it")
    running: bool = Field(description="a session of the campaign holds its lock now")


class SyncReport(BaseModel):
    """What ``sync_jobs`` did to the store."""

    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list, description="file, store or cron changed")
    unchanged: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list, description="their files are gone or have no schedule")
    problems: list[str] = Field(default_factory=list, description="campaign files that could not be scheduled")


class RunDueResult(BaseModel):
    """What one ``tessera schedule --once`` did."""

    sync: SyncReport
    events: list[ScheduleEvent]
    jobs: list[ScheduledJob]


# -- cron ------------------------------------------------------------------------------------------

_CRON_DAYS: tuple[str, ...] = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab: 0 (and 7) = Sunday


def _cron_day(token: str) -> int:
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    if token in _CRON_DAYS:
        return _CRON_DAYS.index(token)
    raise ValueError(f"weekday {token!r} is not 0-7 or sun..sat")


def _weekdays(field: str) -> str:
    """A crontab weekday field as APScheduler weekday names ("1-5" -> "mon-fri", "0,6" -> "sat,sun")."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        body, slash, step_text = part.partition("/")
        if slash and (not step_text.isdigit() or int(step_text) < 1):
            raise ValueError(f"weekday step {part!r} is not a positive whole number")
        step = int(step_text) if step_text else 1
        if body == "*":
            lo, hi = 0, 6
        elif "-" in body:
            first, last = body.split("-", 1)
            lo, hi = _cron_day(first), _cron_day(last)
            if lo > hi:
                raise ValueError(f"weekday range {body!r} runs backwards")
        else:
            lo = _cron_day(body)
            hi = 6 if slash else lo  # "1/2" means from Monday every second day, as in cron
        days.update(d % 7 for d in range(lo, hi + 1, step))
    if len(days) == 7:
        return "*"
    # APScheduler's week starts on Monday: emit in that order, runs of three or more as a range.
    order = sorted((d - 1) % 7 for d in days)  # 0 = Monday
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    parts: list[str] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and order[j + 1] == order[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{names[order[i]]}-{names[order[j]]}")
        else:
            parts.extend(names[k] for k in order[i:j + 1])
        i = j + 1
    return ",".join(parts)


def crontab_trigger(expr: str) -> CronTrigger:
    """A UTC CronTrigger that fires when crontab would (ValueError naming the problem otherwise).

    Differences from ``CronTrigger.from_crontab`` it removes: weekday numbers count from Sunday = 0 (7 is
    Sunday too), and a day of month together with a weekday is refused, since crontab fires on either
    while APScheduler would fire only on days that are both.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"{expr!r} has {len(fields)} fields; cron has 5 (minute hour day month weekday)")
    minute, hour, day, month, weekday = fields
    if not day.startswith("*") and not weekday.startswith("*"):
        raise ValueError(f"{expr!r} restricts both the day of month and the weekday (cron runs on either, "
                         "this scheduler only on both): restrict one of them")
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_weekdays(weekday),
                       timezone=timezone.utc)


def trigger_text(trigger: Any) -> str:
    """``minute hour day month weekday`` of a CronTrigger (weekdays by name)."""
    fields = {f.name: str(f) for f in getattr(trigger, "fields", ())}
    if not fields:
        return str(trigger)
    return " ".join(fields[k] for k in ("minute", "hour", "day", "month", "day_of_week"))


# -- the log ---------------------------------------------------------------------------------------

_log_lock = threading.Lock()


def schedule_log_path(root: Path) -> Path:
    return Path(root) / SCHEDULE_LOG


def record_event(root: Path, *, campaign: str, action: Action, message: str, session_id: str | None = None,
                 detail: str | None = None) -> ScheduleEvent:
    """Append one event to ``<root>/schedule_log.jsonl`` and say it on the module logger."""
    event = ScheduleEvent(time=datetime.now(timezone.utc).isoformat(timespec="seconds"), campaign=campaign,
                          action=action, session_id=session_id, message=message, detail=detail)
    path = schedule_log_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _log_lock, open(path, "a", encoding="utf-8") as fh:
        fh.write(event.model_dump_json() + "\n")  # one write per line: lines never interleave
    (log.warning if action == "failed" else log.info)("%s %s: %s", campaign, action, message)
    return event


def read_log(root: Path, *, offset: int = 0) -> list[ScheduleEvent]:
    """The events written at or after byte ``offset`` of the log (all of them by default)."""
    path = schedule_log_path(root)
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(offset)
        lines = fh.read().decode("utf-8").splitlines()
    return [ScheduleEvent.model_validate_json(line) for line in lines if line.strip()]


def _log_size(root: Path) -> int:
    path = schedule_log_path(root)
    return path.stat().st_size if path.exists() else 0


# -- the job ---------------------------------------------------------------------------------------

_running: dict[str, str] = {}  # campaign -> session id, of the runs this process is doing now
_running_lock = threading.Lock()
_stopping = threading.Event()


def running_here() -> dict[str, str]:
    """Campaigns this process is running now (campaign -> session id)."""
    with _running_lock:
        return dict(_running)


def request_stop() -> None:
    """No further run starts in this process (runs queued behind a busy worker are skipped)."""
    _stopping.set()


def _hooks(name: str) -> SessionHooks:
    def on_node(node: str, round_index: int) -> None:
        if node not in ("decide", "record"):
            log.info("%s: round %d %s", name, round_index, node)

    return SessionHooks(on_node=on_node, on_message=lambda line: log.info("%s: %s", name, line))


def run_scheduled(file: str, root: str, store: str | None) -> None:
    """The job: start a session of the campaign in ``file`` unless one is still running. Never raises.

    Plain arguments only (the job store pickles them with the job). Every outcome is one event in the log.
    """
    root_path, path = Path(root), Path(file)
    try:
        name = load_campaign(path).name
    except TesseraError as exc:
        record_event(root_path, campaign=path.stem, action="failed", message=str(exc))
        return
    if _stopping.is_set():
        record_event(root_path, campaign=name, action="skipped", message="the scheduler is stopping")
        return
    if is_running(root_path, name):
        record_event(root_path, campaign=name, action="skipped", message=f"campaign {name} is still running")
        return
    sid = new_session_id(name)
    record_event(root_path, campaign=name, action="started", session_id=sid, message=f"session {sid}")
    with _running_lock:
        _running[name] = sid
    try:
        outcome = run_campaign(path, root=root_path, store=store, hooks=_hooks(name), session_id=sid)
    except CampaignBusy:  # another process took the lock between the check and the start
        record_event(root_path, campaign=name, action="skipped", session_id=sid,
                     message=f"campaign {name} is still running (another process started it first)")
    except TesseraError as exc:
        record_event(root_path, campaign=name, action="failed", session_id=sid, message=str(exc))
    except Exception as exc:  # one campaign's bug must not stop the others: logged with its traceback
        first = (str(exc).splitlines() or [""])[0]
        record_event(root_path, campaign=name, action="failed", session_id=sid,
                     message=f"{type(exc).__name__}: {first}", detail=traceback.format_exc())
    else:
        said = [outcome.status]
        if outcome.stop_reason:
            said.append(outcome.stop_reason)
        if outcome.report_path:
            said.append(f"report {outcome.report_path}")
        record_event(root_path, campaign=name, action="finished", session_id=sid, message="; ".join(said))
    finally:
        with _running_lock:
            _running.pop(name, None)


# -- the scheduler ---------------------------------------------------------------------------------


def job_store_url(root: Path) -> str:
    return f"sqlite:///{(Path(root).resolve() / SCHEDULE_DB)}"


class SchedulerBusy(InputError):
    """Another scheduler works this root."""


@contextlib.contextmanager
def scheduler_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/schedule.lock`` (exclusive, non-blocking: SchedulerBusy if held)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / SCHEDULE_LOCK
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise SchedulerBusy(f"a scheduler is already running on {root} (pid {holder}; lock {path})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


class _NoPassAfterShutdown:
    """APScheduler 3's loop makes one more pass after ``shutdown()`` (it waits, wakes, then processes without
    looking at the state). With the executors already shut down, that pass consumes every due run: it moves
    the next run time on and fails to submit. Paused schedulers that only read or sync the store would
    lose missed runs that way."""

    state: int

    def _process_jobs(self) -> float | None:
        if self.state == STATE_STOPPED:
            return None
        return super()._process_jobs()  # type: ignore[misc]


class _Background(_NoPassAfterShutdown, BackgroundScheduler):
    pass


class _Blocking(_NoPassAfterShutdown, BlockingScheduler):
    pass


def make_scheduler(root: Path, *, blocking: bool = False, workers: int = 1) -> BaseScheduler:
    """A UTC scheduler on ``<root>/schedule.sqlite`` with ``workers`` threads (not started).

    One worker by default: two campaigns due together run one after the other, not side by side on the
    same cores (a queued run still starts: there is no misfire grace).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cls = _Blocking if blocking else _Background
    scheduler = cls(jobstores={"default": SQLAlchemyJobStore(url=job_store_url(root))},
                    executors={"default": ThreadPoolExecutor(max_workers=workers)}, timezone=timezone.utc)

    def on_event(event: Any) -> None:
        # run_scheduled logs what it does; these are the outcomes it never sees.
        if event.code == EVENT_JOB_MAX_INSTANCES:
            record_event(root, campaign=event.job_id, action="skipped",
                         message=f"campaign {event.job_id} is still running (started by this scheduler)")
        elif event.code == EVENT_JOB_MISSED:
            record_event(root, campaign=event.job_id, action="skipped", message="run time missed")
        elif event.code == EVENT_JOB_ERROR:
            record_event(root, campaign=event.job_id, action="failed",
                         message=f"{type(event.exception).__name__}: {event.exception}",
                         detail=event.traceback)

    scheduler.add_listener(on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
    return scheduler


def sync_jobs(scheduler: BaseScheduler, campaigns_dir: Path, root: Path, store: str | None) -> SyncReport:
    """Make the store hold one job per campaign file in ``campaigns_dir`` that has a ``schedule``.

    ``scheduler`` must be started (usually paused) so that it reads and writes its job store. A job whose
    cron expression is unchanged keeps its next run time, pending or missed; a new or re-timed job gets the
    next fire time from now. Jobs of files that are gone or lost their schedule are removed; the job of a
    file that no longer validates is kept as it was and reported under ``problems``.
    """
    folder = Path(campaigns_dir)
    if not folder.is_dir():
        raise InputError(f"campaigns folder {folder}: no such folder (choose one with --campaigns)")
    root_text = str(Path(root).resolve())
    report = SyncReport()
    wanted: dict[str, tuple[str, CronTrigger]] = {}
    broken: set[str] = set()
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        resolved = str(path.resolve())
        try:
            campaign = load_campaign(path)
            if campaign.schedule is None:
                continue
            try:
                trigger = crontab_trigger(campaign.schedule)
            except ValueError as exc:
                raise InputError(f"campaign file {path}: schedule {exc}") from None
        except InputError as exc:
            report.problems.append(str(exc))
            broken.add(resolved)
            continue
        if campaign.name in wanted:
            report.problems.append(f"campaign file {path}: name {campaign.name} is also used by "
                                   f"{wanted[campaign.name][0]}; not scheduled")
            continue
        wanted[campaign.name] = (resolved, trigger)

    existing = {job.id: job for job in scheduler.get_jobs()}
    for name, (file, trigger) in wanted.items():
        args = (file, root_text, store)
        settings: dict[str, Any] = dict(trigger=trigger, args=args, id=name, name=name, replace_existing=True,
                                        coalesce=True, misfire_grace_time=None, max_instances=1)
        old = existing.get(name)
        if old is not None and repr(old.trigger) == repr(trigger):
            settings["next_run_time"] = old.next_run_time  # a missed run stays missed, hence due
            same = tuple(old.args) == args and old.func_ref == JOB_FUNC and old.coalesce and \
                old.misfire_grace_time is None and old.max_instances == 1
            (report.unchanged if same else report.updated).append(name)
        else:
            (report.added if old is None else report.updated).append(name)
        scheduler.add_job(JOB_FUNC, **settings)
    for name, job in existing.items():
        if name in wanted or (job.args and job.args[0] in broken):
            continue
        scheduler.remove_job(name)
        report.removed.append(name)
    return report


def scheduled_jobs(scheduler: BaseScheduler, root: Path) -> list[ScheduledJob]:
    """The store's jobs, soonest first (the scheduler must be started)."""
    now = datetime.now(timezone.utc)
    out = []
    for job in scheduler.get_jobs():
        nrt = job.next_run_time
        out.append(ScheduledJob(
            campaign=job.id, schedule=trigger_text(job.trigger), file=str(job.args[0]) if job.args else "",
            next_run_time=None if nrt is None else nrt.astimezone(timezone.utc),
            due=nrt is not None and nrt <= now, running=is_running(Path(root), job.id)))
    far = datetime.max.replace(tzinfo=timezone.utc)
    return sorted(out, key=lambda j: (j.next_run_time or far, j.campaign))


@contextlib.contextmanager
def _paused(root: Path, *, workers: int = 1) -> Iterator[BaseScheduler]:
    scheduler = make_scheduler(root, workers=workers)
    scheduler.start(paused=True)
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=True)


def list_jobs(campaigns_dir: Path, root: Path, store: str | None) -> tuple[SyncReport | None, list[ScheduledJob]]:
    """Sync the folder into the store and list the jobs; when a scheduler works the root, only list (its
    own sync is the one that counts, and two schedulers must not write one store)."""
    try:
        with scheduler_lock(root), _paused(root) as scheduler:
            report = sync_jobs(scheduler, campaigns_dir, root, store)
            return report, scheduled_jobs(scheduler, root)
    except SchedulerBusy:
        with _paused(root) as scheduler:
            return None, scheduled_jobs(scheduler, root)


def run_due(campaigns_dir: Path, root: Path, store: str | None, *, workers: int = 1) -> RunDueResult:
    """Sync, run every job that is due now (missed runs included, each once), wait for them, return.

    What a cron or systemd timer (or a test) calls. A job falling due while these runs go on is left for
    the next call: processing pauses as soon as the jobs due at the start are handed to the executor.
    """
    root = Path(root)
    _stopping.clear()
    with scheduler_lock(root):
        scheduler = make_scheduler(root, workers=workers)
        scheduler.start(paused=True)
        offset = _log_size(root)
        try:
            report = sync_jobs(scheduler, campaigns_dir, root, store)
            now = datetime.now(timezone.utc)
            waiting = {job.id for job in scheduler.get_jobs()
                       if job.next_run_time is not None and job.next_run_time <= now}
            if waiting:
                settled = threading.Event()
                lock = threading.Lock()

                def on_event(event: Any) -> None:
                    with lock:
                        waiting.discard(event.job_id)
                        if not waiting and not settled.is_set():
                            # Called by the scheduler thread at the end of its pass: no later pass runs.
                            scheduler.pause()
                            settled.set()

                scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
                                       | EVENT_JOB_REMOVED)
                scheduler.resume()
                if not settled.wait(SUBMIT_DEADLINE_S):
                    scheduler.pause()
                    report.problems.append(f"jobs {', '.join(sorted(waiting))} were due but not started within "
                                           f"{SUBMIT_DEADLINE_S:.0f} s (job store {job_store_url(root)})")
        finally:
            scheduler.shutdown(wait=True)  # waits for the runs it started
        with _paused(root) as after:
            jobs = scheduled_jobs(after, root)
    return RunDueResult(sync=report, events=read_log(root, offset=offset), jobs=jobs)


def serve(campaigns_dir: Path, root: Path, store: str | None, *, workers: int = 1,
          on_ready: Callable[[SyncReport, list[ScheduledJob]], None] | None = None) -> None:
    """Sync, then run due campaigns until interrupted (a BlockingScheduler in this thread).

    ``on_ready(report, jobs)`` is called once after the sync, before the first pass. A KeyboardInterrupt
    stops job processing and propagates; runs in progress carry on in their threads (see
    :func:`running_here`, :func:`request_stop`).
    """
    root = Path(root)
    _stopping.clear()
    with scheduler_lock(root):
        with _paused(root, workers=workers) as first:
            report = sync_jobs(first, campaigns_dir, root, store)
            jobs = scheduled_jobs(first, root)
        if on_ready is not None:
            on_ready(report, jobs)
        scheduler = make_scheduler(root, blocking=True, workers=workers)
        try:
            scheduler.start()
        finally:
            request_stop()
            if scheduler.running:
                scheduler.shutdown(wait=False)
