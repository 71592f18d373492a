"""The engine of ``tessera chat``: one user line in, what to show out; no terminal, no Rich.

A :class:`ChatSession` walks a chemist through a design session:

    awaiting_goal --goal--> proposed --approve--> running --> results
                              |  ^                              |
                              +--+ set FIELD VALUE, a new goal   +-- follow-ups; "goal: ..." or "set ..."
                                   (replaces the plan), reject       proposes the next spec

- **awaiting_goal**: a sentence is a goal; the planner turns it into a :class:`~tessera.tools.spec.DesignSpec`
  (a :class:`~tessera.agents.planner.base.PlanningError` is one line, and the chat keeps waiting).
- **proposed**: the spec is shown field by field. ``set FIELD VALUE`` edits one field (``set budgets.samples
  8``, ``set chemistry.elements Li,Co,O``, ``set motif honeycomb Co``, ``set motif.lattice kagome``, ``set
  seed 3``; a unique last name such as ``samples`` is enough); every edit is validated as a whole spec, and an
  invalid one is one line that leaves the spec as it was. A new goal sentence replaces the plan; ``reject
  [because ...]`` drops it; ``approve`` runs it.
- **running**: the approved spec runs as a :class:`~tessera.agents.session.DesignSession` (its own folder
  under ``work``, its own store run). The session pauses for approval like any chat-driven session, and the
  chat answers the pause: ``approve`` when the spec is the planner's, ``edit`` with the final spec when the
  user changed fields, so the audit log holds the planner's plan and the human decision separately.
- **results**: follow-ups, answered from the store (never from the planner's or a model's memory), by fixed,
  case-insensitive rules (number words one..ten are read as numbers):

  - ``show the five most stable`` / ``top 3`` / ``results``: this session's run, sorted by E_hull;
  - ``why was ID rejected`` (or stopped): the candidate's error, its prescreen stages and their reasons,
    E_hull against the run's threshold, uniqueness, novelty and its constraint record, from its store row;
  - ``more like ID``: the store's fingerprint similarity search around that candidate, across all runs;
  - ``export the hits as POSCAR|CIF|extxyz [to DIR]``: the run's stable candidates through the store export
    (POSCAR is the ``vasp`` export: a folder per candidate with POSCAR, INCAR, KPOINTS and POTCAR.spec);
    ``export all ...``, ``export the top 3 ...`` and ``export ID ...`` choose other rows;
  - ``approve ID [because ...]`` / ``reject ID because ...``: a review decision in the store (audit-logged);
  - ``help``, ``quit``. ``#N`` stands for row N of the last table shown, ``it`` for the last candidate named.

  Anything else is one line saying what the chat understands; an unknown id is one line too.

When an LLM planner is configured it is used for planning only: follow-ups still go through these rules, so
an answer about a candidate always comes from its stored record. Library code: every failure a user can cause
(an unknown field, a bad value, an unknown id, a store problem) comes back as a line of the reply; nothing
here prints.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tessera.agents.planner.base import Plan, Planner, PlanningError
from tessera.agents.session import DesignSession, SessionHooks, SessionOptions, SessionOutcome, new_session_id
from tessera.tools.errors import InputError, TesseraError
from tessera.tools.measures import STABLE_E_HULL
from tessera.tools.spec import DesignSpec, parse_spec

ChatState = Literal["awaiting_goal", "proposed", "running", "results"]

NUMBER_WORDS: dict[str, int] = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                                "eight": 8, "nine": 9, "ten": 10}
_NUM = r"(\d+|" + "|".join(NUMBER_WORDS) + r")"
DEFAULT_TOP: int = 5
"""Rows for "show the most stable" / "more like X" when no number is given."""
MAX_ROWS: int = 50
"""At most this many rows in any table (a chat is read, not scrolled)."""
RESULT_ROWS: int = 20
"""Rows of the table shown when a run finishes."""

FORMATS: dict[str, str] = {"poscar": "vasp", "vasp": "vasp", "cif": "cif", "extxyz": "extxyz", "xyz": "extxyz",
                           "csv": "csv", "json": "json"}
"""Words for a format -> the store export's format name."""
_SINGLE_FILE: dict[str, str] = {"extxyz": ".extxyz", "csv": ".csv", "json": ".json"}
_NONE_WORDS: frozenset[str] = frozenset({"none", "null", "unlimited", "unset", "off"})
_ELEMENT_KEYS: frozenset[str] = frozenset({"chemistry.elements", "chemistry.required", "motif.element"})
_FIXED_KEYS: frozenset[str] = frozenset({"goal", "version"})

UNDERSTOOD: str = ("I understand: show the N most stable, why was ID rejected, more like ID, export the hits as "
                   "POSCAR|CIF|extxyz [to DIR], approve ID, reject ID because ..., set FIELD VALUE, goal: NEW GOAL, "
                   "help, quit.")
UNDERSTOOD_PROPOSED: str = ("I understand: approve, set FIELD VALUE (e.g. set budgets.samples 8), reject [because ...], "
                            "show spec, a new goal, help, quit.")


# ------------------------------------------------------------------------------------------------ replies


@dataclass
class ChatTable:
    """A table for the front end to draw: cells are already text."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    caption: str | None = None

    def text(self) -> list[str]:
        """Plain, column-aligned lines (for logs, tests and transcripts)."""
        widths = [max([len(c)] + [len(r[i]) for r in self.rows]) for i, c in enumerate(self.columns)]

        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        out = [self.title, line(self.columns)] + [line(r) for r in self.rows]
        return out + ([self.caption] if self.caption else [])


@dataclass
class ChatReply:
    """What one user line produced: lines, then an optional table, then lines after it."""

    lines: list[str] = field(default_factory=list)
    table: ChatTable | None = None
    after: list[str] = field(default_factory=list)
    done: bool = False
    """The user ended the chat (quit / exit)."""
    state: ChatState = "awaiting_goal"
    """The chat's state after this line."""

    def text(self) -> str:
        parts = list(self.lines) + (self.table.text() if self.table is not None else []) + list(self.after)
        return "\n".join(parts)


