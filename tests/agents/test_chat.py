"""The chat engine (agents.chat.ChatSession): scripted lines against one real tiny design session.

Real components: the offline planner, the shipped generator (20 reverse steps, 3 crystals), CHGNet (30 FIRE
steps, one relaxation), the shipped hull, a LanceDB store in a temp folder. One session runs per module and
every follow-up is asked against it; the answers are checked against the store rows themselves, so the
tests hold whatever the three crystals turn out to be. The proposal phase (planning, edits) runs no session.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tessera.agents.chat import ChatReply, ChatSession, _top_request, explain_candidate
from tessera.agents.planner.offline import OfflinePlanner
from tessera.agents.session import SessionOptions
from tessera.store import Store

GOAL = "Li-Co-O, 8 atoms, 3 candidates"
OPTIONS = SessionOptions(steps=20, relax_steps=30, threads=1)


def _one_line(reply: ChatReply) -> str:
    assert reply.table is None and not reply.after and len(reply.lines) == 1, reply.text()
    return reply.lines[0]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Goal -> two edits -> approve: one finished session (1 relaxation; every relaxed crystal under 1 eV/atom
    counts as stable, so there is a hit to export)."""
    base = tmp_path_factory.mktemp("chat")
    chat = ChatSession(work=base / "chat", store=str(base / "store"), planner=OfflinePlanner(), options=OPTIONS)
    replies = {line: chat.handle(line) for line in
               (GOAL, "set budgets.relaxations 1", "set thresholds.stable_e_hull 1.0", "approve")}
    st = Store.open(str(base / "store"))
    rows = {r.id: r for r in st.search(run_id=chat.run_id, limit=None, with_record=True)}
    return SimpleNamespace(chat=chat, base=base, replies=replies, store=st, rows=rows)


def test_goal_edits_and_approval_run_one_session_into_the_store(ran: SimpleNamespace) -> None:
    proposed = ran.replies[GOAL]
    assert proposed.state == "proposed" and "budgets.samples 3" in proposed.text()
    assert ran.replies["set budgets.relaxations 1"].lines == ["budgets.relaxations: none -> 1"]
    done = ran.replies["approve"]
    assert done.state == "results" == ran.chat.state and "with your edits" in done.lines[0]
    rec = ran.store.get_run(ran.chat.run_id)
    assert rec.kind == "design_session" and rec.status == "finished" and rec.goal == GOAL
    assert len(ran.rows) == 3 and sum(r.relaxed for r in ran.rows.values()) <= 1
    assert {row[1] for row in done.table.rows} == set(ran.rows)  # the table is the run's store rows
    events = ran.store.audit_log(ran.chat.run_id).events()
    plan = next(e for e in events if e.kind == "plan")
    assert plan.actor == "offline"  # the planner that proposed the spec, not the chat
    edit = next(e for e in events if e.kind == "human_decision")
    assert edit.payload["action"] == "edit" and edit.payload["spec"]["budgets"]["relaxations"] == 1
    assert edit.payload["spec"]["thresholds"]["stable_e_hull"] == 1.0
    assert ran.store.verify_run(ran.chat.run_id).ok


def test_most_stable_comes_from_the_store_sorted_by_e_hull(ran: SimpleNamespace) -> None:
    judged = sorted((r for r in ran.rows.values() if r.e_hull is not None), key=lambda r: r.e_hull)
    for line, n in (("show the two most stable", 2), ("Top 3", 3), ("show the FIVE most stable", 5)):
        reply = ran.chat.handle(line)
        shown = [row[1] for row in reply.table.rows] if reply.table else []
        assert shown == [r.id for r in judged[:n]], (line, reply.text())
        e = [float(row[3]) for row in reply.table.rows] if reply.table else []
        assert e == sorted(e)
        if len(judged) < n:
            assert "reached the hull check" in reply.after[0]
    everything = ran.chat.handle("results")
    assert len(everything.table.rows) == 3


