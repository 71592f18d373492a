"""``tessera train generator``, ``tessera train ship-generator`` and ``tessera sample``: parse, call the
jobs in tessera.tools.train and tessera.tools.sample, render."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tessera.cli.common import JSON_OPTION, app, emit_json, err_console, out_console, run_opener
from tessera.tools.paths import CONFIG_DIR, DATA_DIR

# Literal defaults (not imported from the jobs) keep `tessera --help` free of the jobs' imports.
GENERATOR_CONFIG = CONFIG_DIR / "generator.yaml"
SHIPPED_CHECKPOINT = DATA_DIR / "checkpoints" / "generator.pt"
SAMPLER_CONFIG = CONFIG_DIR / "sampler.yaml"

train_app = typer.Typer(help="Train models.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("generator")
def train_generator_command(
    config: Path = typer.Option(GENERATOR_CONFIG, help="YAML with model/train sections"),
    max_steps: int = typer.Option(0, min=0, help="stop after this many more steps (0: run to total_steps)"),
    fresh: bool = typer.Option(False, help="ignore an existing work checkpoint and start over"),
    threads: int = typer.Option(2, min=1, help="torch CPU threads"),
    max_minutes: float = typer.Option(0.0, min=0, help="stop (with a checkpoint) after this much wall time (0: no limit)"),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="weights to start a new run from (default: the config's init_from)"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Train the crystal diffusion model on the pool's train split (resumes from work_dir/last.pt)."""
    from tessera.tools.train import TrainParams, train_generator

    def on_log(log) -> None:  # noqa: ANN001 - a generators.training.StepLog
        if json_out:
            return
        msg = (f"step {log.step} loss {log.loss:.4f} (L {log.loss_lattice:.4f} F {log.loss_frac:.4f} "
               f"A {log.loss_type:.4f}) lr {log.lr:.2e} {log.elapsed_s:.0f} s")
        if log.val:
            msg += " | " + " ".join(f"{k} {v:.4f}" for k, v in log.val.items())
        err_console.print(msg, highlight=False)

    params = TrainParams(config=config, max_steps=max_steps, fresh=fresh, threads=threads, max_minutes=max_minutes,
                         init_from=init_from)
    result = train_generator(params, on_log=on_log, on_message=lambda m: err_console.print(m, highlight=False))
    if json_out:
        emit_json(result.model_dump(mode="json", exclude={"params"}))
    else:
        best = f"{result.best_val:.4f}" if result.best_val is not None else "n/a"
        err_console.print(f"done at step {result.step}; best val loss {best}")


