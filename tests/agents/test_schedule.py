"""``tessera schedule``: due campaigns run, running ones are skipped, missed runs survive a restart.

Real components: APScheduler with its SQLAlchemy job store on a SQLite file in a temp folder, tiny real
campaigns (the shipped generator at 20 reverse steps, 2 crystals, one CHGNet relaxation of 30 steps at most),
the LanceDB store. A job is made due by moving its next run time into the past through the job store, as if
the machine had been off when it should have run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tessera.agents.campaign import campaign_lock, list_campaigns
from tessera.agents.schedule import (
    JOB_FUNC,
    SCHEDULE_DB,
    crontab_trigger,
    make_scheduler,
    read_log,
    run_due,
    sync_jobs,
)

TESSERA = [str(Path(sys.executable).with_name("tessera"))]


def tiny_campaign(name: str, *, schedule: str = "* * * * *") -> str:
    return f"""\
name: {name}
spec:
  chemistry: {{elements: [Li, Co, O], n_elements: 3, atoms: 8}}
  seed: 1
rounds: 1
samples_per_round: 2
relaxations: 1
schedule: "{schedule}"
options: {{steps: 20, relax_steps: 30, threads: 1, max_pictures: 0}}
"""


def sync(folder: Path, root: Path, store: Path) -> object:
    scheduler = make_scheduler(root)
    scheduler.start(paused=True)
    try:
        return sync_jobs(scheduler, folder, root, str(store))
    finally:
        scheduler.shutdown()


def stored_jobs(root: Path, *, move_to: datetime | None = None) -> dict[str, object]:
    """The jobs in ``<root>/schedule.sqlite`` (a fresh scheduler instance reads them); ``move_to`` first sets
    every job's next run time (a missed run when it is in the past)."""
    scheduler = make_scheduler(root)
    scheduler.start(paused=True)
    try:
        if move_to is not None:
            for job in scheduler.get_jobs():
                scheduler.modify_job(job.id, next_run_time=move_to)
        return {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown()


def sessions(root: Path) -> list[Path]:
    return sorted(d for d in root.iterdir() if (d / "session.json").exists()) if root.is_dir() else []


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, Path, Path]:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    return folder, tmp_path / "root", tmp_path / "store"


def test_a_due_campaign_runs_once_and_is_logged(place: tuple[Path, Path, Path]) -> None:
    folder, root, store = place
    (folder / "tiny.yaml").write_text(tiny_campaign("tiny-due"))
    (folder / "unscheduled.yaml").write_text(tiny_campaign("no-cron").replace('schedule: "* * * * *"\n', ""))
    report = sync(folder, root, store)
    assert report.added == ["tiny-due"] and not report.problems
    job = stored_jobs(root)["tiny-due"]
    assert job.func_ref == JOB_FUNC and job.coalesce and job.misfire_grace_time is None and job.max_instances == 1
    assert job.args == (str((folder / "tiny.yaml").resolve()), str(root.resolve()), str(store))
    assert job.next_run_time > datetime.now(timezone.utc)  # a new job waits for its first fire time

    stored_jobs(root, move_to=datetime.now(timezone.utc) - timedelta(minutes=5))
    result = run_due(folder, root, str(store))

    assert [(e.campaign, e.action) for e in result.events] == [("tiny-due", "started"), ("tiny-due", "finished")]
    started, finished = result.events
    assert started.session_id == finished.session_id and finished.message.startswith("finished")
    assert read_log(root) == result.events
    [status] = list_campaigns(root)
    assert status.session_id == started.session_id and status.campaign == "tiny-due" and status.status == "finished"
    [listed] = result.jobs
    assert listed.campaign == "tiny-due" and not listed.running
    assert listed.next_run_time > datetime.fromisoformat(started.time)  # the due run was consumed


