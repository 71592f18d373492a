"""DesignSpec: one versioned, JSON-serialisable statement of what a chemist asked for.

A spec holds the chemistry (allowed and required elements, number of elements, atoms per cell), an optional
lattice motif (SCIGEN-style inpainting: a 2D net of one element stacked along c, or the 3D pyrochlore net),
guidance terms with targets and strengths, thresholds, budgets and a seed. ``tessera sample --spec FILE``
runs one; the planner agent will write them (``spec_json_schema()`` is the schema it targets). Every
candidate made under a spec carries its ``spec_hash`` so a hit traces back to the request.

Validation is strict and early: an unknown element or lattice, or an impossible spec (more motif atoms than
the atom budget, required elements outside the allowed ones), is one clear :class:`InputError` before any
sampling. This module lives in tools/ so that tools/ and agents/ can import it; it reads the motif
templates from ``tessera.generators.motifs`` (the ground floor), never the other way round.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tessera.tools.config import describe_validation_error
from tessera.tools.errors import InputError
from tessera.tools.measures import STABLE_E_HULL

SPEC_VERSION: int = 1


def _check_element(symbol: str, where: str) -> str:
    from pymatgen.core import Element

    try:
        Element(symbol)
    except ValueError:
        raise ValueError(f"{where}: {symbol!r} is not an element symbol") from None
    return symbol


class ChemistrySpec(BaseModel):
    """Which elements and how many atoms."""

    model_config = ConfigDict(extra="forbid")

    elements: list[str] = Field(default_factory=list, description="allowed elements (empty: the model's choice)")
    required: list[str] = Field(default_factory=list, description="elements every crystal must contain")
    n_elements: int = Field(0, ge=0, le=8, description="distinct elements per crystal (0: drawn from the data)")
    atoms: int = Field(0, ge=0, le=64, description="atoms per cell (0: drawn from the prior)")

    @model_validator(mode="after")
    def _known_and_consistent(self) -> "ChemistrySpec":
        for s in self.elements:
            _check_element(s, "chemistry.elements")
        for s in self.required:
            _check_element(s, "chemistry.required")
        if self.elements and not set(self.required) <= set(self.elements):
            extra = sorted(set(self.required) - set(self.elements))
            raise ValueError(f"chemistry.required {extra} are not among the allowed elements {self.elements}")
        return self


class MotifSpec(BaseModel):
    """A lattice motif the sampler inpaints at every reverse step (generators.inpainting)."""

    model_config = ConfigDict(extra="forbid")

    lattice: str = Field(description="template name (kagome, honeycomb, lieb, pyrochlore, ...) or a YAML/JSON file")
    element: str = Field(description="the element on the net, e.g. Mn")
    bond_length: float | None = Field(None, gt=0, description="A; default 2x the element's metallic radius")
    c_range: tuple[float, float] | None = Field(None, description="A, the free stacking period's range")
    release_below: float | None = Field(
        None, ge=0, lt=1, description="release the constraint below this fraction of T (adaptive demasking)"
    )

    @model_validator(mode="after")
    def _known(self) -> "MotifSpec":
        from tessera.generators.motifs import template_names

        _check_element(self.element, "motif.element")
        if self.lattice not in template_names() and not Path(self.lattice).suffix.lower() in (".yaml", ".yml", ".json"):
            raise ValueError(f"motif.lattice: unknown lattice {self.lattice!r}; known: {', '.join(template_names())} "
                             f"(or a custom template file .yaml/.json)")
        return self

    def template(self) -> Any:
        """The resolved :class:`tessera.generators.motifs.MotifTemplate`."""
        from tessera.generators.motifs import resolve_template

        try:
            return resolve_template(self.lattice)
        except (ValueError, OSError, KeyError, TypeError) as exc:
            raise InputError(f"motif.lattice {self.lattice}: {exc}") from None

    def num_sites(self) -> int:
        return int(self.template().num_sites)


class GuidanceTerm(BaseModel):
    """One differentiable objective on the predicted clean crystal (universal guidance).

    kinds and their fields:
    - ``volume_per_atom``: target A^3/atom (a number, or [lo, hi]).
    - ``coordination``: elements [center, neighbour], cutoff A, target mean coordination number.
    - ``coordination_distribution``: elements [center, neighbour], cutoff A, target [P(CN=0), P(CN=1), ...].
    - ``min_distance``: target A, the shortest interatomic distance aimed for (a penalty below it).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["volume_per_atom", "coordination", "coordination_distribution", "min_distance"]
    elements: list[str] = Field(default_factory=list, description="[center, neighbour] for coordination terms")
    target: float | list[float] = Field(description="the value, [lo, hi] interval, or distribution aimed for")
    cutoff: float | None = Field(None, gt=0, le=6, description="A, soft coordination cutoff (coordination terms)")
    softness: float = Field(0.1, gt=0, description="A, width of the soft cutoff")
    tolerance: float = Field(0.5, ge=0, description="|value - target| within this counts as met")
    strength: float = Field(1.0, gt=0, description="weight of this term in the combined objective")

    @model_validator(mode="after")
    def _complete(self) -> "GuidanceTerm":
        for s in self.elements:
            _check_element(s, f"guidance.{self.kind}.elements")
        coordination = self.kind in ("coordination", "coordination_distribution")
        if coordination and (len(self.elements) != 2 or self.cutoff is None):
            raise ValueError(f"guidance.{self.kind} needs elements [center, neighbour] and a cutoff in A")
        if self.kind == "coordination_distribution":
            if not isinstance(self.target, list) or len(self.target) < 2 or min(self.target) < 0 or sum(self.target) <= 0:
                raise ValueError("guidance.coordination_distribution target is [P(CN=0), P(CN=1), ...], >= 2 values")
        elif isinstance(self.target, list) and (self.kind != "volume_per_atom" or len(self.target) != 2
                                                or self.target[0] > self.target[1]):
            raise ValueError(f"guidance.{self.kind} target is a number" +
                             (" or [lo, hi]" if self.kind == "volume_per_atom" else ""))
        return self