class _Proposed:
    """A planner that answers with the plan the user already saw (so the session plans nothing twice and the
    audit log names the backend that really planned)."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self.name = plan.backend

    def plan(self, goal: str, *, base: DesignSpec | None = None) -> Plan:
        return self._plan


# ------------------------------------------------------------------------------------------------ the engine


class ChatSession:
    """One chat: the current plan and spec, the design sessions it ran, and the store it answers from.

    Args:
        work: folder for the chat's design sessions (one sub-folder each, named by session id).
        store: store location (None: $TESSERA_STORE or the user data dir).
        planner: the planner (None: ``make_planner()``: the LLM when configured, else offline).
        options: how sessions run (``approve`` is always on: the chat answers the approval pause).
        hooks: progress callbacks passed to each design session (a front end may replace ``hooks`` between
            lines).
    """

    def __init__(
        self,
        *,
        work: Path,
        store: str | None = None,
        planner: Planner | None = None,
        options: SessionOptions | None = None,
        hooks: SessionHooks | None = None,
    ) -> None:
        self.work = Path(work)
        self.store_location = store
        self._planner = planner
        self.options = (options or SessionOptions()).model_copy(update={"approve": True})
        self.hooks = hooks
        self.state: ChatState = "awaiting_goal"
        self.plan: Plan | None = None
        self.spec: DesignSpec | None = None
        self.run_id: str | None = None
        """The store run of the last finished session (what follow-ups are about)."""
        self.runs: list[str] = []
        self.outcome: SessionOutcome | None = None
        self._store: Any = None
        self._last_rows: list[tuple[str, str]] = []
        self._last_id: tuple[str, str] | None = None
        self._quiet = False
        self._thresholds: dict[str, float] = {}

    # -- plumbing -------------------------------------------------------------------------------------

    def planner(self) -> Planner:
        if self._planner is None:
            from tessera.agents.planner.select import make_planner

            self._planner = make_planner()
        return self._planner

    def store(self) -> Any:
        if self._store is None:
            from tessera.store import Store

            self._store = Store.open(self.store_location)
        return self._store

    def greeting(self) -> str:
        name = getattr(self._planner, "name", None) or "auto"
        return (f"Tessera chat (planner: {name}). Describe what to design, e.g. \"Li-Co-O, 8 atoms, 4 candidates\"; "
                f"help lists what I understand; quit ends.")

    def _reply(self, *lines: str, table: ChatTable | None = None, after: list[str] | None = None,
               done: bool = False) -> ChatReply:
        if table is not None and not table.rows:  # an empty table is one line, not a frame
            lines, table = (*lines, f"{table.title}: none."), None
        return ChatReply(lines=list(lines), table=table, after=list(after or []), done=done, state=self.state)

    # -- one line -------------------------------------------------------------------------------------

    def handle(self, line: str) -> ChatReply:
        """Consume one user line; return what to show (always a :class:`ChatReply`, never an exception for
        anything a user can type: a TesseraError becomes its one line)."""
        text = line.strip()
        if not text:
            return self._reply()
        try:
            return self._dispatch(text)
        except TesseraError as exc:
            if self.state == "running":
                self.state = "proposed"
            return self._reply(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _dispatch(self, text: str) -> ChatReply:
        low = re.sub(r"[\s?!.]+$", "", text.lower())
        low = re.sub(r"\s+", " ", low)
        if low in ("quit", "exit", "bye", "q", ":q"):
            return self._reply("bye", done=True)
        if low in ("help", "?", "h", "commands", "what can you do", "what do you understand"):
            return self._help()
        if re.fullmatch(r"(show |print )?(the )?(spec|plan)( json)?", low):
            return self._show_spec(as_json=low.endswith("json"))
        m = re.match(r"(?:set|edit|change)\s+(\S+?)\s*(?:=\s*|\s+to\s+|\s+)(.+)$", text, flags=re.I | re.S)
        if m:
            return self._set(m.group(1), m.group(2).strip())
        if re.fullmatch(r"(set|edit|change)( \S+)?", low):
            return self._reply("set FIELD VALUE, e.g. set budgets.samples 8, set chemistry.elements Li,Co,O, "
                               "set motif honeycomb Co")
        m = re.match(r"(?:new\s+goal|goal|design)\s*[:\-]?\s+(.+)$", text, flags=re.I | re.S)
        if m:
            return self._propose(m.group(1).strip(), replacing=self.state == "proposed")
        # "approve it" / "reject it" mean the spec while one is proposed, else the last candidate named.
        about_spec = self.state == "proposed" or not re.match(r"(approve|reject|drop) it\b", low)
        if about_spec and re.fullmatch(r"(approve|approved|yes|y|ok|okay|run|go|run it|go ahead|approve it|"
                                       r"approve the spec|approve spec|approve the plan|looks good|lgtm)", low):
            return self._approve_spec()
        m = re.fullmatch(r"(?:reject|discard|cancel|no|drop)(?: (?:it|the spec|spec|the plan|plan))?"
                         r"(?:\s*(?:because|since|as|:)\s*(.*?))?[\s?!.]*", text, flags=re.I | re.S)
        if about_spec and m:
            return self._reject_spec((m.group(1) or "").strip() or None)
        m = re.match(r"(approve|reject)\s+(\S+)(?:\s+(?:because|since|as|for|:)\s*(.*?))?\s*$", text, flags=re.I | re.S)
        if m:
            return self._review(m.group(1).lower(), m.group(2), (m.group(3) or "").strip() or None)
        m = re.match(r"(?:why|explain)\b\s*(?:was|is|did|were|has|wasn't|isn't)?\s*(?:candidate\s+)?(\S+)", text, flags=re.I)
        if m:
            return self._why(m.group(1))
        if re.match(r"export\b", low):
            return self._export(text[len("export"):].strip())
        m = re.match(r"(?P<pre>.*?)\b(?:more|similar|others?|neighbou?rs?|structures?|candidates?|ones?)\b.*?"
                     r"\b(?:like|to|of)\s+(?P<id>\S+)\s*$", text, flags=re.I)
        if m and re.search(r"\b(more|similar|like|neighbou?rs?)\b", low):
            return self._more_like(m.group("id"), _number(m.group("pre")) or DEFAULT_TOP)
        top = _top_request(low)
        if top is not None:
            return self._top(top)
        if self.state == "results":
            return self._reply("I did not understand that. " + UNDERSTOOD)
        return self._propose(text, replacing=self.state == "proposed")

    # -- planning and the spec ------------------------------------------------------------------------

    def _propose(self, goal: str, *, replacing: bool = False) -> ChatReply:
        try:
            plan = self.planner().plan(goal)
        except PlanningError as exc:
            if replacing:
                return self._reply(f"I did not understand that: {exc}; the proposed spec stands. " + UNDERSTOOD_PROPOSED)
            return self._reply(f"{exc}. Describe what to design, e.g. \"Li-Co-O, 8 atoms, 4 candidates\" (help lists "
                               f"what I understand).")
        if plan.backend == "offline" and not plan.used:
            if replacing:
                return self._reply("I did not understand that: nothing in it sets a spec field; the proposed spec "
                                   "stands. " + UNDERSTOOD_PROPOSED)
            return self._reply("I could not read a design goal from that: nothing in it sets a spec field. Describe "
                               "what to design, e.g. \"Li-Co-O, 8 atoms, 4 candidates\" (help lists what I understand).")
        self.plan, self.spec = plan, plan.spec
        self.state = "proposed"
        lines = [f"proposed spec ({plan.backend} planner" + (", replacing the previous one" if replacing else "")
                 + f"; hash {plan.spec.spec_hash()[:8]}):"]
        lines += describe_spec(plan.spec)
        if plan.used:
            lines.append("read: " + "; ".join(plan.used))
        if plan.unused:
            lines.append("could not use: " + "; ".join(plan.unused))
        lines += [f"note: {n}" for n in plan.notes]
        lines.append("approve to run it, set FIELD VALUE to change a field, reject to drop it, or type a new goal.")
        return self._reply(*lines)

    def _show_spec(self, *, as_json: bool = False) -> ChatReply:
        if self.spec is None:
            return self._reply("no spec yet: describe what to design.")
        if as_json:
            return self._reply(*json.dumps(self.spec.model_dump(mode="json"), indent=1).splitlines())
        head = "proposed spec" if self.state == "proposed" else "spec of the last run"
        return self._reply(f"{head} (hash {self.spec.spec_hash()[:8]}):", *describe_spec(self.spec))

    def _set(self, key: str, value: str) -> ChatReply:
        if self.spec is None or self.plan is None:
            return self._reply("no spec to edit yet: describe what to design first.")
        try:
            path = resolve_field(key)
        except InputError as exc:
            raise InputError(f"{exc}; the spec is unchanged") from None
        new, change = edit_spec(self.spec, path, value)
        self.spec = new
        if self.state != "proposed":  # after a run: the edit proposes the next session's spec
            self.state = "proposed"
            change += " (a new spec, based on the last run's: approve to run it)"
        return self._reply(change)

    def _approve_spec(self) -> ChatReply:
        if self.state != "proposed" or self.spec is None or self.plan is None:
            return self._reply("there is no proposed spec to approve: describe what to design first."
                               if self.run_id is None else
                               "there is no proposed spec to approve (approve ID reviews a candidate).")
        return self._run()

    def _reject_spec(self, reason: str | None) -> ChatReply:
        if self.state != "proposed":
            return self._reply("there is no proposed spec to reject (reject ID because ... reviews a candidate).")
        self.plan, self.spec = None, None
        self.state = "results" if self.run_id else "awaiting_goal"
        return self._reply("dropped the proposed spec" + (f" ({reason})" if reason else "")
                           + "; describe what to design next.")

    # -- running --------------------------------------------------------------------------------------

    def _session_hooks(self) -> SessionHooks:
        user = self.hooks or SessionHooks()

        def on_node(name: str, round_index: int) -> None:
            if user.on_node is not None and name not in ("understand", "approve"):  # instant in a chat
                user.on_node(name, round_index)

        def on_message(line: str) -> None:
            if user.on_message is not None and not self._quiet:
                user.on_message(line)

        return SessionHooks(on_node=on_node, on_step=user.on_step, on_message=on_message)

    def _run(self) -> ChatReply:
        assert self.plan is not None and self.spec is not None
        sid = new_session_id("chat")
        work = self.work / sid
        planned = self.plan.spec.model_copy(update={"goal": self.plan.goal})
        final = self.spec.model_copy(update={"goal": self.plan.goal})
        decision: dict[str, Any] = ({"action": "approve"} if final.spec_hash() == planned.spec_hash()
                                    else {"action": "edit", "spec": final.model_dump(mode="json")})
        self.state = "running"
        session = DesignSession(work, store=self.store_location, planner=_Proposed(self.plan),
                                hooks=self._session_hooks())
        try:
            self._quiet = True  # the plan's notes were shown with the proposal
            outcome = session.start(goal=self.plan.goal, options=self.options, session_id=sid)
            self._quiet = False
            if outcome.status == "awaiting_approval":
                outcome = session.decide(decision)
        except TesseraError as exc:
            self.state = "proposed"
            return self._reply(f"the run stopped: {str(exc).splitlines()[0]} (session folder {work}); the spec "
                               f"is still proposed")
        finally:
            self._quiet = False
            session.close()
        self.outcome = outcome
        self.run_id = outcome.run_id or sid
        self.runs.append(self.run_id)
        self.spec = final  # the plan stays the planner's: a later edit is again logged as the human's
        self.state = "results"
        lines = [f"ran session {outcome.session_id}" + (" with your edits" if decision["action"] == "edit" else "")
                 + ":"]
        for r in outcome.rounds:
            lines.append(f"round {r.round} (seed {r.seed}): {r.n_sampled} sampled, {r.n_prescreen_passed} passed the "
                         f"prescreen, {r.n_relaxed} relaxed, {r.n_stable} stable, {r.n_sun} S.U.N."
                         + (f", {r.n_sun_c} S.U.N.-C" if r.n_sun_c is not None else ""))
        rows = self.store().search(run_id=self.run_id, limit=RESULT_ROWS, sort_by="e_hull")
        table = self._table(rows, title=f"Candidates of run {self.run_id} (by E_hull, CHGNet)")
        after = []
        if outcome.stop_reason:
            after.append(f"stopped: {outcome.stop_reason}")
        if outcome.report_path:
            after.append(f"report: {outcome.report_path}")
        after.append("ask: show the five most stable, why was ID rejected, more like ID, export the hits as POSCAR.")
        return self._reply(*lines, table=table, after=after)

    # -- follow-ups (from the store) ------------------------------------------------------------------

    def _need_run(self) -> ChatReply | None:
        if self.run_id is None:
            return self._reply("no results yet: describe what to design and approve its spec first.")
        return None

    def _top(self, n: int) -> ChatReply:
        """n > 0: the n most stable; 0: every candidate of the run; -1: its stable ones (the hits)."""
        if (missing := self._need_run()) is not None:
            return missing
        st = self.store()
        total = st.count(run_id=self.run_id)
        if n == 0:
            rows = st.search(run_id=self.run_id, limit=MAX_ROWS, sort_by="e_hull")
            return self._reply(table=self._table(rows, title=f"All {total} candidates of run {self.run_id} (by E_hull)"))
        if n < 0:
            rows = st.search(run_id=self.run_id, stable=True, limit=MAX_ROWS, sort_by="e_hull")
            return self._reply(table=self._table(rows, title=f"The {len(rows)} stable candidate(s) of run "
                                                             f"{self.run_id} (E_hull <= {self._threshold(self.run_id):g} "
                                                             f"eV/atom, CHGNet)"))
        n = min(n, MAX_ROWS)
        rows = st.top_stable(self.run_id, k=n)
        after = []
        if len(rows) < n:
            after.append(f"only {len(rows)} of the run's {total} candidates reached the hull check; "
                         f"'why was ID stopped' says why the others stopped.")
        return self._reply(table=self._table(rows, title=f"The {n} most stable of run {self.run_id} (E_hull in "
                                                         f"eV/atom, CHGNet-relaxed)"), after=after)

    def _find(self, token: str) -> Any:
        """The stored candidate a user named: ``#N`` (row of the last table), ``it``, or an id, looked up in
        this chat's runs first (newest first), then the whole store. InputError (one line) when absent."""
        st = self.store()
        token = token.strip().strip("\"'`,;:!?.()[]")
        if not token:
            raise InputError("name a candidate by its id (or #N for row N of the last table)")
        if token.lower() in ("it", "that", "this", "that one", "this one"):
            if self._last_id is None:
                raise InputError("which candidate? name it by its id")
            run_id, cid = self._last_id
            return self._remember(st.get(cid, run_id=run_id))
        if re.fullmatch(r"#\d+", token):
            k = int(token[1:])
            if not 1 <= k <= len(self._last_rows):
                raise InputError(f"{token}: the last table has {len(self._last_rows)} rows")
            run_id, cid = self._last_rows[k - 1]
            return self._remember(st.get(cid, run_id=run_id))
        for run_id in reversed(self.runs):
            try:
                return self._remember(st.get(token, run_id=run_id))
            except InputError:
                continue
        try:
            return self._remember(st.get(token))
        except InputError as exc:
            if "several runs" in str(exc):
                raise
            raise InputError(f"no candidate {token!r} in this chat's runs or in the store "
                             f"('show the results' lists this run's ids)") from None

    def _remember(self, row: Any) -> Any:
        self._last_id = (row.run_id, row.id)
        return row

    def _why(self, token: str) -> ChatReply:
        row = self._find(token)
        return self._reply(*explain_candidate(row, threshold=self._threshold(row.run_id)))

    def _more_like(self, token: str, n: int) -> ChatReply:
        row = self._find(token)
        n = min(n, MAX_ROWS)
        try:
            structure = row.structure()
        except InputError:
            return self._reply(f"{row.id} has no readable structure, so nothing can be compared with it.")
        near = self.store().nearest(structure, k=n + 1)
        near = [c for c in near if (c.run_id, c.id) != (row.run_id, row.id)][:n]
        if not near:
            return self._reply(f"no other stored candidate has a fingerprint to compare with {row.id}.")
        title = (f"The {len(near)} stored candidates most like {row.id} ({row.formula}), all runs "
                 f"(fingerprint distance: 0 = identical, at most 2)")
        return self._reply(table=self._table(near, title=title, show_run=True, show_distance=True))

    def _export(self, rest: str) -> ChatReply:
        if (missing := self._need_run()) is not None:
            return missing
        m = re.search(r"\b(poscar|vasp|cif|extxyz|xyz|csv|json)\b", rest, flags=re.I)
        if not m:
            return self._reply("export needs a format: POSCAR, CIF or extxyz (e.g. export the hits as CIF to hits/).")
        fmt = FORMATS[m.group(1).lower()]
        before, after_fmt = rest[:m.start()], rest[m.end():]
        dm = re.match(r"\s*(?:files?\s+)?(?:to|into|in|at)\s+(\S.*?)\s*$", after_fmt, flags=re.I)
        if after_fmt.strip() and not dm:
            return self._reply(f"I did not understand {after_fmt.strip()!r}: say export the hits as {m.group(1)} to DIR.")
        what = re.sub(r"\b(the|as|in|format|files?|structures?|candidates?|of|this|run|session)\b", " ",
                      before.lower())
        what = re.sub(r"\s+", " ", what).strip()
        st = self.store()
        label: str
        if what in ("", "hits", "hit", "stable", "stable ones", "stable hits", "them"):
            rows = st.search(run_id=self.run_id, stable=True, limit=None, with_record=True)
            label = "hits"
            if not rows:
                thr = self._threshold(self.run_id)
                return self._reply(f"no stable candidates in run {self.run_id} (E_hull <= {thr:g} eV/atom): nothing "
                                   f"exported; 'export all as {m.group(1)}' exports every candidate.")
        elif what in ("all", "everything", "every", "all of them"):
            rows = st.search(run_id=self.run_id, limit=None, with_record=True)
            label = "all"
        elif (top := _top_request(what)) is not None:
            rows = [r for r in st.search(run_id=self.run_id, limit=top or MAX_ROWS, with_record=True)
                    if r.e_hull is not None]
            label = f"top{top or ''}"
        else:
            ids = [t for t in re.split(r"[,\s]+|\band\b", before) if t.strip() and t.lower() not in ("the", "as", "and")]
            found = [self._find(t) for t in ids]
            rows = [st.get(r.id, run_id=r.run_id) for r in found]
            label = rows[0].id if len(rows) == 1 else "selected"
        from tessera.store.export import export_candidates

        if dm:
            dest = Path(dm.group(1)).expanduser()
            if fmt in _SINGLE_FILE and dest.suffix.lower() != _SINGLE_FILE[fmt]:
                dest = dest / f"{label}{_SINGLE_FILE[fmt]}"
        else:
            base = self.work / self.run_id / "export"
            dest = base / (f"{label}{_SINGLE_FILE[fmt]}" if fmt in _SINGLE_FILE else f"{label}-{m.group(1).lower()}")
        result = export_candidates(rows, fmt=fmt, out=dest)
        shown = "POSCAR (with INCAR, KPOINTS, POTCAR.spec per candidate)" if fmt == "vasp" else fmt
        lines = [f"exported {result.n_written} of {len(rows)} candidate(s) as {shown} to {result.out}"]
        lines += [f"skipped {s}" for s in result.skipped]
        if result.note and fmt != "vasp":
            lines.append(f"note: {result.note}")
        return self._reply(*lines)

    def _review(self, verb: str, token: str, note: str | None) -> ChatReply:
        row = self._find(token)
        decision = "approved" if verb == "approve" else "rejected"
        done = self.store().review(row.id, decision, note=note, run_id=row.run_id)  # type: ignore[arg-type]
        return self._reply(f"{decision} {done.id} ({done.formula}, run {done.run_id}) as {done.reviewer}"
                           + (f": {done.review_note}" if done.review_note else "") + " (in the run's audit log)")

    def _help(self) -> ChatReply:
        lines = ["Before a run: type a goal (e.g. \"Li-Co-O, 8 atoms, 4 candidates\"); then approve, set FIELD VALUE "
                 "(set budgets.samples 8, set chemistry.elements Li,Co,O, set motif honeycomb Co), reject, show spec, "
                 "or type a new goal.",
                 "After a run (answered from the store): show the five most stable | top 3 | results; why was ID "
                 "rejected; more like ID; export the hits as POSCAR|CIF|extxyz [to DIR] (or export all / the top 3 / "
                 "ID ...); approve ID [because ...]; reject ID because ...; goal: NEW GOAL; set FIELD VALUE for a "
                 "next run.",
                 "IDs: as in the tables, #N for row N of the last table, it for the last one named. quit ends."]
        return self._reply(*lines)

    # -- helpers --------------------------------------------------------------------------------------

    def _threshold(self, run_id: str) -> float:
        """The stability threshold (eV/atom) the run judged with: the spec of the human's last edit in its audit
        log when there is one (a chat run that was edited before it ran), else the spec it was opened with,
        else the project default."""
        if run_id in self._thresholds:
            return self._thresholds[run_id]
        st = self.store()
        spec: Any = None
        try:
            for ev in st.audit_log(run_id).events():
                if ev.kind == "human_decision" and ev.payload.get("action") == "edit":
                    spec = ev.payload.get("spec")
            if spec is None:
                params = st.get_run(run_id).params
                spec = params.get("spec") if isinstance(params, dict) else None
        except TesseraError:
            spec = None
        value = ((spec or {}).get("thresholds") or {}).get("stable_e_hull") if isinstance(spec, dict) else None
        self._thresholds[run_id] = float(value) if isinstance(value, (int, float)) else STABLE_E_HULL
        return self._thresholds[run_id]

    def _table(self, rows: list[Any], *, title: str, show_run: bool = False, show_distance: bool = False) -> ChatTable:
        self._last_rows = [(r.run_id, r.id) for r in rows]
        return candidate_table(rows, title=title, show_run=show_run, show_distance=show_distance)


