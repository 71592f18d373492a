"""``tessera design`` (a goal -> ranked, judged candidates and a report) and ``tessera campaign ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, out_console

campaign_app = typer.Typer(help="Run, resume, list and inspect campaigns (design sessions from a YAML file).",
                           no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")

STORE = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)")
ROOT = typer.Option(None, "--root", help="folder of campaign sessions (default: 'campaigns' beside the default store)")


def _finish(outcome, json_out: bool, *, limit: int = 20) -> None:  # noqa: ANN001 - a SessionOutcome
    from tessera.agents.session import rank_candidates, session_candidates
    from tessera.cli.session_render import candidate_json, print_ranked

    ranked = rank_candidates(session_candidates(Path(outcome.work_dir)))
    if json_out:
        emit_json({**outcome.model_dump(mode="json"), "candidates": [candidate_json(c) for c in ranked[:limit]]})
        return
    if outcome.status == "awaiting_approval":
        out_console.print(f"session {outcome.session_id} is waiting for approval of its spec")
        return
    print_ranked(ranked, limit=limit)
    for r in outcome.rounds:
        rate = "-" if r.hit_rate is None else f"{r.hit_rate:.0%}"
        out_console.print(f"round {r.round} (seed {r.seed}): {r.n_sampled} sampled, {r.n_relaxed} relaxed, "
                          f"{r.n_stable} stable, {r.n_sun} S.U.N." + (f", {r.n_sun_c} S.U.N.-C" if r.n_sun_c is not None
                                                                      else "") + f"; hit rate {rate}", highlight=False)
    if outcome.stop_reason:
        out_console.print(f"stopped: {outcome.stop_reason}", highlight=False)
    out_console.print(f"session {outcome.session_id}: {outcome.work_dir}", highlight=False, soft_wrap=True)
    if outcome.report_path:
        out_console.print(f"report: {outcome.report_path}", highlight=False, soft_wrap=True)


@app.command("design")
def design_command(
    goal: str = typer.Argument(..., help='the design goal in words, e.g. "a kagome net of Mn with Sn, 12 atoms"'),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="crystals per round (default: the plan's)"),
    rounds: int = typer.Option(1, "--rounds", min=1, help="rounds at most"),
    budget_minutes: Optional[float] = typer.Option(None, "--budget-minutes", min=0.1, help="wall-time budget"),
    relaxations: Optional[int] = typer.Option(None, "--relaxations", min=0, help="relaxations at most, whole session"),
    steps: int = typer.Option(0, "--steps", min=0, help="reverse sampling steps (0: configs/sampler.yaml)"),
    confirm: bool = typer.Option(False, "--confirm", help="SevenNet-0 re-relaxes the hits (confirmed level)"),
    planner: str = typer.Option("auto", "--planner", help="auto (LLM if configured, else offline), llm or offline"),
    out: Optional[Path] = typer.Option(None, "--out", help="session folder (default: runs/design/<session id>)"),
    store: Optional[str] = STORE,
    top: int = typer.Option(20, "--top", min=1, help="rows of the ranked table"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Plan a goal, then sample, prescreen, relax and judge round by round; print the ranked table and a report."""
    from tessera.agents.planner.select import make_planner
    from tessera.agents.session import DesignSession, SessionOptions, new_session_id
    from tessera.cli.session_render import SessionProgress
    from tessera.tools.errors import InputError, TesseraError
    from tessera.tools.spec import parse_spec

    if planner not in ("auto", "llm", "offline"):
        raise InputError(f"--planner {planner}: choose auto, llm or offline")
    chosen = make_planner(backend=planner)
    plan = chosen.plan(goal)
    data = plan.spec.model_dump(mode="json")
    if n is not None:
        data["budgets"]["samples"] = n
    if budget_minutes is not None:
        data["budgets"]["wall_minutes"] = budget_minutes
    if relaxations is not None:
        data["budgets"]["relaxations"] = relaxations
    spec = parse_spec(data, source="design")
    sid = new_session_id("design")
    work = out if out is not None else Path("runs") / "design" / sid
    if work.exists() and any(work.iterdir()):
        raise InputError(f"--out {work} is not empty: choose a new folder")
    with SessionProgress(quiet=json_out) as prog:
        if plan.unused:
            prog.on_message(f"planner ({plan.backend}) could not use: {', '.join(plan.unused)}")
        session = DesignSession(work, store=store, planner=chosen, hooks=prog.hooks())
        try:
            outcome = session.start(goal=goal, spec=spec, options=SessionOptions(rounds=rounds, steps=steps,
                                    confirm="sevennet" if confirm else None), session_id=sid,
                                    plan=plan)
        except TesseraError as exc:  # nothing finished is lost: say how to go on from the last finished step
            raise type(exc)(f"{exc} (session kept: tessera campaign resume {work})") from None
        finally:
            session.close()
    _finish(outcome, json_out, limit=top)


@campaign_app.command("run")
def campaign_run(
    file: Path = typer.Argument(..., help="campaign YAML (see configs/campaigns/)"),
    root: Optional[Path] = ROOT,
    store: Optional[str] = STORE,
    json_out: bool = JSON_OPTION,
) -> None:
    """Start a new session of a campaign."""
    from tessera.agents.campaign import run_campaign
    from tessera.cli.session_render import SessionProgress

    with SessionProgress(quiet=json_out) as prog:
        outcome = run_campaign(file, root=root, store=store, hooks=prog.hooks())
    _finish(outcome, json_out)


@campaign_app.command("resume")
def campaign_resume(
    session_id: str = typer.Argument(..., help="the session id (tessera campaign list), or a session folder's path"),
    root: Optional[Path] = ROOT,
    store: Optional[str] = STORE,
    json_out: bool = JSON_OPTION,
) -> None:
    """Continue a killed or interrupted session (a campaign's, or a `tessera design` folder) from its last finished step."""
    from tessera.agents.campaign import resume_campaign
    from tessera.cli.session_render import SessionProgress

    with SessionProgress(quiet=json_out) as prog:
        outcome = resume_campaign(session_id, root=root, store=store, hooks=prog.hooks())
    _finish(outcome, json_out)


@campaign_app.command("list")
def campaign_list(root: Optional[Path] = ROOT, json_out: bool = JSON_OPTION) -> None:
    """Every campaign session, newest first, with its status."""
    from rich.table import Table

    from tessera.agents.campaign import list_campaigns

    rows = list_campaigns(root)
    if json_out:
        emit_json({"sessions": [r.model_dump(mode="json") for r in rows]})
        return
    if not rows:
        out_console.print("No campaign sessions yet (tessera campaign run FILE starts one).")
        return
    table = Table(title="Campaign sessions", title_justify="left")
    for col in ("session", "campaign", "started (UTC)", "status", "rounds", "hits", "stopped because"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r.session_id, r.campaign or "-", (r.created_at or "")[:19].replace("T", " "), r.status,
                      f"{r.rounds_done}/{r.rounds or '?'}", str(r.hits), r.stop_reason or "")
    out_console.print(table)


@campaign_app.command("status")
def campaign_status_cmd(
    session_id: str = typer.Argument(..., help="the session id"),
    root: Optional[Path] = ROOT,
    json_out: bool = JSON_OPTION,
) -> None:
    """One session's status, rounds and report."""
    from tessera.agents.campaign import campaign_status, default_campaign_root

    status = campaign_status((root or default_campaign_root()) / session_id)
    if json_out:
        emit_json(status.model_dump(mode="json"))
        return
    for key, value in status.model_dump().items():
        out_console.print(f"{key}: {value}", highlight=False, soft_wrap=True)
