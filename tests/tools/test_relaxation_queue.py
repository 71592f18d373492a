"""Best-first relaxation order and the relaxation budget (tools.evaluate.relaxation_queue)."""

from __future__ import annotations

from tessera.tools.candidate import Candidate, StageOutcome
from tessera.tools.evaluate import EHULL_STAGE, relaxation_queue


def _cand(estimate: float | None, *, error: str | None = None, relaxed: bool = False) -> Candidate:
    stages = {"geometry": StageOutcome(passed=True)}
    if estimate is not None:
        stages[EHULL_STAGE] = StageOutcome(passed=True, value=estimate)
    return Candidate(prescreen=stages, error=error, relaxed=relaxed)


def test_queue_is_best_first_by_unrelaxed_estimate_with_unknowns_last() -> None:
    cands = [_cand(0.4), _cand(None), _cand(-0.1), _cand(0.05), _cand(0.2, error="failed smact prescreen")]
    assert relaxation_queue(cands) == [2, 3, 0, 1]  # the failed one is not eligible
    assert all(c.error is None for i, c in enumerate(cands) if i != 4)


def test_budget_keeps_the_likeliest_and_names_the_rank_of_the_rest() -> None:
    cands = [_cand(0.4), _cand(-0.1), _cand(0.05), _cand(0.9, relaxed=True)]
    assert relaxation_queue(cands, limit=2) == [1, 2]
    assert cands[0].error is not None and "relaxation budget of 2" in cands[0].error and "rank 3 of 3" in cands[0].error
    assert cands[3].error is None  # already relaxed: neither queued nor stopped


def test_zero_budget_relaxes_nothing() -> None:
    cands = [_cand(0.1), _cand(0.2)]
    assert relaxation_queue(cands, limit=0) == []
    assert all(c.error and c.error.startswith("not relaxed") for c in cands)
