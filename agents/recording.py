"""Recording runs of the entry points (evaluate, sample) into the candidate store and audit log.

The run is opened before any work starts (so a bad ``--store`` fails fast, before an hour of CHGNet),
each relaxation is an audit event as it completes, and the candidates land in one batch at the end
(``candidates.jsonl`` in the output folder and the relaxation journal keep the work durable meanwhile).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tessera.store import RunHandle, Store
from tessera.store.provenance import file_sha256
from tessera.tools.candidate import Candidate
from tessera.tools.evaluate import EvalStep, EvaluateParams, EvaluateSummary


class EvaluationRecorder:
    """Feeds an evaluation's steps into a run's audit log (one event per relaxation and per stage)."""

    def __init__(self, *, run: RunHandle) -> None:
        self.run = run
        self.stage_started: dict[str, float] = {}
        self.stage_counts: dict[str, int] = {}

    def on_step(self, step: EvalStep) -> None:
        """Log each relaxation's outcome (durably, before the next one is acted on)."""
        self.stage_started.setdefault(step.stage, time.perf_counter())
        self.stage_counts[step.stage] = self.stage_counts.get(step.stage, 0) + 1
        c = step.candidate
        if step.stage == "relax" and c is not None:
            self.run.log_tool_call(
                tool="relax",
                arguments={"candidate": c.id, "source": c.source, "formula": c.formula},
                result_summary={
                    "relaxed": c.relaxed,
                    "converged": c.converged,
                    "steps": c.relax_steps,
                    "energy_per_atom": c.energy_per_atom,
                },
                seconds=c.relax_seconds or 0.0,
                error=c.error,
            )


@contextmanager
def evaluation_run(
    store_location: str | None,
    params: EvaluateParams,
    *,
    inputs: list[str],
    kind: str = "evaluate",
    extra: dict[str, Any] | None = None,
) -> Iterator[EvaluationRecorder]:
    """Open the store, start a run (its params echoed into the audit log) and yield its recorder.

    An exception escaping the block marks the run failed, with the error in its log.
    """
    store = Store.open(store_location)
    run = store.start_run(kind, {"inputs": inputs, **params.model_dump(mode="json"), **(extra or {})})
    with run:
        yield EvaluationRecorder(run=run)


def finish_evaluation(
    recorder: EvaluationRecorder,
    candidates: list[Candidate],
    summary: EvaluateSummary,
    *,
    out_dir: Path,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Record the candidates and the summary; close the run. Returns the run id."""
    run = recorder.run
    run.log_tool_call(
        tool="evaluate",
        arguments={"n_inputs": summary.n_inputs, "out": str(out_dir)},
        result_summary=summary.model_dump(mode="json", exclude={"params"}),
        seconds=summary.seconds,
    )
    run.add_candidates(candidates, provenance=provenance)
    run.finish(summary.model_dump(mode="json", exclude={"params"}))
    return run.run_id


def open_sample_run(
    store_location: str | None, params: dict[str, Any], *, checkpoint: Path, seed: int
) -> RunHandle:
    """Open the store and start a ``sample`` run before any sampling (a bad ``--store`` fails fast)."""
    store = Store.open(store_location)
    return store.start_run("sample", params, checkpoint_hash=file_sha256(checkpoint), seed=seed)


def finish_sample_run(
    run: RunHandle, candidates: list[Candidate], summary: dict[str, Any], *, seconds: float
) -> str:
    """Log the sampling call, record the (unrelaxed) candidates and close the run. Returns the run id."""
    run.log_tool_call(tool="sample", arguments={k: v for k, v in summary.items() if k != "out"},
                      result_summary={"n": len(candidates), "formulas": sorted({c.formula or "" for c in candidates})[:50]},
                      seconds=seconds)
    run.add_candidates(candidates)
    run.finish(summary)
    return run.run_id