def test_why_names_the_stage_that_stopped_each_candidate(ran: SimpleNamespace) -> None:
    for cid, row in ran.rows.items():
        answer = ran.chat.handle(f"Why was {cid} rejected?").text()
        assert answer.startswith(cid) and "prescreen:" in answer
        if row.prescreen_failed_stage:
            assert f"stopped at the {row.prescreen_failed_stage} prescreen" in answer
        elif row.error and row.error.startswith("not relaxed"):
            assert "stopped at the relaxation budget" in answer
        elif row.stable:
            assert "not rejected" in answer and "within the stability threshold 1 eV/atom" in answer
            assert "relaxation: CHGNet" in answer
        else:
            assert "rejected at the hull check" in answer
    relaxed = [r for r in ran.rows.values() if r.e_hull is not None and r.e_hull > 0.1]
    for row in relaxed:  # the same row judged at MatterGen's 0.1 eV/atom: the hull stage and both numbers
        text = "\n".join(explain_candidate(row, threshold=0.1))
        assert "rejected at the hull check" in text and f"{row.e_hull:.3f}" in text and "threshold 0.1" in text
    table = ran.chat.handle("results")
    first = table.table.rows[0][1]
    assert ran.chat.handle("why was #1 stopped").lines[0].startswith(first)
    assert ran.chat.handle("why was it stopped").lines[0].startswith(first)


def test_more_like_is_the_store_similarity_search(ran: SimpleNamespace) -> None:
    cid = next(iter(ran.rows))
    reply = ran.chat.handle(f"show me two more like {cid}")
    ids = [row[1] for row in reply.table.rows]
    assert cid not in ids and 1 <= len(ids) <= 2
    expected = [c.id for c in ran.store.nearest(ran.rows[cid].structure(), k=3) if c.id != cid][:2]
    assert ids == expected
    distances = [float(row[-1]) for row in reply.table.rows]
    assert distances == sorted(distances) and all(0 < d <= 2 for d in distances)


def test_export_the_hits_writes_files(ran: SimpleNamespace) -> None:
    hits = [r for r in ran.rows.values() if r.stable]
    assert hits, "the 1 eV/atom threshold should leave the relaxed crystal a hit"
    line = _one_line(ran.chat.handle("export the hits as POSCAR"))
    out = Path(line.rsplit(" to ", 1)[1])
    poscars = sorted(out.glob("*/POSCAR"))
    assert len(poscars) == len(hits) and f"exported {len(hits)} of {len(hits)}" in line
    assert hits[0].id in poscars[0].read_text().splitlines()[0]  # the metadata rides in the comment line
    cifs = ran.base / "cifs"
    _one_line(ran.chat.handle(f"export all as CIF to {cifs}"))
    assert len(list(cifs.glob("*.cif"))) == 3
    xyz = ran.base / "hits.extxyz"
    _one_line(ran.chat.handle(f"export the hits as extxyz to {xyz}"))
    from ase.io import read

    assert len(read(str(xyz), index=":")) == len(hits)


def test_review_from_the_chat_lands_in_the_store_and_the_audit_log(ran: SimpleNamespace) -> None:
    a, b = list(ran.rows)[:2]
    assert "approved" in _one_line(ran.chat.handle(f"approve {a} because a clean cell"))
    assert "rejected" in _one_line(ran.chat.handle(f"reject {b} because too much oxygen"))
    assert ran.store.get(a, run_id=ran.chat.run_id).review_status == "approved"
    row = ran.store.get(b, run_id=ran.chat.run_id)
    assert (row.review_status, row.review_note) == ("rejected", "too much oxygen")
    assert "review: rejected" in ran.chat.handle(f"why was {b} rejected").text()
    assert ran.store.verify_run(ran.chat.run_id).ok


def test_unknown_ids_and_unknown_commands_are_one_line(ran: SimpleNamespace) -> None:
    for line in ("why was gen-s9-99999 rejected", "more like gen-s9-99999", "approve gen-s9-99999",
                 "export gen-s9-99999 as cif"):
        assert "no candidate 'gen-s9-99999'" in _one_line(ran.chat.handle(line))
    assert _one_line(ran.chat.handle("make me a sandwich")).startswith("I did not understand that.")
    assert "needs a format" in _one_line(ran.chat.handle("export the hits"))
    assert "the last table has" in _one_line(ran.chat.handle("why was #99 rejected"))
    assert ran.chat.state == "results"


