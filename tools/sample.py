"""The sampling job: crystals from the shipped (or a given) diffusion model into a folder, offline.

:func:`sample_crystals` is what ``tessera sample``, ``tessera demo``, the benchmarks and (soon) the planner
call. It composes configuration (configs/sampler.yaml plus KEY=VALUE overrides), loads the weights,
hands plain options to ``tessera.generators`` (which imports nothing from tools/) and writes one CIF per
crystal plus ``candidates.jsonl``. Every candidate carries its seed, index and checkpoint, so a hit found
later can be traced to the model and settings that made it.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tessera.tools.candidate import Candidate
from tessera.tools.errors import InputError
from tessera.tools.paths import CONFIG_DIR, DATA_DIR, repo_relative
from tessera.tools.runlog import RunOpener
from tessera.tools.spec import DesignSpec, GuidanceOptions, GuidanceTerm, MotifSpec, default_guidance_options

SHIPPED_CHECKPOINT: Path = DATA_DIR / "checkpoints" / "generator.pt"
SAMPLER_CONFIG: Path = CONFIG_DIR / "sampler.yaml"


class SampleParams(BaseModel):
    """Everything that decides what :func:`sample_crystals` draws (same values, same crystals)."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output folder: candidates.jsonl and one CIF per crystal")
    n: int = Field(16, ge=1, description="number of crystals")
    seed: int = Field(0, description="random seed (same seed, same crystals)")
    atoms: int = Field(0, ge=0, description="atoms per cell (0: drawn from the training prior)")
    elements: list[str] = Field(default_factory=list, description="allowed element symbols (empty: all)")
    required: list[str] = Field(default_factory=list, description="elements every crystal should contain (checked "
                                "and recorded per crystal; the sampler does not force them)")
    n_elements: int = Field(0, ge=0, description="distinct elements per crystal (0: drawn from the data)")
    checkpoint: Path = Field(SHIPPED_CHECKPOINT, description="weights file")
    steps: int = Field(0, ge=0, description="reverse steps (0: the sampler config's)")
    sampler_config: Path = Field(SAMPLER_CONFIG, description="sampler YAML")
    settings: list[str] = Field(default_factory=list, description="KEY=VALUE overrides of the sampler YAML")
    threads: int = Field(2, ge=1, description="torch CPU threads")
    motif: MotifSpec | None = Field(None, description="a lattice motif inpainted at every reverse step (SCIGEN)")
    guidance: list[GuidanceTerm] = Field(default_factory=list, description="universal-guidance terms")
    guidance_options: GuidanceOptions | None = Field(None, description="None: configs/guidance.yaml")
    spec_hash: str | None = Field(None, description="the DesignSpec these settings came from, if any")

    @classmethod
    def from_spec(cls, spec: DesignSpec, *, out: Path, **options: Any) -> "SampleParams":
        """Sampling settings of a DesignSpec (``options``: checkpoint, steps, sampler settings, threads)."""
        return cls(out=out, n=spec.budgets.samples, seed=spec.seed, atoms=spec.chemistry.atoms,
                   elements=list(spec.chemistry.elements), required=list(spec.chemistry.required), n_elements=spec.chemistry.n_elements, motif=spec.motif,
                   guidance=list(spec.guidance), guidance_options=spec.guidance_options,
                   spec_hash=spec.spec_hash(), **options)


class SampleResult(BaseModel):
    """What :func:`sample_crystals` made, echoing its parameters."""

    model_config = ConfigDict(extra="forbid")

    params: SampleParams
    candidates: list[Candidate]
    cif_paths: list[Path] = Field(description="this run's CIFs, in sample order")
    seconds: float = Field(description="wall time of the sampling itself, s")
    checkpoint: str = Field(description="the weights, repository-relative where possible")
    batch_size: int
    sampler: dict[str, Any] = Field(description="the resolved sampler settings")
    warnings: list[str] = Field(default_factory=list)
    run_id: str | None = None

    @property
    def crystals_per_s(self) -> float:
        return len(self.candidates) / self.seconds if self.seconds > 0 else 0.0

    def payload(self) -> dict[str, Any]:
        """The JSON object of ``tessera sample --json``."""
        return {"n": len(self.candidates), "out": str(self.params.out), "seconds": self.seconds,
                "crystals_per_s": self.crystals_per_s, "seed": self.params.seed, "checkpoint": self.checkpoint,
                "batch_size": self.batch_size, "sampler": self.sampler, "run_id": self.run_id,
                "formulas": [c.formula for c in self.candidates]}


