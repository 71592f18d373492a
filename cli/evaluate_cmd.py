"""``tessera evaluate PATH... [--out DIR] [--store DIR] [--json]``: judge structures from files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, run_opener


@app.command("evaluate")
def evaluate_command(
    paths: list[Path] = typer.Argument(..., help="structure files or folders (CIF, POSCAR, extxyz, pymatgen JSON)"),
    out: Path = typer.Option(Path("tessera_eval"), "--out", help="output folder for candidates.jsonl and summary.json"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the run in a store"),
    gate: bool = typer.Option(False, "--gate", help="every prescreen stage gates relaxation (default: only geometry)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="local Dask workers (default one per core; 0 = serial)"),
    address: Optional[str] = typer.Option(None, "--address", help="join an existing Dask cluster at this scheduler address"),
    fmax: Optional[float] = typer.Option(None, "--fmax", help="relaxation force threshold, eV/A"),
    steps: Optional[int] = typer.Option(None, "--steps", help="relaxation step limit"),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds", help="wall-time limit per relaxation, s"),
    stable_threshold: Optional[float] = typer.Option(
        None, "--stable-threshold", help="E_hull ceiling for 'stable', eV/atom (default: MatterGen's 0.1)"),
    exclude_id: list[str] = typer.Option([], "--exclude-id", help="material id to leave out of hull and novelty pool"),
    confirm: Optional[str] = typer.Option(
        None, "--confirm", help="second judge for CHGNet's stable candidates: sevennet, or none (default: configs/judge.yaml)"),
    spec: Optional[Path] = typer.Option(
        None, "--spec", help="DesignSpec file: judge every input against its motif, guidance targets and required elements"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Prescreen, relax (CHGNet), hull and analyze the given structures; write OUT/candidates.jsonl."""
    from tessera.cli.render import EvaluationProgress, print_evaluation
    from tessera.tools.evaluate import EvaluateFilesParams, EvaluateParams, evaluate_files
    from tessera.tools.prescreen import load_prescreen_params
    from tessera.tools.relax import load_relax_params

    from tessera.tools.errors import InputError

    if confirm is not None and confirm not in ("sevennet", "none"):
        raise InputError(f"--confirm {confirm}: choose sevennet or none")
    confirm_override = {} if confirm is None else {"confirm": None if confirm == "none" else confirm}
    relax_overrides = {k: v for k, v in {"fmax": fmax, "steps": steps, "max_seconds": max_seconds}.items() if v is not None}
    from tessera.tools.spec import load_spec

    design = load_spec(spec) if spec is not None else None  # a bad spec file is one line before any work
    params = EvaluateFilesParams(
        paths=paths,
        out=out,
        spec=design,
        evaluate=EvaluateParams(
            gate=gate,
            prescreen=load_prescreen_params(),
            relax=load_relax_params().model_copy(update=relax_overrides),
            **({"stable_threshold": stable_threshold} if stable_threshold is not None else {}),
            exclude_ids=list(exclude_id),
            workers=workers,
            address=address,
            **confirm_override,
        ),
    )
    open_run = run_opener(store, no_store=no_store)
    with EvaluationProgress(quiet=json_out) as on_step:
        result = evaluate_files(params, open_run=open_run, on_step=on_step)
    if json_out:
        emit_json(result.payload())
    else:
        print_evaluation(result)