def test_a_set_after_results_proposes_the_next_spec(ran: SimpleNamespace) -> None:
    reply = ran.chat.handle("set samples 4")
    assert reply.state == "proposed" and "budgets.samples: 3 -> 4" in reply.lines[0]
    assert ran.chat.spec.budgets.samples == 4 and ran.chat.spec.budgets.relaxations == 1  # the last run's spec
    assert ran.chat.handle("reject").state == "results"
    assert ran.chat.handle("help").lines and ran.chat.handle("quit").done


# ------------------------------------------------------------------------------------------ no session run


@pytest.fixture
def fresh(tmp_path: Path) -> ChatSession:
    return ChatSession(work=tmp_path / "chat", store=str(tmp_path / "store"), planner=OfflinePlanner(), options=OPTIONS)


def test_an_invalid_edit_is_one_line_and_keeps_the_spec(fresh: ChatSession) -> None:
    fresh.handle(GOAL)
    before = fresh.spec.spec_hash()
    for line, needle in (("set budgets.samples zero", "budgets.samples"), ("set budgets.samples 0", "greater than"),
                         ("set chemistry.elements Li,Xx,O", "Xx"), ("set budgets.sample 8", "unknown field"),
                         ("set motif.lattice honeycomb", "no motif yet"), ("set motif hexagonal-ish Co", "lattice"),
                         ("set goal something else", "new goal")):
        text = _one_line(fresh.handle(line))
        assert needle in text and fresh.spec.spec_hash() == before, (line, text)
    assert fresh.state == "proposed"


def test_valid_edits_change_one_field_each(fresh: ChatSession) -> None:
    fresh.handle(GOAL)
    assert _one_line(fresh.handle("set budgets.samples 8")) == "budgets.samples: 3 -> 8"
    assert fresh.spec.budgets.samples == 8
    fresh.handle("set chemistry.elements li,mn,o")
    assert fresh.spec.chemistry.elements == ["Li", "Mn", "O"] and fresh.spec.chemistry.required == ["Li", "O"]
    fresh.handle("set motif honeycomb Mn")
    assert (fresh.spec.motif.lattice, fresh.spec.motif.element) == ("honeycomb", "Mn")
    fresh.handle("set motif.lattice kagome")
    assert fresh.spec.motif.lattice == "kagome"
    fresh.handle("set seed = 7")
    fresh.handle("set relaxations to none")
    assert fresh.spec.seed == 7 and fresh.spec.budgets.relaxations is None
    assert "motif kagome net of Mn" in fresh.handle("show spec").text()


def test_a_new_goal_replaces_the_plan_and_reject_drops_it(fresh: ChatSession) -> None:
    assert "no results yet" in _one_line(fresh.handle("show the five most stable"))
    assert "nothing in the goal" in _one_line(fresh.handle("hello"))
    assert fresh.state == "awaiting_goal"
    fresh.handle(GOAL)
    replaced = fresh.handle("a kagome net of Mn with Sn, 12 atoms")
    assert "replacing" in replaced.lines[0] and fresh.spec.motif.lattice == "kagome"
    assert "the proposed spec stands" in _one_line(fresh.handle("make me a sandwich"))
    assert fresh.spec.motif.lattice == "kagome"
    assert "dropped" in _one_line(fresh.handle("reject because wrong system"))
    assert fresh.state == "awaiting_goal" and fresh.spec is None
    assert "no proposed spec" in _one_line(fresh.handle("approve"))


@pytest.mark.parametrize("line, n", [("show the five most stable", 5), ("top 3", 3), ("ten most stable", 10),
                                     ("what are the most stable ones", 5), ("show the best two", 2),
                                     ("results", 0), ("show the hits", -1), ("why was x rejected", None),
                                     ("the most stable li-co-o oxide, 8 atoms", None)])
def test_follow_up_rules_read_number_words(line: str, n: int | None) -> None:
    assert _top_request(line) == n
