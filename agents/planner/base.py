"""The planner interface every backend implements, and what a plan carries back.

A plan is never executed blindly: whatever a backend produces goes through ``tools.spec.parse_spec`` (the
same validation as a spec file), so an LLM and the offline rules are held to one schema. A goal that cannot
be turned into a possible spec (an unknown element, contradictory constraints, a refusal) raises
:class:`PlanningError` with one line naming the problem.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from tessera.tools.errors import InputError
from tessera.tools.spec import DesignSpec


class PlanningError(InputError):
    """The goal cannot become a possible DesignSpec (unknown element, contradiction, refusal, bad LLM output)."""


class Plan(BaseModel):
    """A DesignSpec and the account of how it was read from the goal."""

    goal: str = Field(description="the goal text exactly as given (kept for the audit trail)")
    spec: DesignSpec
    backend: str = Field(description="'offline' or 'llm:<model>'")
    used: list[str] = Field(default_factory=list, description="phrases of the goal that set a field, with what they set")
    unused: list[str] = Field(default_factory=list, description="words or phrases the planner could not use")
    notes: list[str] = Field(default_factory=list, description="defaults filled in, repairs made, warnings")
    llm_calls: list[dict[str, Any]] = Field(
        default_factory=list,
        description="each request to an LLM and its reply (model, endpoint, messages, reply, outcome, seconds); "
                    "a session writes them to the audit log as llm_call events")


@runtime_checkable
class Planner(Protocol):
    """Turns a goal into a Plan; raises PlanningError for an impossible or unusable goal."""

    name: str

    def plan(self, goal: str, *, base: DesignSpec | None = None) -> Plan:
        """Plan ``goal``; ``base`` (when given) holds fields the user already fixed (e.g. an edited spec)."""
        ...