# ------------------------------------------------------------------------------------------------ rules


def _number(text: str | None) -> int | None:
    """The first number in ``text`` (digits or one..ten), or None."""
    if not text:
        return None
    m = re.search(r"\b" + _NUM + r"\b", text.lower())
    if not m:
        return None
    word = m.group(1)
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def _top_request(low: str) -> int | None:
    """"show the five most stable" -> 5, "top 3" -> 3, "most stable" -> 5, "results" -> 0 (all), "show the
    hits" -> -1 (the stable ones); else None."""
    m = re.search(r"\b(?:top|best|lowest)\s+" + _NUM + r"\b", low) or re.search(
        r"\b" + _NUM + r"\s+(?:most\s+stable|best|lowest|top)\b", low)
    if m:
        n = _number(m.group(1))
        return max(1, n or DEFAULT_TOP)
    # Without a number, only as a request ("show ...", "which are ..."): "the most stable Li-Co-O oxide" is a goal.
    if re.search(r"\bmost\s+stable\b|\bstablest\b|\blowest e_?hull\b", low) and re.match(
            r"(show|list|give|print|display|what|which|tell|most stable|the most stable( ones| candidates)?$)", low):
        return DEFAULT_TOP
    if re.fullmatch(r"(show |list )?(me )?(the |all )?(results|all|table|candidates|everything|all candidates)", low):
        return 0
    if re.fullmatch(r"(show |list )?(me )?(the )?(hits|stable ones|stable candidates|stable)", low):
        return -1
    return None


