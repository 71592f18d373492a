"""What a design session shows: node-by-node progress on stderr, the ranked table on stdout."""

from __future__ import annotations

from typing import Any

from rich.progress import Progress
from rich.table import Table

from tessera.cli.common import out_console, progress

NODE_LABELS: dict[str, str] = {
    "understand": "planning", "approve": "waiting for approval", "generate": "sampling", "prescreen": "prescreen",
    "relax": "relaxing (CHGNet)", "assess": "hull, novelty, constraints", "record": "recording", "decide": "deciding",
    "report": "writing the report",
}


class SessionProgress:
    """Hooks for :class:`tessera.agents.session.DesignSession`: a line per node, a bar per evaluation stage."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar: Progress = progress(transient=True)
        self.tasks: dict[tuple[int, str], int] = {}
        self.round = 0

    def __enter__(self) -> "SessionProgress":
        if not self.quiet:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def hooks(self) -> Any:
        from tessera.agents.session import SessionHooks

        return SessionHooks(on_node=self.on_node, on_step=self.on_step, on_message=self.on_message)

    def on_node(self, name: str, round_index: int) -> None:
        self.round = round_index
        if not self.quiet and name not in ("decide", "record"):
            self.bar.console.print(f"[dim]round {round_index}[/] {NODE_LABELS.get(name, name)}", highlight=False)

    def on_step(self, step: Any) -> None:
        if self.quiet or step.stage in ("read", "done"):
            return
        key = (self.round, step.stage)
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(f"round {self.round} {step.stage}", total=None)
        self.bar.advance(self.tasks[key])

    def on_message(self, line: str) -> None:
        if not self.quiet:
            self.bar.console.print(line, highlight=False, soft_wrap=True)


def _level(c: Any) -> str:
    """The strictest stability level reached, by the measures every number uses (tools.measures)."""
    from tessera.tools.measures import is_on_hull

    if c.e_hull is None:
        return "-"
    if c.confirmed:
        return "confirmed"
    if is_on_hull(c.e_hull):
        return "<= 0"
    return "0.1" if c.stable else "above"


def _novelty(c: Any) -> str:
    """known (matches a pool material), substitution (new, but a known framework with other elements),
    new type (no match even with elements ignored), or '-' when not judged."""
    if c.novel is None:
        return "-"
    if not c.novel:
        return "known"
    return {True: "new type", False: "substitution"}.get(c.novel_prototype, "yes")


def ranked_table(candidates: list[Any], *, limit: int = 20, title: str = "Ranked candidates") -> Table:
    """id, formula, E_hull, stability level, space group, constraints, novelty; best first."""
    table = Table(title=title, title_justify="left")
    for col in ("#", "id", "formula", "E_hull (eV/atom)", "level", "space group", "constraints", "novel", "stopped"):
        table.add_column(col, overflow="fold")
    for i, c in enumerate(candidates[:limit], start=1):
        satisfied = c.provenance.get("constraints_satisfied")
        constraint = "-" if satisfied is None and not c.provenance.get("constraints") else (
            "met" if satisfied else "not met")
        novel = _novelty(c)
        table.add_row(str(i), c.id, c.formula or "?", "-" if c.e_hull is None else f"{c.e_hull:.3f}", _level(c),
                      c.spacegroup or "-", constraint, novel, (c.error or "")[:80])
    return table


def print_ranked(candidates: list[Any], *, limit: int = 20) -> None:
    out_console.print(ranked_table(candidates, limit=limit))
    if not candidates:
        out_console.print("No candidates were judged.")
    else:
        out_console.print("level: 0.1 = E_hull <= 0.1 eV/atom (CHGNet); <= 0 = on or below the hull; confirmed = "
                          "SevenNet-0 agrees within 0.1. novel: known = matches a pool material; substitution = "
                          "a known framework with other elements; new type = no match even with elements ignored.", highlight=False, soft_wrap=True, style="dim")


def candidate_json(c: Any) -> dict[str, Any]:
    return {"id": c.id, "formula": c.formula, "e_hull": c.e_hull, "stable": c.stable, "confirmed": c.confirmed,
            "spacegroup": c.spacegroup, "unique": c.unique, "novel": c.novel, "novel_prototype": c.novel_prototype,
            "constraints_satisfied": c.provenance.get("constraints_satisfied"), "error": c.error}