class GuidanceOptions(BaseModel):
    """How the sampler applies the guidance terms (generators.sampler.GuidanceSettings); defaults in
    configs/guidance.yaml (backward guidance with self-recurrence: about 3.5x the unguided cost)."""

    model_config = ConfigDict(extra="forbid")

    scale: float = Field(0.0, ge=0, description="forward-guidance strength (gradient through the denoiser)")
    backward_steps: int = Field(3, ge=0, le=20, description="gradient steps on the clean estimate per step")
    backward_lr: float = Field(0.2, gt=0, description="length of each backward step (normalised gradient)")
    recurrence: int = Field(3, ge=1, le=10, description="self-recurrence K")
    every: int = Field(1, ge=1, description="guide every k-th reverse step")
    schedule: Literal["constant", "increasing", "decreasing"] = "constant"
    grad_norm: Literal["none", "clip", "normalize"] = "normalize"
    p: float = Field(2.0, ge=1, description="p-norm that combines several terms")
    overlap_guard: float = Field(
        0.7, ge=0, le=2,
        description="beside coordination terms, penalise pairs closer than this fraction of the sum of their "
                    "covalent radii (0: off; an explicit min_distance term replaces it)")


def default_guidance_options() -> GuidanceOptions:
    from tessera.tools.config import load_config

    return load_config(GuidanceOptions, "guidance")


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stable_e_hull: float = Field(STABLE_E_HULL, description="eV/atom above the hull that still counts as stable")


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int = Field(16, ge=1, description="crystals to sample")
    relaxations: int | None = Field(None, ge=0, description="at most this many relaxations (None: all that pass)")
    wall_minutes: float | None = Field(None, gt=0)


class DesignSpec(BaseModel):
    """What to make: chemistry, an optional motif, guidance terms, thresholds, budgets and a seed."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = SPEC_VERSION
    goal: str | None = Field(None, description="the chemist's words, kept for the audit trail")
    chemistry: ChemistrySpec = Field(default_factory=ChemistrySpec)
    motif: MotifSpec | None = None
    guidance: list[GuidanceTerm] = Field(default_factory=list)
    guidance_options: GuidanceOptions = Field(default_factory=default_guidance_options)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    budgets: Budgets = Field(default_factory=Budgets)
    seed: int = 0

    @model_validator(mode="after")
    def _possible(self) -> "DesignSpec":
        if self.motif is not None and self.chemistry.atoms:
            k = self.motif.num_sites()
            if k >= self.chemistry.atoms:
                raise ValueError(f"impossible: the {self.motif.lattice} net puts {k} {self.motif.element} atoms in a "
                                 f"cell of {self.chemistry.atoms} atoms, leaving no room for the rest of the crystal")
        if self.motif is not None and self.chemistry.elements and self.motif.element not in self.chemistry.elements:
            raise ValueError(f"motif.element {self.motif.element} is not among chemistry.elements "
                             f"{self.chemistry.elements}")
        return self

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON: the id every candidate made under this spec carries."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def parse_spec(data: Any, *, source: str = "spec") -> DesignSpec:
    """A DesignSpec from a decoded JSON object; one InputError line naming the first problem."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: a design spec is a JSON object, got {type(data).__name__}")
    try:
        return DesignSpec.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{source}: {describe_validation_error(exc)}") from None


def load_spec(path: Path) -> DesignSpec:
    """Read a DesignSpec file (JSON, or YAML for hand-written ones)."""
    if not path.exists():
        raise InputError(f"--spec {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--spec {path}: cannot read it ({exc})") from None
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "YAML" if is_yaml else "JSON"
        raise InputError(f"--spec {path}: not valid {kind} ({str(exc).splitlines()[0]})") from None
    return parse_spec(data, source=f"--spec {path}")


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of DesignSpec (what an LLM planner's structured output is validated against)."""
    return DesignSpec.model_json_schema()