def describe_spec(spec: DesignSpec) -> list[str]:
    """The spec as ``field value`` lines, named the way ``set`` takes them."""
    chem = spec.chemistry
    if chem.elements:
        elements = ",".join(chem.elements)
        req = ("all required" if set(chem.required) == set(chem.elements)
               else f"required {','.join(chem.required)}" if chem.required else "none required")
        elements += f" ({req})"
    else:
        elements = "any (the model's choice)" + (f"; required {','.join(chem.required)}" if chem.required else "")
    lines = [f"  chemistry.elements {elements}",
             f"  chemistry.n_elements {chem.n_elements or 'any'}   chemistry.atoms {chem.atoms or 'from the prior'}"]
    if spec.motif is None:
        lines.append("  motif none")
    else:
        bond = f", bond {spec.motif.bond_length:g} A" if spec.motif.bond_length else ""
        lines.append(f"  motif {spec.motif.lattice} net of {spec.motif.element}{bond}")
    if not spec.guidance:
        lines.append("  guidance none")
    for i, t in enumerate(spec.guidance):
        els = "-".join(t.elements)
        lines.append(f"  guidance.{i} {t.kind}{' ' + els if els else ''} target {t.target} "
                     f"(tolerance {t.tolerance:g}, strength {t.strength:g})")
    b = spec.budgets
    lines.append(f"  thresholds.stable_e_hull {spec.thresholds.stable_e_hull:g} eV/atom")
    lines.append(f"  budgets.samples {b.samples}   budgets.relaxations "
                 f"{'all that pass' if b.relaxations is None else b.relaxations}   budgets.wall_minutes "
                 f"{'none' if b.wall_minutes is None else f'{b.wall_minutes:g}'}   seed {spec.seed}")
    return lines


