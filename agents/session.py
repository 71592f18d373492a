"""A design session: the discovery loop as a LangGraph StateGraph, checkpointed in SQLite.

    understand -> [approve] -> [tune] -> generate -> prescreen -> relax -> assess -> record -> [learn] -> decide -+-> report
                                  ^                                                         |
                                  +------------------------ another round ------------------+

Nodes hold no physics: they call tools/ (sample_crystals, the evaluate stages, check_constraints) and the
store. The state holds only small JSON (the spec, paths, counts); crystals travel between nodes as the
round's ``candidates.jsonl``. Durability has three layers:

- LangGraph's SQLite checkpointer (``<work>/session.sqlite``) saves the state after every node, so a
  resumed session starts at the first node that had not finished;
- the tool ledger (:mod:`tessera.agents.ledger`) makes each node's tool call run once: a node re-entered
  after a kill returns the recorded result of a call that had already finished;
- the relaxation journal (``round-NN/eval/relax_progress.jsonl``) keeps each relaxation the moment it ends.

Sampling is seeded per round (``spec.seed + round``), relaxation is deterministic, so a session killed at
any point and resumed ends with the same candidates as one that ran through. Relaxation is best-first by
the unrelaxed E_hull estimate (``tools.evaluate.relaxation_queue``), so a relaxation budget spends itself on
the likeliest hits. Budgets: ``spec.budgets.samples`` crystals per round, ``spec.budgets.relaxations``
relaxations in the whole session, ``spec.budgets.wall_minutes`` of node time (checked between rounds).
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from tessera.agents.ledger import ToolLedger
from tessera.tools.errors import InputError
from tessera.tools.spec import DesignSpec, parse_spec

SESSION_FILE: str = "session.json"
CHECKPOINT_FILE: str = "session.sqlite"
RoundStage = Literal["understand", "approve", "generate", "prescreen", "relax", "assess", "record", "decide", "report"]


class SessionOptions(BaseModel):
    """How a session runs (the spec says what it looks for)."""

    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(1, ge=1, le=1000, description="rounds at most (each samples spec.budgets.samples crystals)")
    stop_after_hits: int | None = Field(None, ge=1, description="stop once this many S.U.N.-C hits are recorded")
    steps: int = Field(0, ge=0, description="reverse sampling steps (0: configs/sampler.yaml)")
    threads: int = Field(2, ge=1, description="torch threads for sampling")
    checkpoint: str | None = Field(None, description="generator weights (None: the shipped model)")
    gate: bool = Field(True, description="every prescreen stage gates relaxation")
    confirm: Literal["sevennet"] | None = Field(None, description="second judge for the hits")
    workers: int | None = Field(0, description="relaxation workers (0: in this process; None: one per core)")
    relax_steps: int | None = Field(None, ge=1, description="FIRE steps at most (None: configs/relax.yaml)")
    approve: bool = Field(False, description="pause for the human to approve or edit the spec (chat)")
    tune_trials: int = Field(0, ge=0, le=200, description="before round 0, tune the guidance strengths with this many "
                             "Optuna trials on pilot batches (0: use the spec's strengths)")
    tune_objective: Literal["pareto", "yield"] = Field("pareto", description="pareto: constraint share vs the unrelaxed "
                                                       "E_hull estimate (no relaxation); yield: S.U.N.-C per CPU-second")
    tune_pilot: int = Field(4, ge=1, le=64, description="crystals per tuning trial")
    tune_steps: int = Field(50, ge=1, description="reverse steps per tuning trial")
    learn: bool = Field(False, description="active learning: the learned stability model ranks the relaxations, and "
                        "each round's relaxed candidates fine-tune it (a version is used only if it beats its parent)")
    learn_root: str | None = Field(None, description="the model versions this session learns into (None: <work>/stability, "
                                   "seeded from the shipped data/stability)")
    learn_gate: float | None = Field(None, ge=0, le=1, description="with learn: stop candidates whose predicted "
                                     "P(stable) is below this (None: rank only)")
    max_pictures: int = Field(24, ge=0, description="structure pictures in the report")


class SessionState(TypedDict, total=False):
    """What the checkpointer saves after each node (JSON-able only)."""

    session_id: str
    goal: str | None
    spec: dict[str, Any] | None
    plan: dict[str, Any] | None
    options: dict[str, Any]
    run_id: str | None
    round: int
    stage_file: str | None
    relax_queue: list[int]
    rounds_done: list[dict[str, Any]]
    spent_seconds: float
    spent_relaxations: int
    hits: int
    stop_reason: str | None
    rejected: bool
    report_path: str | None


@dataclass
class SessionHooks:
    """Callbacks a front end (CLI progress bars, chat) listens on; all optional."""

    on_node: Callable[[str, int], None] | None = None
    """(node name, round) as a node starts."""
    on_step: Callable[[Any], None] | None = None
    """each tools.evaluate.EvalStep of prescreen, relax and assess."""
    on_message: Callable[[str], None] | None = None
    """one line for the user (a plan note, a stop reason)."""


class RoundSummary(BaseModel):
    """One round's numbers, as the report's timeline shows them."""

    round: int
    seed: int
    n_sampled: int
    n_prescreen_passed: int
    n_relaxed: int
    n_stable: int
    n_on_hull: int
    n_sun: int
    n_sun_c: int | None = Field(None, description="S.U.N. and meeting the spec (None: the spec has no constraint)")
    n_motif_exact: int | None = Field(None, description="the motif found at the end of sampling")
    n_motif_retained: int | None = Field(None, description="relaxed and the motif still found")
    n_guidance_met: int | None = Field(None, description="every guidance term within tolerance at the end of sampling")
    hit_rate: float | None = Field(None, description="n_stable / n_relaxed: the share of relaxations that ended stable")
    model_version: str | None = Field(None, description="the stability model the prescreen used this round, if any")
    seconds: float


class SessionOutcome(BaseModel):
    """Where a session stands after ``start``/``resume``/``decide``."""

    session_id: str
    status: Literal["finished", "awaiting_approval", "rejected"]
    work_dir: str
    spec: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    rounds: list[RoundSummary] = Field(default_factory=list)
    stop_reason: str | None = None
    report_path: str | None = None
    run_id: str | None = None


def new_session_id(prefix: str = "design") -> str:
    """``design-20261202-031500-1a2b3c``: sortable by time, unique."""
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _round_dir(work: Path, k: int) -> Path:
    return work / f"round-{k:02d}"


def _read_stage(path: str | Path) -> list[Any]:
    from tessera.tools.candidate import Candidate

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Candidate.model_validate_json(line) for line in lines if line.strip()]


class DesignSession:
    """One session's graph, bound to its work folder, store and planner.

    ``work_dir`` holds everything the session writes (``session.json``, the SQLite checkpoints, the ledger,
    one folder per round, the report). ``store`` is the store location (None: the default store).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        store: str | None = None,
        planner: Any = None,
        hooks: SessionHooks | None = None,
    ) -> None:
        self.work = Path(work_dir).resolve()  # absolute: paths in the state and the report stay valid from any cwd
        if self.work.exists() and not self.work.is_dir():
            raise InputError(f"session folder {self.work} is an existing file")
        self.work.mkdir(parents=True, exist_ok=True)
        self.store_location = store
        self._planner = planner
        self.hooks = hooks or SessionHooks()
        self.ledger = ToolLedger(self.work)
        self._store: Any = None
        self._conn = sqlite3.connect(str(self.work / CHECKPOINT_FILE), check_same_thread=False)
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.graph = build_graph(self).compile(checkpointer=SqliteSaver(self._conn))

    # -- the public face ---------------------------------------------------------------------------

    @property
    def session_id(self) -> str:
        meta = self.meta()
        return str(meta["session_id"]) if meta else self.work.name

    def meta(self) -> dict[str, Any] | None:
        path = self.work / SESSION_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def start(
        self,
        *,
        goal: str | None = None,
        spec: DesignSpec | None = None,
        options: SessionOptions | None = None,
        session_id: str | None = None,
        extra: dict[str, Any] | None = None,
        plan: Any = None,
    ) -> SessionOutcome:
        """Begin a session from a goal (planned) or a spec (used as given). ``plan`` (an agents.planner Plan)
        is the planning already done by the caller, recorded as the planner's (its spec is ``spec``).
        ``extra`` lands in session.json (a campaign's name and file)."""
        if goal is None and spec is None:
            raise InputError("a design session needs a goal or a spec")
        if self.meta() is not None:
            raise InputError(f"{self.work} already holds session {self.session_id}: resume it instead")
        options = options or SessionOptions()
        sid = session_id or self.work.name
        meta = {"session_id": sid, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "goal": goal, "store": self.store_location, "options": options.model_dump(mode="json"),
                **(extra or {})}
        (self.work / SESSION_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        state: SessionState = {
            "session_id": sid, "goal": goal, "spec": spec.model_dump(mode="json") if spec else None,
            "plan": plan.model_dump(mode="json") if plan is not None else None,
            "options": options.model_dump(mode="json"), "run_id": None, "round": 0, "stage_file": None,
            "relax_queue": [], "rounds_done": [], "spent_seconds": 0.0, "spent_relaxations": 0, "hits": 0,
            "stop_reason": None, "rejected": False, "report_path": None,
        }
        return self._drive(state)

    def resume(self) -> SessionOutcome:
        """Continue from the last finished node (after a kill, or a restart)."""
        if self.meta() is None:
            raise InputError(f"{self.work} holds no design session")
        snapshot = self.graph.get_state(self._config())
        if not snapshot.next:  # finished (or never started a node)
            if snapshot.values:
                return self._outcome(snapshot.values)
            raise InputError(f"session {self.session_id} has no checkpoint to resume from")
        if _pending_interrupt(snapshot):
            return self._outcome(snapshot.values, status="awaiting_approval")
        return self._drive(None)

    def decide(self, decision: dict[str, Any]) -> SessionOutcome:
        """Answer the approval pause: ``{"action": "approve"}``, ``{"action": "edit", "spec": {...}}`` or
        ``{"action": "reject", "reason": "..."}``."""
        from langgraph.types import Command

        return self._drive(Command(resume=decision))

    def state(self) -> dict[str, Any]:
        return dict(self.graph.get_state(self._config()).values or {})

    def close(self) -> None:
        self._conn.close()

    # -- helpers used by the nodes -----------------------------------------------------------------

    def planner(self) -> Any:
        if self._planner is None:
            from tessera.agents.planner.select import make_planner

            self._planner = make_planner()
        return self._planner

    def store(self) -> Any:
        if self._store is None:
            from tessera.store import Store

            self._store = Store.open(self.store_location)
        return self._store

    def say(self, line: str) -> None:
        if self.hooks.on_message is not None:
            self.hooks.on_message(line)

    def _config(self) -> dict[str, Any]:
        return {"configurable": {"thread_id": self.session_id}}

    def _drive(self, payload: Any) -> SessionOutcome:
        self.graph.invoke(payload, self._config())
        snapshot = self.graph.get_state(self._config())
        if _pending_interrupt(snapshot):
            return self._outcome(snapshot.values, status="awaiting_approval")
        return self._outcome(snapshot.values)

    def _outcome(self, values: dict[str, Any], status: str | None = None) -> SessionOutcome:
        if status is None:
            status = "rejected" if values.get("rejected") else "finished"
        return SessionOutcome(
            session_id=str(values.get("session_id") or self.session_id), status=status, work_dir=str(self.work),
            spec=values.get("spec"), plan=values.get("plan"),
            rounds=[RoundSummary.model_validate(r) for r in values.get("rounds_done") or []],
            stop_reason=values.get("stop_reason"), report_path=values.get("report_path"), run_id=values.get("run_id"),
        )


def _pending_interrupt(snapshot: Any) -> bool:
    return any(getattr(t, "interrupts", None) for t in (snapshot.tasks or ()))


# ------------------------------------------------------------------------------------------------- nodes


def build_graph(session: DesignSession) -> Any:
    """The StateGraph of a session; its nodes close over ``session`` (planner, store, hooks, ledger)."""
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(SessionState)
    nodes: dict[str, Callable[[SessionState], dict[str, Any]]] = {
        "understand": lambda s: _understand(session, s),
        "approve": lambda s: _approve(session, s),
        "tune": lambda s: _tune(session, s),
        "generate": lambda s: _generate(session, s),
        "prescreen": lambda s: _prescreen(session, s),
        "relax": lambda s: _relax(session, s),
        "assess": lambda s: _assess(session, s),
        "record": lambda s: _record(session, s),
        "learn": lambda s: _learn(session, s),
        "decide": lambda s: _decide(session, s),
        "report": lambda s: _report(session, s),
    }
    for name, fn in nodes.items():
        g.add_node(name, _timed(session, name, fn))
    g.add_edge(START, "understand")
    g.add_conditional_edges("understand", lambda s: "approve" if s["options"].get("approve") else "tune",
                            ["approve", "tune"])
    g.add_conditional_edges("approve", lambda s: END if s.get("rejected") else "tune", ["tune", END])
    g.add_edge("tune", "generate")
    for a, b in (("generate", "prescreen"), ("prescreen", "relax"), ("relax", "assess"), ("assess", "record"),
                 ("record", "learn"), ("learn", "decide")):
        g.add_edge(a, b)
    g.add_conditional_edges("decide", lambda s: "report" if s.get("stop_reason") else "generate", ["generate", "report"])
    g.add_edge("report", END)
    return g


def _timed(session: DesignSession, name: str, fn: Callable[[SessionState], dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A node that reports its start and adds its own wall time to ``spent_seconds`` (so time spent dead
    between a kill and a resume is not charged to the budget)."""

    def node(state: SessionState) -> dict[str, Any]:
        if session.hooks.on_node is not None:
            session.hooks.on_node(name, int(state.get("round", 0)))
        t0 = time.perf_counter()
        update = fn(state)
        update.setdefault("spent_seconds", float(state.get("spent_seconds", 0.0)) + time.perf_counter() - t0)
        return update

    return node


def _spec(state: SessionState) -> DesignSpec:
    return parse_spec(state["spec"], source="session spec")


def _options(state: SessionState) -> SessionOptions:
    return SessionOptions.model_validate(state["options"])


def _run(session: DesignSession, state: SessionState) -> Any:
    return session.store().resume_run(state["run_id"])


def _understand(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Goal -> DesignSpec (the planner), or the given spec; open the session's store run and log both."""
    goal = state.get("goal")
    plan_json: dict[str, Any] | None = None
    if state.get("spec") is not None:
        spec = _spec(state)
        plan_json = state.get("plan")  # planned by the caller (design, campaign, chat): recorded as the planner's
    else:
        plan = session.planner().plan(goal or "")
        spec = plan.spec
        plan_json = plan.model_dump(mode="json")
        for note in plan.notes:
            session.say(f"planner: {note}")
        if plan.unused:
            session.say(f"planner could not use: {', '.join(plan.unused)}")
    if goal and spec.goal != goal:
        spec = spec.model_copy(update={"goal": goal})
    st = session.store()
    run_id = state["session_id"]
    try:
        run = st.start_run("design_session", {"options": state["options"], "spec": spec.model_dump(mode="json")},
                           goal=goal, spec_hash=spec.spec_hash(), seed=spec.seed, run_id=run_id)
        if goal:
            run.log_goal(goal)
        # The LLM's requests and replies first (they came before the plan), so the trail reads in order.
        for call in (plan_json or {}).get("llm_calls", []):
            run.log_llm_call(model=str(call.get("model")), endpoint=call.get("endpoint"),
                             params={k: call.get(k) for k in ("turn", "mode", "temperature", "outcome")},
                             request=call.get("request"), response=call.get("response"), seconds=call.get("seconds"),
                             actor=(plan_json or {}).get("backend", "llm"))
        logged_plan = {k: v for k, v in plan_json.items() if k != "llm_calls"} if plan_json else None
        run.log_plan(logged_plan or {"spec": spec.model_dump(mode="json")},
                     reasoning="; ".join((plan_json or {}).get("used", [])) or None,
                     actor=(plan_json or {}).get("backend", "user"))
    except InputError:
        if session.store().audit_log(run_id).exists():  # killed after opening the run: it is already there
            pass
        else:
            raise
    return {"spec": spec.model_dump(mode="json"), "plan": plan_json, "run_id": run_id}


def _approve(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Pause for the human (a LangGraph interrupt); approve, edit (validated) or reject the spec."""
    from langgraph.types import interrupt

    decision = interrupt({"spec": state["spec"], "plan": state.get("plan")})
    action = (decision or {}).get("action") if isinstance(decision, dict) else None
    run = _run(session, state)
    if action == "approve":
        run.log_event("human_decision", {"action": "approve", "spec_hash": _spec(state).spec_hash()}, actor="user")
        return {}
    if action == "edit":
        spec = parse_spec(decision.get("spec"), source="edited spec")
        if state.get("goal") and not spec.goal:
            spec = spec.model_copy(update={"goal": state["goal"]})
        run.log_event("human_decision", {"action": "edit", "spec": spec.model_dump(mode="json"),
                                         "spec_hash": spec.spec_hash()}, actor="user")
        return {"spec": spec.model_dump(mode="json")}
    reason = str((decision or {}).get("reason", "")) if isinstance(decision, dict) else ""
    run.log_event("human_decision", {"action": "reject", "reason": reason}, actor="user")
    run.finish({"status": "rejected", "reason": reason})
    return {"rejected": True, "stop_reason": f"rejected by the user{': ' + reason if reason else ''}"}


def _tune(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Optional campaign step before round 0: Optuna tunes the guidance strengths (and the motif's demasking
    fraction) on pilot batches; the chosen values replace the spec's for every round. A no-op without
    ``options.tune_trials`` or without anything to tune."""
    opts = _options(state)
    spec = _spec(state)
    if opts.tune_trials <= 0:
        return {}
    if not spec.guidance and spec.motif is None:
        session.say("tune: the spec has no guidance terms and no motif, nothing to tune")
        return {}

    def call() -> dict[str, Any]:
        from tessera.tools.tune import TuneParams, tune, tuned_spec

        params = TuneParams(spec=spec, trials=opts.tune_trials, objective=opts.tune_objective, pilot=opts.tune_pilot,
                            steps=opts.tune_steps, out=session.work / "tune", threads=opts.threads,
                            study=f"{state['session_id']}-tune")
        result = tune(params, on_warning=session.say)
        if result.chosen is None:
            return {"spec": None, "study": result.study, "storage": result.storage, "n_trials": result.n_trials}
        new = tuned_spec(spec, result.chosen.params)
        return {"spec": new.model_dump(mode="json"), "study": result.study, "storage": result.storage,
                "n_trials": result.n_trials, "chosen": result.chosen.model_dump(mode="json")}

    result, ran = session.ledger.once(0, "tune", call)
    if ran:
        _run(session, state).log_tool_call(tool="tune", arguments={"trials": opts.tune_trials,
                                                                  "objective": opts.tune_objective},
                                           result_summary=result, seconds=0.0)
    if not result.get("spec"):
        session.say("tune: no trial completed; the spec's strengths are kept")
        return {}
    session.say(f"tune: {result['n_trials']} trials in study {result['study']}; chosen values applied")
    return {"spec": result["spec"]}


def _generate(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Sample this round's crystals (seed = spec.seed + round)."""
    from tessera.tools.sample import SampleParams, sample_crystals

    k = int(state["round"])
    spec, opts = _spec(state), _options(state)
    out = _round_dir(session.work, k) / "sample"
    extra: dict[str, Any] = {"steps": opts.steps, "threads": opts.threads}
    if opts.checkpoint:
        extra["checkpoint"] = Path(opts.checkpoint)
    params = SampleParams.from_spec(spec, out=out, **extra).model_copy(update={"seed": spec.seed + k})

    def call() -> dict[str, Any]:
        result = sample_crystals(params, on_warning=session.say)
        return {"candidates": str(out / "candidates.jsonl"), "n": len(result.candidates), "seed": params.seed,
                "seconds": result.seconds, "checkpoint": result.checkpoint, "warnings": result.warnings}

    result, ran = session.ledger.once(k, "sample", call)
    if ran:
        _run(session, state).log_tool_call(tool="sample", arguments=params.model_dump(mode="json"),
                                           result_summary=result, seconds=float(result["seconds"]))
    return {"stage_file": result["candidates"]}


def _evaluate_params(spec: DesignSpec, opts: SessionOptions, *, max_relaxations: int | None = None,
                     learn_root: Path | None = None) -> Any:
    from tessera.tools.evaluate import EvaluateParams
    from tessera.tools.relax import load_relax_params

    relax = load_relax_params()
    if opts.relax_steps is not None:
        relax = relax.model_copy(update={"steps": opts.relax_steps})
    extra: dict[str, Any] = {}
    if learn_root is not None:  # the learned model ranks (and with learn_gate gates) before relaxation
        from tessera.tools.prescreen import load_prescreen_params

        prescreen = load_prescreen_params()
        model_stage = prescreen.stability_model.model_copy(update={
            "enabled": True, "root": str(learn_root), "version": "promoted", "min_probability": opts.learn_gate,
            "ceiling": None})
        extra["prescreen"] = prescreen.model_copy(update={"stability_model": model_stage})
    return EvaluateParams(gate=opts.gate, relax=relax, stable_threshold=spec.thresholds.stable_e_hull,
                          confirm=opts.confirm, workers=opts.workers, max_relaxations=max_relaxations, **extra)


def learn_root(session: "DesignSession", opts: SessionOptions) -> Path | None:
    """The model registry a learning session uses (created from the shipped data/stability on first use)."""
    if not opts.learn:
        return None
    root = Path(opts.learn_root) if opts.learn_root else session.work / "stability"
    if not (root / "heldout.npz").exists():
        import shutil

        from tessera.tools.stability_model import STABILITY_DIR

        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(STABILITY_DIR, root, dirs_exist_ok=True)
    return root


def _model_in_use(root: Path | None) -> str | None:
    if root is None:
        return None
    from tessera.tools.stability_model import Registry

    promoted = Registry(root).promoted()
    return promoted.name if promoted is not None else None


def _remaining_relaxations(spec: DesignSpec, state: SessionState) -> int | None:
    if spec.budgets.relaxations is None:
        return None
    return max(0, spec.budgets.relaxations - int(state.get("spent_relaxations", 0)))


def _prescreen(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Prescreen the round's crystals and queue the relaxations best-first within the budget."""
    from tessera.tools.evaluate import iter_prescreen, relaxation_queue, write_candidates
    from tessera.tools.lineage import read_candidates_file

    k = int(state["round"])
    spec, opts = _spec(state), _options(state)
    limit = _remaining_relaxations(spec, state)
    eval_dir = _round_dir(session.work, k) / "eval"

    root = learn_root(session, opts)

    def call() -> dict[str, Any]:
        candidates = read_candidates_file(Path(str(state["stage_file"])))
        params = _evaluate_params(spec, opts, max_relaxations=limit, learn_root=root)
        for step in iter_prescreen(candidates, params):
            _emit(session, step)
        queue = relaxation_queue(candidates, limit=limit)
        eval_dir.mkdir(parents=True, exist_ok=True)
        path = eval_dir / "candidates.jsonl"
        write_candidates(candidates, path)
        return {"stage_file": str(path), "queue": queue, "n": len(candidates),
                "n_passed": sum(c.error is None for c in candidates), "model_version": _model_in_use(root)}

    result, ran = session.ledger.once(k, "prescreen", call)
    if ran:
        _run(session, state).log_tool_call(tool="prescreen", arguments={"round": k, "gate": opts.gate,
                                                                      "max_relaxations": limit},
                                           result_summary={key: result[key] for key in ("n", "n_passed", "queue")},
                                           seconds=0.0)
    return {"stage_file": result["stage_file"], "relax_queue": list(result["queue"])}


def _relax(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Relax the queued candidates (journalled one by one: a kill loses only those in flight)."""
    from tessera.tools.evaluate import RelaxJournal, iter_relax, relax_logger, write_candidates

    k = int(state["round"])
    spec, opts = _spec(state), _options(state)
    stage = Path(str(state["stage_file"]))
    queue = list(state.get("relax_queue") or [])

    def call() -> dict[str, Any]:
        candidates = _read_stage(stage)
        journal = RelaxJournal(path=stage.parent / "relax_progress.jsonl")
        already = set(journal.done)
        log = relax_logger(_run(session, state))
        from tessera.tools.hashing import structure_key

        for step in iter_relax(candidates, queue, _evaluate_params(spec, opts), journal=journal):
            c = step.candidate
            # A relaxation found in the journal finished before a kill: it was logged then, not again now.
            if c is not None and structure_key(c.initial_cif or "") not in already:
                log(step)
            _emit(session, step)
        write_candidates(candidates, stage)
        return {"n_relaxed": sum(candidates[i].relaxed for i in queue), "n_queued": len(queue)}

    result, _ = session.ledger.once(k, "relax", call)
    return {"spent_relaxations": int(state.get("spent_relaxations", 0)) + int(result["n_queued"])}


def _assess(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Hull, second judge, novelty, and the spec's constraints (motif retained, guidance targets)."""
    from tessera.tools.evaluate import check_constraints, iter_assess, summarize, write_candidates
    from tessera.tools.hull import ReferenceHull
    from tessera.tools.evaluate import RelaxJournal

    k = int(state["round"])
    spec, opts = _spec(state), _options(state)
    stage = Path(str(state["stage_file"]))

    def call() -> dict[str, Any]:
        t0 = time.perf_counter()
        candidates = _read_stage(stage)
        params = _evaluate_params(spec, opts)
        for step in iter_assess(candidates, params, journal=RelaxJournal(path=stage.parent / "relax_progress.jsonl")):
            _emit(session, step)
        n_repeats = mark_repeats(candidates, session_candidates(session.work, before_round=k))
        constraints = check_constraints(candidates)
        write_candidates(candidates, stage)
        summary = summarize(candidates, params, time.perf_counter() - t0, ReferenceHull.scheme_name())
        (stage.parent / "summary.json").write_text(summary.model_dump_json(indent=1) + "\n", encoding="utf-8")
        n_sun_c = constraints.n_sun_c if constraints is not None else None
        motif_guidance = ({"n_motif_exact": constraints.n_motif_exact, "n_motif_retained": constraints.n_motif_retained,
                           "n_guidance_met": constraints.n_guidance_met} if constraints is not None else {})
        return {**motif_guidance, "n": summary.n_inputs, "n_prescreen_passed": summary.n_prescreen_passed,
                "n_relaxed": summary.n_relaxed, "n_stable": summary.n_stable, "n_on_hull": summary.n_stable_le0,
                "n_sun": summary.n_sun, "n_sun_c": n_sun_c, "n_confirmed": summary.n_confirmed,
                "n_repeats_of_earlier_rounds": n_repeats}

    result, ran = session.ledger.once(k, "assess", call)
    if ran:
        _run(session, state).log_tool_call(tool="assess", arguments={"round": k}, result_summary=result, seconds=0.0)
    return {}


def _record(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Put the round's candidates into the store (one run per session, the round on each row)."""
    k = int(state["round"])
    stage = Path(str(state["stage_file"]))

    def call() -> dict[str, Any]:
        candidates = _read_stage(stage)
        ids = _run(session, state).add_candidates(candidates, round=k)
        return {"n_recorded": len(ids)}

    session.ledger.once(k, "record", call)
    return {}


def _learn(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Active learning (with ``options.learn``): the round's relaxed candidates fine-tune the stability model;
    the new version is used from the next round only if it beats its parent on the fixed held-out set."""
    opts = _options(state)
    if not opts.learn:
        return {}
    k = int(state["round"])
    stage = Path(str(state["stage_file"]))
    root = learn_root(session, opts)
    assert root is not None

    def call() -> dict[str, Any]:
        from tessera.tools.stability_model import learn_from

        version = learn_from(_read_stage(stage), root=root)
        if version is None:
            return {"version": None, "promoted": False, "in_use": _model_in_use(root), "note": "no new labels"}
        return {"version": version.name, "promoted": bool(version.promoted), "in_use": _model_in_use(root),
                "heldout_f1": version.record.heldout.f1, "parent_f1": (version.record.parent_heldout.f1
                                                                      if version.record.parent_heldout else None),
                "n_added": version.lineage.n_added}

    result, ran = session.ledger.once(k, "learn", call)
    if ran:
        _run(session, state).log_tool_call(tool="learn", arguments={"round": k, "root": str(root)},
                                           result_summary=result, seconds=0.0)
        session.say(f"round {k}: stability model {result.get('version') or '(unchanged)'}"
                    + (" promoted" if result.get("promoted") else " kept, not promoted" if result.get("version") else "")
                    + f"; in use next round: {result.get('in_use')}")
    return {}


def _decide(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """Another round, or stop: rounds done, relaxation budget spent, wall time spent, enough hits."""
    k = int(state["round"])
    spec, opts = _spec(state), _options(state)
    assessed = session.ledger.finished(k, "assess") or {}
    sampled = session.ledger.finished(k, "sample") or {}
    screened = session.ledger.finished(k, "prescreen") or {}
    res = dict(assessed.get("result") or {})
    seconds = sum(float(e.get("seconds", 0.0)) for e in session.ledger.entries() if e.get("round") == k)
    constrained = spec.motif is not None or bool(spec.guidance)
    hits_now = int(res.get("n_sun_c") or 0) if constrained else int(res.get("n_sun") or 0)
    summary = RoundSummary(
        round=k, seed=int((sampled.get("result") or {}).get("seed", spec.seed + k)), n_sampled=int(res.get("n", 0)),
        n_prescreen_passed=int(res.get("n_prescreen_passed", 0)), n_relaxed=int(res.get("n_relaxed", 0)),
        n_stable=int(res.get("n_stable", 0)), n_on_hull=int(res.get("n_on_hull", 0)), n_sun=int(res.get("n_sun", 0)),
        n_sun_c=res.get("n_sun_c"), n_motif_exact=res.get("n_motif_exact"), n_motif_retained=res.get("n_motif_retained"),
        n_guidance_met=res.get("n_guidance_met"), model_version=(screened.get("result") or {}).get("model_version"),
        hit_rate=(int(res.get("n_stable", 0)) / int(res["n_relaxed"])) if res.get("n_relaxed") else None,
        seconds=round(seconds, 2),
    )
    rounds_done = [r for r in (state.get("rounds_done") or []) if r.get("round") != k] + [summary.model_dump()]
    hits = int(state.get("hits", 0)) + hits_now
    spent = float(state.get("spent_seconds", 0.0))
    remaining = _remaining_relaxations(spec, state)
    reason = None
    if k + 1 >= opts.rounds:
        reason = f"all {opts.rounds} round(s) done"
    elif opts.stop_after_hits is not None and hits >= opts.stop_after_hits:
        reason = f"target reached: {hits} hit(s) >= {opts.stop_after_hits}"
    elif remaining is not None and remaining <= 0:
        reason = f"relaxation budget spent ({spec.budgets.relaxations})"
    elif spec.budgets.wall_minutes is not None and spent >= spec.budgets.wall_minutes * 60:
        reason = f"wall-time budget spent ({spent / 60:.1f} of {spec.budgets.wall_minutes} min)"
    session.say(f"round {k}: {summary.n_sampled} sampled, {summary.n_relaxed} relaxed, {summary.n_stable} stable, "
                f"{hits_now} hit(s)" + (f"; stopping: {reason}" if reason else ""))
    update: dict[str, Any] = {"rounds_done": rounds_done, "hits": hits, "stop_reason": reason}
    if reason is None:
        update["round"] = k + 1
    return update


def _report(session: DesignSession, state: SessionState) -> dict[str, Any]:
    """The HTML report of the session's store run; closes the run."""
    from tessera.agents.report import export_run_report, session_section

    k = int(state["round"])
    opts = _options(state)
    path = session.work / "report.html"

    def call() -> dict[str, Any]:
        run = _run(session, state)
        if not run.finished and session.store().get_run(state["run_id"]).status == "running":
            run.finish({"stop_reason": state.get("stop_reason"), "rounds": state.get("rounds_done"),
                        "hits": state.get("hits")})
        section = session_section(goal=state.get("goal"), spec=state.get("spec"), plan=state.get("plan"),
                                  rounds=state.get("rounds_done") or [], stop_reason=state.get("stop_reason"))
        export_run_report(session.store(), state["run_id"], path, max_pictures=opts.max_pictures, intro_html=section)
        return {"report": str(path)}

    result, _ = session.ledger.once(k, "report", call)
    return {"report_path": result["report"]}


def _emit(session: DesignSession, step: Any) -> None:
    if session.hooks.on_step is not None:
        session.hooks.on_step(step)


# ------------------------------------------------------------------------------------------------- results


def mark_repeats(candidates: list[Any], earlier: list[Any]) -> int:
    """Uniqueness across the session: a candidate unique in its round but matching (StructureMatcher, the
    analyze tool's tolerances) a unique relaxed candidate of an earlier round becomes ``unique = False``, so
    S.U.N. counts a structure once per session. Returns how many were marked."""
    from tessera.tools.analyze import MatchParams, matcher

    seen: dict[str, list[Any]] = {}
    for c in earlier:
        if c.unique and c.relaxed and c.formula:
            seen.setdefault(c.formula, []).append(c.structure())
    sm = matcher(MatchParams())
    marked = 0
    for c in candidates:
        if not (c.unique and c.relaxed and c.formula in seen):
            continue
        s = c.structure()
        if any(sm.fit(s, other) for other in seen[c.formula]):
            c.unique = False
            c.provenance["repeat_of_earlier_round"] = True
            marked += 1
    return marked


def session_candidates(work_dir: Path, *, before_round: int | None = None) -> list[Any]:
    """Every assessed candidate of a session (all rounds, or those before ``before_round``), as
    tools.candidate.Candidate."""
    out: list[Any] = []
    for round_dir in sorted(Path(work_dir).glob("round-*")):
        if before_round is not None and int(round_dir.name.split("-")[1]) >= before_round:
            continue
        stage = round_dir / "eval" / "candidates.jsonl"
        if stage.exists() and (round_dir / "eval" / "summary.json").exists():
            out.extend(_read_stage(stage))
    return out


def rank_candidates(candidates: list[Any]) -> list[Any]:
    """Best first: meeting the spec, then S.U.N., then stable, then the lowest E_hull; unjudged last."""

    def key(c: Any) -> tuple[int, int, int, float]:
        meets = c.provenance.get("constraints_satisfied")  # None: no constraint, or not judged
        e = c.e_hull if c.e_hull is not None and math.isfinite(c.e_hull) else math.inf
        return (0 if meets in (True, None) else 1, 0 if (c.stable and c.unique and c.novel) else 1,
                0 if c.stable else 1, e)

    judged = [c for c in candidates if c.e_hull is not None]
    return sorted(judged, key=key) + [c for c in candidates if c.e_hull is None]
