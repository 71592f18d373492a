"""``tessera plan "GOAL"``: a design goal in words -> a validated DesignSpec (the offline planner).

Under ``--json`` stdout carries the spec itself, so ``tessera plan "..." --json > spec.json`` feeds
``tessera sample --spec spec.json``; what the planner could not use goes to stderr. Without ``--json`` stdout
gets a short summary of the spec and a line listing the unused words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, out_console

if TYPE_CHECKING:
    from tessera.agents.planner.base import Plan


@app.command("plan")
def plan_command(
    goal: str = typer.Argument(..., help='the design goal, e.g. "a kagome net of Mn with Sn, 32 candidates"'),
    json_out: bool = JSON_OPTION,
) -> None:
    """Turn a design goal into a DesignSpec (deterministic offline rules); say which words were not used."""
    from tessera.agents.planner.offline import OfflinePlanner

    plan = OfflinePlanner().plan(goal)  # a PlanningError becomes one line (common.OneLineErrors)
    if json_out:
        emit_json(plan.spec.model_dump(mode="json"))
        if plan.unused:
            err_console.print(f"unused: {'; '.join(plan.unused)}", highlight=False, soft_wrap=True)
        return
    for line in summary_lines(plan):
        out_console.print(line, highlight=False, soft_wrap=True)


def summary_lines(plan: "Plan") -> list[str]:
    """The spec in a few readable lines, then the notes and the unused words."""
    spec = plan.spec
    chem = spec.chemistry
    lines: list[str] = []
    if len(chem.elements) > 12:
        allowed = f"{len(chem.elements)} elements"
    else:
        allowed = "-".join(chem.elements) if chem.elements else "any"
    parts = [f"elements {allowed}"]
    if chem.required:
        parts.append(f"required {', '.join(chem.required)}")
    if chem.n_elements:
        parts.append(f"{chem.n_elements} per crystal")
    parts.append(f"{chem.atoms} atoms per cell" if chem.atoms else "atoms from the prior")
    lines.append("chemistry: " + "; ".join(parts))
    if spec.motif is not None:
        bond = f", bond {spec.motif.bond_length:g} A" if spec.motif.bond_length else ""
        lines.append(f"motif: {spec.motif.lattice} net of {spec.motif.element}{bond}")
    for term in spec.guidance:
        lines.append(f"guidance: {_term(term)}")
    b = spec.budgets
    budget = [f"{b.samples} samples"]
    if b.relaxations is not None:
        budget.append(f"at most {b.relaxations} relaxations")
    if b.wall_minutes is not None:
        budget.append(f"{b.wall_minutes:g} min")
    lines.append(f"stable: E_hull <= {spec.thresholds.stable_e_hull:g} eV/atom; budget: {', '.join(budget)}; "
                 f"seed {spec.seed}")
    lines.append(f"spec {spec.spec_hash()[:12]}")
    lines.extend(f"note: {n}" for n in plan.notes)
    lines.append(f"unused: {'; '.join(plan.unused) if plan.unused else '(none)'}")
    return lines


def _term(term) -> str:  # noqa: ANN001 - a tessera.tools.spec.GuidanceTerm
    target = term.target
    shown = f"[{', '.join(f'{x:g}' for x in target)}]" if isinstance(target, list) else f"{target:g}"
    if term.kind == "coordination":
        return (f"{term.elements[0]}-{term.elements[1]} coordination {shown} (cutoff {term.cutoff:g} A, "
                f"+-{term.tolerance:g}, strength {term.strength:g})")
    unit = {"volume_per_atom": " A^3/atom", "min_distance": " A"}.get(term.kind, "")
    return f"{term.kind} {shown}{unit} (+-{term.tolerance:g}, strength {term.strength:g})"