def _models() -> dict[str, type[BaseModel]]:
    from tessera.tools.spec import Budgets, ChemistrySpec, GuidanceOptions, MotifSpec, Thresholds

    return {"chemistry": ChemistrySpec, "motif": MotifSpec, "guidance_options": GuidanceOptions,
            "thresholds": Thresholds, "budgets": Budgets}


def _leaf_paths() -> list[str]:
    from tessera.tools.spec import GuidanceTerm

    out = [f"{section}.{name}" for section, model in _models().items() for name in model.model_fields]
    out += [f"guidance.N.{name}" for name in GuidanceTerm.model_fields]
    return out + ["seed", "motif", "guidance"]


def resolve_field(key: str) -> str:
    """``budgets.samples`` as given, or a unique last name (``samples``) -> its full path. InputError naming the
    fields when the key is unknown or ambiguous."""
    key = key.strip().strip(":=").lower()
    if key in _FIXED_KEYS:
        raise InputError(f"{key} cannot be set: type a new goal instead" if key == "goal" else f"{key} cannot be set")
    paths = _leaf_paths()
    generic = re.sub(r"^guidance\.\d+\.", "guidance.N.", key)
    if generic in paths:
        return key
    matches = [p for p in paths if p.split(".")[-1] == key and not p.startswith("guidance.N.")]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"{key} is ambiguous: say {' or '.join(matches)}")
    section = key.split(".")[0]
    if section in _models():
        known = ", ".join(f"{section}.{f}" for f in _models()[section].model_fields)
        raise InputError(f"unknown field {key}; {section} has {known}")
    raise InputError(f"unknown field {key}; fields: chemistry.*, motif, motif.*, guidance.N.*, thresholds.stable_e_hull, "
                     f"budgets.samples|relaxations|wall_minutes, seed (show spec lists them)")


