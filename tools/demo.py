"""The demo's two steps, the main job on the embedded defaults, offline.

Until the planner agent exists the main job is "generate, then judge":
1. :func:`generate_and_judge`: sample crystals with the shipped generator and run them through the gated
   pipeline (prescreen, CHGNet relaxation, hull, novelty), with an E_hull plot;
2. :func:`judge_examples`: evaluate the shipped example set (six held-out Materials Project structures that
   the pipeline should call stable, two random pyxtal structures of the same compositions that it should
   not), with an E_hull plot.
Each step is a plain job; the caller passes ``open_run`` to record the runs and ``on_step`` for progress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field

from tessera.tools.evaluate import EvalStep, EvaluateFilesParams, EvaluateFilesResult, EvaluateParams, evaluate_files
from tessera.tools.paths import DATA_DIR
from tessera.tools.plots import plot_ehull
from tessera.tools.runlog import RunOpener
from tessera.tools.sample import SampleParams, SampleResult, sample_crystals

EXAMPLES_DIR: Path = DATA_DIR / "examples"


class GeneratedJudged(BaseModel):
    """Step 1's outcome: what was sampled, how it was judged, and the plot."""

    model_config = ConfigDict(extra="forbid")

    sample: SampleResult
    evaluate: EvaluateFilesResult
    plot: Path


class ExamplesJudged(BaseModel):
    """Step 2's outcome: the example set's evaluation and its plot."""

    model_config = ConfigDict(extra="forbid")

    evaluate: EvaluateFilesResult
    plot: Path


class DemoParams(BaseModel):
    """Where the demo writes, and what it generates."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("runs/demo"), description="output folder (samples/, generated/, examples/)")
    n: int = Field(8, ge=0, description="crystals to generate (0: only the example set)")
    seed: int = Field(0, description="sampling seed")


def generate_and_judge(
    params: DemoParams,
    *,
    open_run: RunOpener | None = None,
    on_step: Callable[[EvalStep], None] | None = None,
) -> GeneratedJudged:
    """Sample ``params.n`` crystals into ``out/samples`` and judge them, every prescreen stage gating."""
    sampled = sample_crystals(SampleParams(out=params.out / "samples", n=params.n, seed=params.seed), open_run=open_run)
    judged = evaluate_files(
        # The sample folder, not its CIFs: its candidates.jsonl keeps each crystal's id, seed and checkpoint.
        EvaluateFilesParams(paths=[sampled.params.out], out=params.out / "generated", evaluate=EvaluateParams(gate=True)),
        open_run=open_run, on_step=on_step,
    )
    png = plot_ehull(judged.candidates_path, params.out / "generated" / "ehull.png",
                     title=f"generated (seed {params.seed}): relaxed candidates")
    return GeneratedJudged(sample=sampled, evaluate=judged, plot=png)


def judge_examples(
    params: DemoParams,
    *,
    open_run: RunOpener | None = None,
    on_step: Callable[[EvalStep], None] | None = None,
) -> ExamplesJudged:
    """Judge the shipped example set into ``out/examples`` (ungated: every structure is relaxed)."""
    judged = evaluate_files(EvaluateFilesParams(paths=[EXAMPLES_DIR], out=params.out / "examples"),
                            open_run=open_run, on_step=on_step)
    png = plot_ehull(judged.candidates_path, params.out / "examples" / "ehull.png", title="shipped example set")
    return ExamplesJudged(evaluate=judged, plot=png)
