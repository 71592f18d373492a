"""``tessera demo``: the main job on the embedded defaults, offline (the steps live in tessera.tools.demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, out_console, run_opener


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output folder"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    n: int = typer.Option(8, "--n", min=0, help="crystals to generate (0: only the example set)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Generate crystals with the shipped model and judge them; judge the shipped example set; plot E_hull."""
    from tessera.cli.render import EvaluationProgress, print_evaluation
    from tessera.tools.demo import DemoParams, generate_and_judge, judge_examples

    params = DemoParams(out=out, n=n, seed=seed)
    open_run = run_opener(store)
    result: dict[str, Any] = {}
    if n > 0:
        if not json_out:
            err_console.rule(f"1. generate {n} crystals (shipped generator, seed {seed}) and judge them (gated)")
        with EvaluationProgress(quiet=json_out) as on_step:
            generated = generate_and_judge(params, open_run=open_run, on_step=on_step)
        result["generated"] = {"sample": generated.sample.payload(), "evaluate": generated.evaluate.payload(),
                               "plot": str(generated.plot)}
        if not json_out:
            err_console.print(f"sampled {len(generated.sample.candidates)} crystals in {generated.sample.seconds:.1f} s")
            print_evaluation(generated.evaluate)
    if not json_out:
        err_console.rule("2. the shipped example set (6 held-out MP structures, 2 random pyxtal ones)")
    with EvaluationProgress(quiet=json_out) as on_step:
        examples = judge_examples(params, open_run=open_run, on_step=on_step)
    result["examples"] = {"evaluate": examples.evaluate.payload(), "plot": str(examples.plot)}
    if json_out:
        emit_json(result)
        return
    print_evaluation(examples.evaluate)
    out_console.print(f"E_hull plots: {', '.join(str(v['plot']) for v in result.values())}")