@train_app.command("ship-generator")
def ship_generator_command(
    source: Optional[Path] = typer.Option(None, "--from", help="weights to ship (default: work_dir/best_ema.pt)"),
    config: Path = typer.Option(GENERATOR_CONFIG, help="YAML with model/train sections"),
    n_check: int = typer.Option(64, min=1, help="crystals sampled to record quick sample statistics"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Copy EMA weights (no optimiser state) to data/checkpoints/ with a JSON of config, pool hash, step, metrics."""
    from tessera.tools.train import ShipParams, ship_generator

    result = ship_generator(ShipParams(source=source, config=config, n_check=n_check))
    if json_out:
        emit_json(result.model_dump(mode="json", exclude={"params"}))
    else:
        err_console.print(f"shipped step {result.step} -> {result.shipped} ({result.size_mb:.1f} MB); "
                          f"check: {result.sample_check}")


@app.command("sample")
def sample_command(
    out: Path = typer.Option(..., "--out", help="output directory (candidates.jsonl + one CIF per crystal)"),
    n: int = typer.Option(16, "--n", min=1, help="number of crystals"),
    atoms: int = typer.Option(0, "--atoms", min=0, help="atoms per cell (0: draw from the training prior)"),
    elements: str = typer.Option("", "--elements", help="restrict atom types, e.g. Li,Co,O"),
    n_elements: int = typer.Option(0, "--n-elements", min=0,
                                   help="distinct elements per crystal, e.g. 3 for ternaries (0: drawn from the data)"),
    seed: int = typer.Option(0, "--seed", help="random seed (same seed, same crystals)"),
    checkpoint: Path = typer.Option(SHIPPED_CHECKPOINT, "--checkpoint", help="weights file (default: shipped)"),
    steps: int = typer.Option(0, "--steps", min=0, help="reverse steps (0: configs/sampler.yaml)"),
    sampler_config: Path = typer.Option(SAMPLER_CONFIG, "--sampler-config", help="sampler YAML"),
    settings: list[str] = typer.Option([], "--set", help="override a sampler setting, e.g. --set type_resample=1 "
                                       "(repeatable; YAML values; see configs/sampler.yaml)"),
    threads: int = typer.Option(2, min=1, help="torch CPU threads"),
    spec: Optional[Path] = typer.Option(None, "--spec", help="a DesignSpec file (JSON or YAML): chemistry, motif, "
                                        "budgets and seed come from it (--n, --seed, --atoms, --elements are ignored)"),
    lattice: Optional[str] = typer.Option(None, "--lattice", help="inpaint a lattice motif: kagome, honeycomb, "
                                          "triangular, square, lieb, pyrochlore, ... (with --motif-element)"),
    motif_element: Optional[str] = typer.Option(None, "--motif-element", help="the element on the motif, e.g. Mn"),
    bond_length: Optional[float] = typer.Option(None, "--bond-length", min=0.5, max=6.0,
                                                help="motif bond length, A (default: 2x the metallic radius)"),
    store: Optional[str] = typer.Option(None, "--store", help="candidate store (default: $TESSERA_STORE or the user data dir)"),
    no_store: bool = typer.Option(False, "--no-store", help="do not record the run in a store"),
    json_out: bool = JSON_OPTION,
) -> None:
    """Sample crystals with the trained diffusion model, offline; record the run in the store.

    With --lattice NAME --motif-element EL (or a --spec file with a motif) a 2D net of EL (or the 3D
    pyrochlore net) is inpainted at every reverse step (SCIGEN) and checked at the end (motif_exact).
    """
    from tessera.tools.errors import InputError
    from tessera.tools.sample import SampleParams, sample_crystals
    from tessera.tools.spec import ChemistrySpec, DesignSpec, MotifSpec, load_spec, parse_spec

    options = dict(checkpoint=checkpoint, steps=steps, sampler_config=sampler_config, settings=settings,
                   threads=threads)
    symbols = [s.strip() for s in elements.split(",") if s.strip()]
    if spec is not None:
        if lattice or motif_element:
            raise InputError("give the motif in the --spec file or as --lattice/--motif-element, not both")
        params = SampleParams.from_spec(load_spec(spec), out=out, **options)
    elif lattice or motif_element:
        if not (lattice and motif_element):
            raise InputError("--lattice and --motif-element go together (e.g. --lattice kagome --motif-element Mn)")
        design = parse_spec({"chemistry": ChemistrySpec(elements=symbols, n_elements=n_elements, atoms=atoms).model_dump(),
                             "motif": {"lattice": lattice, "element": motif_element, "bond_length": bond_length},
                             "budgets": {"samples": n}, "seed": seed}, source="--lattice")
        params = SampleParams.from_spec(design, out=out, **options)
    else:
        params = SampleParams(out=out, n=n, seed=seed, atoms=atoms, elements=symbols, n_elements=n_elements, **options)
    result = sample_crystals(params, open_run=run_opener(store, no_store=no_store),
                             on_warning=lambda m: err_console.print(f"[yellow]warning:[/] {m}", highlight=False))
    if json_out:
        emit_json(result.payload())
        return
    from rich.table import Table

    table = Table(title=f"tessera sample: {len(result.candidates)} crystals (seed {params.seed}, {result.checkpoint})")
    motif = params.motif
    columns = ["id", "formula", "atoms", "space group (unrelaxed)"] + ([f"{motif.lattice} {motif.element}"] if motif else [])
    for col in columns:
        table.add_column(col)
    for cand in result.candidates:
        row = [cand.id, cand.formula or "", str(cand.n_atoms or ""), _space_group(cand.cif or "")]
        if motif:
            row.append("exact" if cand.provenance.get("constraints", {}).get("motif_exact") else "not found")
        table.add_row(*row)
    out_console.print(table)
    out_console.print(f"wrote {len(result.candidates)} crystals to {out} ({result.crystals_per_s:.2f} crystals/s)"
                      + (f"; run {result.run_id}" if result.run_id else ""), highlight=False)


def _space_group(cif: str) -> str:
    """Space-group symbol (tools.analyze.symmetry, its tolerances), or '?' when spglib finds none."""
    from pymatgen.core import Structure

    from tessera.tools.analyze import symmetry
    from tessera.tools.errors import ToolFailed

    try:
        return symmetry(Structure.from_str(cif, fmt="cif")).spacegroup_symbol
    except ToolFailed:  # a distorted cell without a group is listed as such, not a failed listing
        return "?"