def _annotation(path: str) -> Any:
    from tessera.tools.spec import GuidanceTerm

    parts = path.split(".")
    if parts[0] == "guidance":
        return GuidanceTerm.model_fields[parts[-1]].annotation
    if len(parts) == 1:
        return DesignSpec.model_fields[parts[0]].annotation
    return _models()[parts[0]].model_fields[parts[1]].annotation


def _is_listy(annotation: Any) -> bool:
    """True when every non-None form of the annotation is a list or tuple (a union with a scalar is not)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
    else:
        args = [annotation]
    return bool(args) and all(typing.get_origin(a) in (list, tuple) for a in args)


def _symbol(s: str) -> str:
    s = s.strip()
    return s[:1].upper() + s[1:].lower()


def _value(path: str, text: str) -> Any:
    """The user's text as the JSON value of ``path``: none words -> None, lists split on commas, spaces or
    hyphens, element symbols capitalised; numbers stay text for pydantic to read (and to reject)."""
    text = text.strip().strip("\"'")
    if text.lower() in _NONE_WORDS:
        return None
    generic = re.sub(r"^guidance\.\d+\.", "guidance.N.", path)
    listy = _is_listy(_annotation(path)) or (generic == "guidance.N.target" and re.search(r"[,\[]", text))
    if listy:
        items = [x for x in re.split(r"[,\s\-\[\]]+" if "element" in path or "required" in path
                                     else r"[,\s\[\]]+", text) if x]
        return [_symbol(x) for x in items] if ("element" in path or "required" in path) else items
    if path in _ELEMENT_KEYS:
        return _symbol(text)
    return text


def edit_spec(spec: DesignSpec, path: str, text: str) -> tuple[DesignSpec, str]:
    """``spec`` with one field set from the user's text, validated as a whole spec, and a line saying what
    changed. InputError (one line, ending "the spec is unchanged") when the value is not possible."""
    data = spec.model_dump(mode="json")
    note = ""
    try:
        if path == "motif":
            old = data.get("motif")
            if text.strip().lower() in _NONE_WORDS:
                data["motif"] = None
            else:
                words = [w for w in re.split(r"[\s,]+", text.strip()) if w and w.lower() not in ("of", "net", "lattice")]
                if not words or len(words) > 2:
                    raise InputError("set motif LATTICE ELEMENT, e.g. set motif honeycomb Co (or set motif none)")
                element = _symbol(words[1]) if len(words) == 2 else (old or {}).get("element")
                if element is None:
                    raise InputError("which element sits on the net? e.g. set motif honeycomb Co")
                data["motif"] = {**(old or {}), "lattice": words[0].lower(), "element": element}
            before, after = _short(old), _short(data["motif"])
        elif path == "guidance":
            if text.strip().lower() not in _NONE_WORDS:
                raise InputError("guidance terms are edited one field at a time (set guidance.0.strength 2), or "
                                 "removed with set guidance none")
            before, after = f"{len(data['guidance'])} term(s)", "none"
            data["guidance"] = []
        else:
            parts = path.split(".")
            node: Any = data
            for i, part in enumerate(parts[:-1]):
                if isinstance(node, list):
                    k = int(part)
                    if not 0 <= k < len(node):
                        raise InputError(f"{'.'.join(parts[:i + 1])}: the spec has {len(node)} guidance term(s)")
                    node = node[k]
                elif node.get(part) is None:
                    if part == "motif":
                        raise InputError("there is no motif yet: set motif LATTICE ELEMENT (e.g. set motif honeycomb Co)")
                    raise InputError(f"{part} is not set")
                else:
                    node = node[part]
            leaf = parts[-1]
            before = node.get(leaf)
            node[leaf] = _value(path, text)
            after = node[leaf]
            if path == "chemistry.elements" and isinstance(after, list):
                required = data["chemistry"].get("required") or []
                kept = [e for e in required if e in after]
                if kept != required:
                    data["chemistry"]["required"] = kept
                    note = f"; chemistry.required trimmed to {','.join(kept) or 'none'}"
        new = parse_spec(data, source="the edited spec")
    except InputError as exc:
        msg = str(exc).splitlines()[0]
        raise InputError(f"{msg}; the spec is unchanged") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"set {path}: cannot use {text!r} ({exc}); the spec is unchanged") from None
    return new, f"{path}: {_short(before)} -> {_short(after)}{note}"


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and "lattice" in value:
        return f"{value['lattice']} net of {value.get('element')}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "[]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ------------------------------------------------------------------------------------------------ answers


def _level(c: Any) -> str:
    if c.e_hull is None:
        return "-"
    if c.confirmed:
        return "confirmed"
    if c.on_hull:
        return "on hull"
    return "stable" if c.stable else "above"


def _flag(x: bool | None) -> str:
    return "-" if x is None else ("y" if x else "n")


def stopped_text(c: Any) -> str:
    """Why a stored candidate went no further, in a few words ('' when it went all the way)."""
    if c.prescreen_failed_stage:
        return f"{c.prescreen_failed_stage} prescreen"
    if c.error:
        return c.error if len(c.error) <= 48 else c.error[:45] + "..."
    return ""


def candidate_table(rows: list[Any], *, title: str, show_run: bool = False, show_distance: bool = False) -> ChatTable:
    """Stored candidates as text cells: id, formula, E_hull (eV/atom), level, space group, S U N, why stopped,
    review (plus run and fingerprint distance for a similarity search)."""
    columns = ["#", "id"] + (["run"] if show_run else []) + ["formula", "E_hull", "level", "sg", "S U N", "stopped",
                                                             "review"] + (["distance"] if show_distance else [])
    out = []
    for i, c in enumerate(rows, start=1):
        cells = [str(i), c.id] + ([c.run_id] if show_run else []) + [
            c.formula or "?", "-" if c.e_hull is None else f"{c.e_hull:.3f}", _level(c), c.spacegroup or "-",
            f"{_flag(c.stable)} {_flag(c.unique)} {_flag(c.novel)}", stopped_text(c), c.review_status]
        if show_distance:
            cells.append("-" if c.distance is None else f"{c.distance:.4f}")
        out.append(cells)
    caption = ("level: stable = E_hull within the run's threshold (CHGNet vs the reference hull), on hull = E_hull "
               "<= 0, above = not stable; S U N = stable, unique, novel (y/n, - not reached)") if rows else \
        "no candidates."
    return ChatTable(title=title, columns=columns, rows=out, caption=caption)


_STAGE_OF_ERROR: tuple[tuple[str, str], ...] = (
    ("not relaxed", "the relaxation budget"), ("relaxation failed", "relaxation (CHGNet)"),
    ("relax:", "relaxation (CHGNet)"), ("hull:", "the hull check"), ("analyze:", "analysis (symmetry, novelty)"),
    ("prescreen:", "the prescreen"),
)


def explain_candidate(c: Any, *, threshold: float = STABLE_E_HULL) -> list[str]:
    """Why a stored candidate (fetched with its record) stopped or was not a hit, stage by stage, from its row:
    the prescreen stage that failed and its reason, an error (relaxation budget, relaxation, hull, analysis),
    E_hull (eV/atom) against the run's threshold, uniqueness, novelty, its constraint record and any review."""
    record = c.candidate() if c.candidate_json is not None else None
    head = f"{c.id} ({c.formula or '?'}, run {c.run_id}, round {c.round if c.round is not None else '-'})"
    detail: list[str] = []
    verdict: str
    prescreen = record.prescreen if record is not None else {}
    failed = c.prescreen_failed_stage
    if failed:
        outcome = prescreen.get(failed)
        verdict = f"stopped at the {failed} prescreen: {outcome.reason if outcome and outcome.reason else c.error or 'failed'}"
    elif c.error:
        stage = next((name for prefix, name in _STAGE_OF_ERROR if c.error.startswith(prefix)), "an error")
        verdict = f"stopped at {stage}: {c.error}"
    elif c.e_hull is None:
        verdict = "never placed on the hull (it stopped before the hull check)"
    elif not math.isfinite(c.e_hull):
        verdict = "placed on the hull without a finite E_hull"
    elif c.stable is False or c.e_hull > threshold:
        verdict = (f"rejected at the hull check: E_hull {c.e_hull:.3f} eV/atom is above the stability threshold "
                   f"{threshold:g} eV/atom")
    elif c.unique is False:
        verdict = f"stable (E_hull {c.e_hull:.3f} eV/atom) but not unique: it duplicates another candidate of its run"
    elif c.novel is False:
        known = getattr(record, "matched_id", None) if record is not None else None
        verdict = (f"stable (E_hull {c.e_hull:.3f} eV/atom) but not novel: it matches "
                   f"{known or 'a material'} in the reference pool")
    elif c.constraints_satisfied is False:
        verdict = f"stable (E_hull {c.e_hull:.3f} eV/atom) but it does not meet the spec's constraints"
    else:
        verdict = (f"not rejected: E_hull {c.e_hull:.3f} eV/atom is within the stability threshold {threshold:g} "
                   f"eV/atom" + (", unique" if c.unique else "") + (", novel" if c.novel else ""))
    if prescreen:
        detail.append("prescreen: " + "; ".join(
            f"{name} {'passed' if o.passed else 'FAILED'}" + (f" ({o.reason})" if o.reason and name != failed else "")
            for name, o in prescreen.items()))
    if record is not None and record.relaxed:
        detail.append(f"relaxation: CHGNet, {record.relax_steps if record.relax_steps is not None else '?'} steps, "
                      f"{'converged' if record.converged else 'not converged'}"
                      + (f"; E_hull {c.e_hull:.3f} eV/atom vs threshold {threshold:g}" if c.e_hull is not None else ""))
    constraints = (record.provenance.get("constraints") if record is not None else None) or None
    if isinstance(constraints, dict):
        detail.extend(_constraint_lines(constraints, c.constraints_satisfied))
    if c.review_status != "pending":
        detail.append(f"review: {c.review_status} by {c.reviewer or '?'}" + (f": {c.review_note}" if c.review_note else ""))
    return [f"{head}: {verdict}."] + [f"  {d}" for d in detail]