def test_a_running_campaign_is_skipped_and_a_failing_one_is_one_line(place: tuple[Path, Path, Path]) -> None:
    folder, root, store = place
    (folder / "tiny.yaml").write_text(tiny_campaign("tiny-busy"))
    (folder / "broken.yaml").write_text("name: broken\nspec_file: missing.yaml\nschedule: '* * * * *'\n")
    sync(folder, root, store)
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    stored_jobs(root, move_to=past)

    with campaign_lock(root, "tiny-busy"):  # a session of tiny-busy is running (in this process)
        result = run_due(folder, root, str(store))

    by = {(e.campaign, e.action): e for e in result.events}
    assert Counter(e.campaign for e in result.events if e.action in ("skipped", "finished", "failed")) == \
        {"tiny-busy": 1, "broken": 1}
    assert by[("tiny-busy", "skipped")].message == "campaign tiny-busy is still running"
    assert ("tiny-busy", "started") not in by
    failed = by[("broken", "failed")]
    assert "missing.yaml: no such file" in failed.message and "\n" not in failed.message
    assert sessions(root) == []  # nothing was started
    # The scheduler went on: both jobs are still stored, past their missed run.
    jobs = stored_jobs(root)
    assert set(jobs) == {"tiny-busy", "broken"} and all(j.next_run_time > past for j in jobs.values())


def test_missed_run_survives_a_restart_and_runs_exactly_once(place: tuple[Path, Path, Path]) -> None:
    folder, root, store = place
    (folder / "tiny.yaml").write_text(tiny_campaign("tiny-restart"))
    sync(folder, root, store)  # scheduler A stores the job and shuts down
    assert (root / SCHEDULE_DB).is_file()
    # The machine was off for an hour: sixty missed fire times of "* * * * *".
    stored_jobs(root, move_to=datetime.now(timezone.utc) - timedelta(hours=1))

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*TESSERA, "schedule", "--once", "--json", "--campaigns", str(folder), "--root", str(root),
                           "--store", str(store)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["sync"]["unchanged"] == ["tiny-restart"]  # the re-sync kept the missed run time
    assert [(e["campaign"], e["action"]) for e in out["events"]] == [("tiny-restart", "started"),
                                                                      ("tiny-restart", "finished")]
    assert "finished" in proc.stderr and "tiny-restart" in proc.stderr  # progress on stderr

    log = read_log(root)
    assert [e.action for e in log] == ["started", "finished"]  # once, not sixty times
    [status] = list_campaigns(root)
    assert status.status == "finished" and status.session_id == log[0].session_id
    job = stored_jobs(root)["tiny-restart"]  # still scheduled, from the same SQLite file
    started = datetime.fromisoformat(log[0].time)
    assert started < job.next_run_time <= started + timedelta(seconds=61)


def test_sync_removes_jobs_of_removed_files_and_keeps_broken_ones(place: tuple[Path, Path, Path]) -> None:
    folder, root, store = place
    for name in ("a", "b", "c"):
        (folder / f"{name}.yaml").write_text(tiny_campaign(f"camp-{name}", schedule="0 2 * * 1-5"))
    assert sorted(sync(folder, root, store).added) == ["camp-a", "camp-b", "camp-c"]
    missed = datetime.now(timezone.utc) - timedelta(days=1)
    stored_jobs(root, move_to=missed)
    (folder / "a.yaml").unlink()
    (folder / "b.yaml").write_text("name: camp-b\nrounds: [\n")  # no longer valid YAML
    report = sync(folder, root, store)
    assert report.removed == ["camp-a"] and report.unchanged == ["camp-c"] and len(report.problems) == 1
    jobs = stored_jobs(root)
    assert set(jobs) == {"camp-b", "camp-c"}
    assert jobs["camp-c"].next_run_time == missed  # a re-sync never drops a missed run
    assert str(jobs["camp-c"].trigger.fields[4]) == "mon-fri"


@pytest.mark.parametrize(("expr", "first"), [
    ("0 2 * * 1-5", "2026-03-02 02:00"),  # crontab 1-5 is Monday to Friday; 2026-03-01 is a Sunday
    ("0 2 * * 0", "2026-03-01 02:00"),    # 0 is Sunday in crontab (Monday in APScheduler's own numbering)
    ("0 2 * * 7", "2026-03-01 02:00"),
    ("30 6 * * sat", "2026-03-07 06:30"),
    ("0 0 1 * *", "2026-03-01 00:00"),
])
def test_cron_weekdays_count_as_crontab_counts_them(expr: str, first: str) -> None:
    start = datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert f"{crontab_trigger(expr).get_next_fire_time(None, start):%Y-%m-%d %H:%M}" == first


def test_cron_day_and_weekday_together_are_refused() -> None:
    with pytest.raises(ValueError, match="restrict one of them"):
        crontab_trigger("0 0 1 * 1")