def parse_elements(symbols: list[str], vocab: list[int]) -> list[int]:
    """['Li', 'Co', 'O'] -> vocabulary indices; one clear InputError for an unknown or unsupported element."""
    from pymatgen.core import Element

    idx = []
    for sym in [s.strip() for s in symbols if s.strip()]:
        try:
            z = Element(sym).Z
        except ValueError:
            raise InputError(f"--elements: {sym!r} is not an element symbol") from None
        if z not in vocab:
            raise InputError(f"--elements: {sym} does not occur in the training data, the model cannot place it")
        idx.append(vocab.index(z))
    if not idx:
        raise InputError("--elements: no element given")
    return idx


def load_sampler_settings(path: Path, *, steps: int = 0, settings: list[str] | None = None) -> tuple[Any, int]:
    """(SamplerConfig, batch_size) from a sampler YAML, ``steps`` and KEY=VALUE overrides; InputError if bad."""
    from tessera.generators.sampler import SamplerConfig, parse_overrides

    if not path.exists():
        raise InputError(f"sampler config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    batch_size = int(raw.pop("batch_size", 128))
    if steps:
        raw["num_steps"] = steps
    try:
        overrides = parse_overrides(settings or [])
        batch_size = int(overrides.pop("batch_size", batch_size))
        return SamplerConfig.from_dict({**raw, **overrides}), batch_size
    except (ValueError, TypeError) as exc:
        raise InputError(f"--set: {exc}") from None


def sample_crystals(
    params: SampleParams,
    *,
    open_run: RunOpener | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> SampleResult:
    """Sample ``params.n`` crystals into ``params.out`` (candidates.jsonl + one CIF each).

    With ``open_run`` a ``sample`` run is recorded (opened before any sampling; the candidates, unrelaxed,
    added at the end). Bad options raise InputError before any work; ``on_warning`` hears about options
    that are allowed but doubtful (an atom count beyond the training range, more elements than allowed).
    """
    import torch

    from tessera.generators.convert import to_structures
    from tessera.generators.model import load_weights
    from tessera.generators.sampler import Sampler, can_fix_n_elements, sample_many
    from tessera.tools.hashing import file_sha256

    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    torch.set_num_threads(params.threads)
    checkpoint = params.checkpoint
    if not checkpoint.exists():
        raise InputError(f"checkpoint not found: {checkpoint}")
    if params.out.exists() and not params.out.is_dir():
        raise InputError(f"--out {params.out} is an existing file, not a folder")
    config, batch_size = load_sampler_settings(params.sampler_config, steps=params.steps, settings=params.settings)
    model = load_weights(checkpoint)
    try:
        Sampler(model=model, config=config)  # checks the settings against this checkpoint before any work
    except ValueError as exc:
        raise InputError(f"sampler settings: {exc}") from None
    allowed = parse_elements(params.elements, model.vocab) if params.elements else None
    if params.n_elements and not can_fix_n_elements(model):
        raise InputError(f"--n-elements: checkpoint {checkpoint.name} has neither an element-count condition nor masked types")
    if params.n_elements and allowed is not None and params.n_elements > len(set(allowed)):
        warn(f"--n-elements {params.n_elements} but only {len(set(allowed))} elements allowed; capped")
    if params.atoms > len(model.n_atoms_prior):
        warn(f"{params.atoms} atoms is beyond the training range (<= {len(model.n_atoms_prior)})")
    constraint = motif_constraint(params, model) if params.motif is not None else None
    # Required elements are guaranteed only when the allowed set is exactly them and each crystal takes them all
    # (the element budget), or the motif places the one required element; otherwise each crystal is checked.
    unforced = sorted(set(params.required) - ({params.motif.element} if params.motif is not None else set()))
    guaranteed = (set(params.elements) == set(params.required) and params.n_elements == len(set(params.required)))
    check_required = bool(unforced) and not guaranteed
    if check_required:
        warn(f"required elements {', '.join(unforced)} are not forced by the sampler: crystals without them are "
             f"recorded as not meeting the spec")
    from tessera.tools.steering import build_guidance, guidance_record

    guidance = build_guidance(params.guidance, params.guidance_options or default_guidance_options(), model.vocab)

    ckpt_name = repo_relative(checkpoint)
    elements_text = ",".join(params.elements) or None
    sampler_settings = dict(config.__dict__)
    run_params = {"n": params.n, "atoms": params.atoms or None, "elements": elements_text,
                  "motif": params.motif.model_dump(mode="json") if params.motif is not None else None,
                  "guidance": [t.model_dump(mode="json") for t in params.guidance] or None,
                  "guidance_options": (params.guidance_options or default_guidance_options()).model_dump(mode="json")
                  if params.guidance else None,
                  "spec_hash": params.spec_hash,
                  "n_elements": params.n_elements or None, "seed": params.seed, "checkpoint": ckpt_name,
                  "batch_size": batch_size, "sampler": sampler_settings, "out": str(params.out)}
    checkpoint_hash = file_sha256(checkpoint)
    run = (open_run("sample", run_params, checkpoint_hash=checkpoint_hash, seed=params.seed)
           if open_run is not None else None)
    sample_run = run.run_id if run is not None else None
    with run if run is not None else nullcontext():
        t0 = time.perf_counter()
        if constraint is None:
            batches = sample_many(model=model, config=config, n=params.n, seed=params.seed, batch_size=batch_size,
                                  n_atoms=params.atoms or None, allowed_types=allowed,
                                  n_elements=params.n_elements or None, guidance=guidance)
        else:
            batches = _sample_motif_batches(model, config, constraint, params, batch_size, guidance)
        seconds = time.perf_counter() - t0
        params.out.mkdir(parents=True, exist_ok=True)
        structures = [s for batch in batches for s in to_structures(batch, model.vocab)]
        term_records = ([r for batch in batches for r in guidance_record(params.guidance, batch, model.vocab)]
                        if params.guidance else [])
        lineage = {"checkpoint": ckpt_name, "checkpoint_hash": checkpoint_hash, "sample_run": sample_run,
                   "spec_hash": params.spec_hash}
        candidates = []
        for i, s in enumerate(structures):
            provenance = {"seed": params.seed, "index": i, **lineage}
            if params.motif is not None or params.guidance or check_required:
                record = motif_exact_record(s, params.motif, constraint) if params.motif is not None else {}
                if params.guidance:
                    record["guidance"] = term_records[i]
                    record["guidance_met"] = all(t["met"] for t in term_records[i])
                if check_required:
                    present = {el.symbol for el in s.composition.elements}
                    record["required"] = list(params.required)
                    record["required_met"] = set(params.required) <= present
                provenance["constraints"] = record
                provenance["constraints_satisfied"] = (record.get("motif_exact", True) and record.get("guidance_met", True)
                                                       and record.get("required_met", True))
            candidates.append(Candidate.from_structure(s, id=f"gen-s{params.seed}-{i:05d}", source=f"sample:{ckpt_name}",
                                                       provenance=provenance))
        cif_paths = [params.out / f"{c.id}.cif" for c in candidates]
        with open(params.out / "candidates.jsonl", "w") as fh:
            for i, (c, s, path) in enumerate(zip(candidates, structures, cif_paths)):
                path.write_text(c.cif or "")
                fh.write(json.dumps({
                    "id": c.id, "formula": c.formula, "n_atoms": c.n_atoms, "cif": c.cif, "seed": params.seed,
                    "index": i, **lineage, "volume_per_atom": s.volume / len(s),
                    "elements_allowed": elements_text, "n_elements_asked": params.n_elements or None,
                    "sampler": sampler_settings,
                    **({"constraints": c.provenance["constraints"]} if "constraints" in c.provenance else {}),
                }) + "\n")
        result = SampleResult(params=params, candidates=candidates, cif_paths=cif_paths, seconds=seconds,
                              checkpoint=ckpt_name, batch_size=batch_size, sampler=sampler_settings,
                              warnings=warnings)
        if run is not None:
            summary = {k: v for k, v in result.payload().items() if k not in ("run_id", "formulas")}
            run.log_tool_call(tool="sample", arguments={k: v for k, v in summary.items() if k != "out"},
                              result_summary={"n": len(candidates),
                                              "formulas": sorted({c.formula or "" for c in candidates})[:50]},
                              seconds=seconds)
            run.add_candidates(candidates)
            run.finish(summary)
            result.run_id = run.run_id
    return result


def motif_constraint(params: SampleParams, model: Any) -> Any:
    """The inpainting constraint of ``params.motif`` for this model; InputError for a bad option.

    Free atoms take the allowed elements other than the motif element (an extra atom of the motif element in
    the net's plane would break the net), or the model's choice when no elements are given.
    """
    from tessera.generators.inpainting import MotifConstraint

    motif = params.motif
    assert motif is not None
    free = [e for e in params.elements if e != motif.element] or None
    try:
        constraint = MotifConstraint.build(lattice=motif.lattice, element=motif.element,
                                           bond_length=motif.bond_length, c_range=motif.c_range,
                                           free_elements=free, release_below=motif.release_below)
    except (ValueError, OSError) as exc:
        raise InputError(f"motif: {exc}") from None
    parse_elements([motif.element, *(free or [])], model.vocab)  # one line for an element the model lacks
    k = constraint.num_motif_atoms
    if params.atoms and params.atoms <= k:
        raise InputError(f"motif: the {motif.lattice} net puts {k} atoms in the cell; --atoms {params.atoms} leaves "
                         f"no room for the rest of the crystal")
    return constraint


def _sample_motif_batches(model: Any, config: Any, constraint: Any, params: SampleParams, batch_size: int,
                          guidance: Any = None) -> list:
    """Motif-constrained crystals in batches; batch k uses seed ``seed * 100003 + k`` (same seed, same crystals)."""
    from tessera.generators.inpainting import sample_with_motif
    from tessera.generators.sampler import Sampler

    sampler = Sampler(model=model, config=config)
    batches = []
    for k, start in enumerate(range(0, params.n, batch_size)):
        n = min(batch_size, params.n - start)
        try:
            batches.append(sample_with_motif(sampler=sampler, constraint=constraint, n=n,
                                             seed=params.seed * 100003 + k, n_atoms=params.atoms or None,
                                             max_atoms=len(model.n_atoms_prior),
                                             n_elements=params.n_elements or None, guidance=guidance))
        except ValueError as exc:  # an atom budget or element count the motif cannot meet
            raise InputError(f"motif: {exc}") from None
    return batches


def motif_exact_record(structure: Any, motif: MotifSpec, constraint: Any) -> dict[str, Any]:
    """The constraint record of a sampled crystal: its motif and whether the detector finds it exactly."""
    from tessera.tools.isolation import attempt
    from tessera.tools.motif import detect_motif

    match = attempt(detect_motif, structure, motif.lattice, motif.element, bond_length=constraint.bond_length)
    found = bool(match.ok and match.value is not None and match.value.found)
    reason = match.error if not match.ok else (match.value.reason if match.value is not None else None)
    return {"motif": {**motif.model_dump(mode="json"), "bond_length": constraint.bond_length},
            "motif_exact": found, "motif_exact_reason": reason or None}