def _constraint_lines(record: dict[str, Any], satisfied: bool | None) -> list[str]:
    out = []
    motif = record.get("motif")
    if motif:
        where = f"{motif.get('lattice')} net of {motif.get('element')}"
        exact = record.get("motif_exact")
        out.append(f"motif {where}: {'exact' if exact else 'NOT exact'} after sampling"
                   + (f" ({record['motif_exact_reason']})" if not exact and record.get("motif_exact_reason") else ""))
        kept = record.get("motif_retained")
        if kept is not None:
            out.append(f"motif {where}: {'retained' if kept else 'NOT retained'} after relaxation"
                       + (f" ({record['motif_retained_reason']})" if not kept and record.get("motif_retained_reason")
                          else ""))
    for term in record.get("guidance") or []:
        els = "-".join(term.get("elements") or [])
        value = term.get("value")
        shown = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
        out.append(f"guidance {term.get('kind')}{' ' + els if els else ''}: {shown} vs target {term.get('target')}, "
                   f"{'met' if term.get('met') else 'NOT met'}")
    if satisfied is not None:
        out.append(f"constraints: {'met' if satisfied else 'not met'}")
    return out


__all__ = ["ChatReply", "ChatSession", "ChatState", "ChatTable", "candidate_table", "describe_spec", "edit_spec",
           "explain_candidate", "resolve_field"]
