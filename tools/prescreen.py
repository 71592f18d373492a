"""The staged prescreen: cheap checks that drop hopeless candidates before a relaxation is paid for.

Stages run in order; each answers pass/fail with a reason (:class:`tools.candidate.StageOutcome`):

1. ``charge`` (:class:`ChargeNeutralityStage`): Tessera's chemistry-aware charge check
   (:func:`tools.measures.charge_check`, rule ``common``, the default): charge balance on common oxidation
   states (ICSD 2024 share >= 0.5%) with mixed valence and the Pauling electronegativity test; peroxide,
   superoxide, persulfide and polyhalide states only for atoms the structure shows in like-anion bonds
   (O-O 1.20-1.60 A, ...), so over-oxidised LiCoO4 and LiCoO3 stop here; compositions without N, O, a
   halogen or a chalcogen keep CDVAE's rule. Rule ``smact`` is CDVAE's compositional validity
   (``smact_validity``, :func:`tools.measures.smact_check`) as the gate, as before issue 20: elemental
   compositions and all-metal alloys pass outright; otherwise some assignment of one oxidation state per
   element (SMACT's 2014 list) must balance the gcd-reduced composition and pass the electronegativity test.
2. ``geometry`` (:class:`GeometryStage`): every periodic interatomic distance d_ij >= ``radius_scale`` *
   (r_i + r_j) with r the covalent radii (Cordero et al. 2008, as in ``ase.data.covalent_radii``), plus
   the hard d_ij >= 0.5 A rule, and SCIGEN's space-occupation ratio sum_i (4/3) pi r_i^3 / V_cell below
   ``max_occupation`` (1.7 in SCIGEN, same covalent radii).
3. ``ehull`` (:class:`EhullStage`): a CHGNet single-point energy of the unrelaxed structure turned into
   an energy above the hull by an injected ``ehull_fn(structure, energy_per_atom) -> eV/atom``; fails
   above ``ceiling``. Batched.

4. ``stability_model`` (:class:`StabilityModelStage`, optional, off by default): the learned stability model
   (:mod:`tools.stability_model`) predicts the relaxed E_hull and P(stable) from CHGNet's crystal feature and
   the single-point estimate; gates on P(stable) or a predicted-E_hull ceiling. Batched.

More stages join by implementing :class:`PrescreenStage`. :class:`Prescreen`
runs them with ``gate=True`` (a candidate stops at its first failure, later stages never see it) or
``gate=False`` (every stage runs on every candidate, for reports). Every stage depends on distances
and composition only, so a rotated, translated or permuted copy gets the same outcome.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pymatgen.core import Structure

from tessera.tools.candidate import StageOutcome
from tessera.tools.config import load_config
from tessera.tools.errors import InputError
from tessera.tools.geometry import min_distance_ratio, space_occupation_ratio  # noqa: F401 - stage rules, re-exported
from tessera.tools.io import MIN_DISTANCE_A, MIN_VOLUME_A3, sanity_problem
from tessera.tools.isolation import attempt
from tessera.tools.measures import COMMON_STATE_MIN_SHARE, charge_check, smact_check  # the rules are measures

EhullFn = Callable[[Structure, float], float]
"""(structure, CHGNet energy per atom in eV/atom, uncorrected) -> energy above the hull, eV/atom."""
EnergyFn = Callable[[Sequence[Structure]], list[float]]
"""structures -> energies per atom (eV/atom), NaN where the model could not evaluate one."""


# ---------------------------------------------------------------------------------------------- protocol


@runtime_checkable
class PrescreenStage(Protocol):
    """One prescreen stage. ``check_many`` exists so a model-backed stage can batch."""

    name: str

    def check(self, structure: Structure) -> StageOutcome: ...

    def check_many(self, structures: Sequence[Structure]) -> list[StageOutcome]: ...


class _PerStructure:
    """Mixin: ``check_many`` as a loop over ``check`` (for stages that gain nothing from batching)."""

    def check(self, structure: Structure) -> StageOutcome:  # pragma: no cover - overridden
        raise NotImplementedError

    def check_many(self, structures: Sequence[Structure]) -> list[StageOutcome]:
        return [self.check(s) for s in structures]


# ---------------------------------------------------------------------------------------------- stage 1


ChargeRule = Literal["common", "smact"]


class ChargeNeutralityStage(_PerStructure):
    """Stage 1: the charge check.

    ``rule="common"`` (default): :func:`tools.measures.charge_check` on the structure (common oxidation states,
    polyanion states only with like-anion bonds in the structure; ``min_share``, ``use_pauling_test`` and
    ``include_alloys`` apply). ``rule="smact"``: CDVAE's SMACT rule on the composition
    (:func:`tools.measures.smact_check`; ``oxidation_states_set``, ``use_pauling_test``, ``include_alloys``
    and ``max_combinations`` apply), which admits O-1 and so passes LiCoO4.
    """

    name = "charge"

    def __init__(
        self,
        *,
        oxidation_states_set: str = "smact14",
        use_pauling_test: bool = True,
        include_alloys: bool = True,
        max_combinations: int = 1_000_000,
        rule: ChargeRule = "common",
        min_share: float = COMMON_STATE_MIN_SHARE,
    ) -> None:
        if rule not in ("common", "smact"):
            raise InputError(f"unknown charge rule '{rule}' (common, smact)")
        self.oxidation_states_set = oxidation_states_set
        self.use_pauling_test = use_pauling_test
        self.include_alloys = include_alloys
        self.max_combinations = max_combinations
        self.rule: ChargeRule = rule
        self.min_share = min_share

    def check(self, structure: Structure) -> StageOutcome:
        try:
            if self.rule == "common":
                ok, reason = charge_check(structure, min_share=self.min_share, use_pauling_test=self.use_pauling_test,
                                          include_alloys=self.include_alloys)
            else:
                ok, reason = smact_check(
                    structure.composition,
                    oxidation_states_set=self.oxidation_states_set,
                    use_pauling_test=self.use_pauling_test,
                    include_alloys=self.include_alloys,
                    max_combinations=self.max_combinations,
                )
        except InputError as exc:
            return StageOutcome(passed=False, reason=str(exc))
        return StageOutcome(passed=ok, reason=reason)


# ---------------------------------------------------------------------------------------------- stage 2


class GeometryStage(_PerStructure):
    """Stage 2: interatomic distances against scaled covalent radii, the 0.5 A rule, SCIGEN occupation ratio.

    ``value`` is the smallest d_ij / (r_i + r_j) (capped at 1.0 when no pair is that close).
    """

    name = "geometry"

    def __init__(
        self,
        *,
        radius_scale: float = 0.5,
        min_distance: float = MIN_DISTANCE_A,
        max_occupation: float = 1.7,
        min_volume: float = MIN_VOLUME_A3,
    ) -> None:
        self.radius_scale = radius_scale
        self.min_distance = min_distance
        self.max_occupation = max_occupation
        self.min_volume = min_volume

    def check(self, structure: Structure) -> StageOutcome:
        volume = abs(float(structure.volume))
        if not math.isfinite(volume) or volume < self.min_volume:
            return StageOutcome(passed=False, reason=f"cell volume {volume:.3g} A^3 < {self.min_volume} A^3")
        # Generated candidates reach this stage without passing a reader: the same sanity bounds first, so a
        # runaway cell (c = 1e9 A) fails here instead of asking the neighbour search for 150 GB.
        insane = sanity_problem(structure, min_distance=self.min_distance)
        if insane is not None:
            return StageOutcome(passed=False, reason=insane)
        occupation = space_occupation_ratio(structure)
        ratio, dist, i, j = min_distance_ratio(structure)
        shown = min(ratio, 1.0)
        if ratio < self.radius_scale or dist < self.min_distance:
            rule = (f"< {self.min_distance} A" if dist < self.min_distance
                    else f"< {self.radius_scale} x (r_i + r_j)")
            return StageOutcome(
                passed=False,
                value=shown,
                reason=(f"atoms too close: {structure[i].specie}-{structure[j].specie} {dist:.3f} A "
                        f"= {ratio:.2f} x (r_i + r_j) {rule}"),
            )
        if occupation >= self.max_occupation:
            return StageOutcome(
                passed=False,
                value=shown,
                reason=f"space occupation ratio {occupation:.2f} >= {self.max_occupation} (too dense)",
            )
        return StageOutcome(
            passed=True, value=shown, reason=f"min d/(r_i+r_j) {shown:.2f}; occupation {occupation:.2f}"
        )


# ---------------------------------------------------------------------------------------------- stage 3


def _default_energy_fn(structures: Sequence[Structure]) -> list[float]:
    from tessera.tools.relax import static_energies

    return static_energies(structures)


class EhullStage:
    """Stage 3: CHGNet single-point energy of the unrelaxed structure -> E_hull (eV/atom) <= ``ceiling``.

    ``ehull_fn`` maps (structure, uncorrected CHGNet energy per atom) to eV/atom above the reference hull;
    it is injected so this module does not depend on the hull tool. ``energy_fn`` defaults to
    :func:`tools.relax.static_energies` (batched CHGNet). ``value`` is the E_hull estimate.
    """

    name = "ehull"

    def __init__(
        self,
        *,
        ehull_fn: EhullFn,
        ceiling: float = 1.0,
        energy_fn: EnergyFn | None = None,
    ) -> None:
        self.ehull_fn = ehull_fn
        self.ceiling = ceiling
        self.energy_fn: EnergyFn = energy_fn or _default_energy_fn

    def _judge(self, structure: Structure, energy: float) -> StageOutcome:
        if not math.isfinite(energy):
            return StageOutcome(passed=False, reason="CHGNet could not evaluate the unrelaxed structure")
        try:
            e_hull = float(self.ehull_fn(structure, energy))
        except Exception as exc:  # noqa: BLE001 - the hull tool's failure is this candidate's reason, not the batch's
            return StageOutcome(passed=False, reason=f"E_hull estimate failed: {type(exc).__name__}: {exc}")
        if not math.isfinite(e_hull):
            return StageOutcome(passed=False, reason="E_hull estimate is not finite")
        if e_hull > self.ceiling:
            return StageOutcome(
                passed=False, value=e_hull,
                reason=f"unrelaxed E_hull {e_hull:.3f} eV/atom > ceiling {self.ceiling} eV/atom",
            )
        return StageOutcome(passed=True, value=e_hull, reason=f"unrelaxed E_hull {e_hull:.3f} eV/atom")

    def check(self, structure: Structure) -> StageOutcome:
        return self.check_many([structure])[0]

    def check_many(self, structures: Sequence[Structure]) -> list[StageOutcome]:
        if not structures:
            return []
        energies = self.energy_fn(list(structures))
        return [self._judge(s, float(e)) for s, e in zip(structures, energies)]


# ---------------------------------------------------------------------------------------------- stage 4 (optional)


StabilityPredictFn = Callable[[Sequence[Structure]], tuple[Sequence[float], Sequence[float], Sequence["str | None"]]]
"""structures -> (predicted relaxed E_hull in eV/atom, P(stable), error or None), one entry per structure."""


class StabilityModelStage:
    """Optional stage: the learned stability model (:mod:`tools.stability_model`) on the unrelaxed structure.

    Predicts the CHGNet-relaxed E_hull and P(E_hull <= 0.1 eV/atom) from CHGNet's crystal feature, the single-point
    energy and the single-point E_hull estimate (``ehull_fn``, as for :class:`EhullStage`). Fails when P(stable) <
    ``min_probability`` or, when ``ceiling`` is set, when the predicted E_hull > ``ceiling`` (eV/atom); either can
    be None (off). ``value`` is the predicted relaxed E_hull (eV/atom), so ranking by it puts the likeliest hits
    first. The model is the newest promoted version in ``root`` (default ``data/stability/``) unless ``version``
    names another; torch and CHGNet load on first use. ``predict_fn`` replaces the model (tests, other backends).
    """

    name = "stability_model"

    def __init__(
        self,
        *,
        ehull_fn: EhullFn | None = None,
        min_probability: float | None = 0.5,
        ceiling: float | None = None,
        version: str = "promoted",
        root: str | Path | None = None,
        predict_fn: StabilityPredictFn | None = None,
    ) -> None:
        self.ehull_fn = ehull_fn
        self.min_probability = min_probability
        self.ceiling = ceiling
        self.version = version
        self.root = root
        self._predict_fn = predict_fn
        self.model_name: str = "custom" if predict_fn is not None else version

    def _predictor(self) -> StabilityPredictFn:
        if self._predict_fn is None:
            from tessera.tools.stability_model import load_promoted

            model = load_promoted(self.root, self.version)
            self.model_name = model.name
            ehull_fn = self.ehull_fn

            def predict(structures: Sequence[Structure]):
                return model.predict_structures(structures, ehull_fn=ehull_fn)

            self._predict_fn = predict
        return self._predict_fn

    def _judge(self, e_hull: float, p_stable: float, error: str | None) -> StageOutcome:
        if error is not None or not (math.isfinite(e_hull) and math.isfinite(p_stable)):
            return StageOutcome(passed=False, reason=f"stability model: {error or 'no finite prediction'}")
        note = f"P(stable) {p_stable:.2f}, predicted E_hull {e_hull:.3f} eV/atom (model {self.model_name})"
        if self.min_probability is not None and p_stable < self.min_probability:
            return StageOutcome(passed=False, value=e_hull, reason=f"{note} < P {self.min_probability}")
        if self.ceiling is not None and e_hull > self.ceiling:
            return StageOutcome(passed=False, value=e_hull, reason=f"{note} > ceiling {self.ceiling} eV/atom")
        return StageOutcome(passed=True, value=e_hull, reason=note)

    def check(self, structure: Structure) -> StageOutcome:
        return self.check_many([structure])[0]

    def check_many(self, structures: Sequence[Structure]) -> list[StageOutcome]:
        if not structures:
            return []
        e_hull, p_stable, errors = self._predictor()(list(structures))
        return [self._judge(float(e), float(p), err) for e, p, err in zip(e_hull, p_stable, errors)]


# ---------------------------------------------------------------------------------------------- pipeline


class PrescreenResult(BaseModel):
    """What the prescreen found for one structure. ``outcomes`` is keyed by stage name, in run order."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    outcomes: dict[str, StageOutcome] = Field(default_factory=dict)
    failed_stage: str | None = Field(None, description="first stage that failed (None when all passed)")


def _check_alone(stage: PrescreenStage, structure: Structure) -> StageOutcome:
    """One structure through one stage; whatever the stage raises is this structure's failed outcome."""
    one = attempt(stage.check, structure)
    if one.ok and one.value is not None:
        return one.value
    return StageOutcome(passed=False, reason=f"{stage.name} check raised {one.error}")


class Prescreen:
    """Runs stages in order over a batch.

    With ``gate=True`` a structure leaves at its first failed stage, so expensive stages (CHGNet) see
    only survivors; with ``gate=False`` every stage runs on every structure. A stage that raises for one
    structure fails that structure at that stage (the reason names the exception), never the batch.
    """

    def __init__(self, *, stages: Sequence[PrescreenStage], gate: bool = True) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise InputError(f"prescreen stage names must be unique, got {names}")
        self.stages = list(stages)
        self.gate = gate

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def run(self, structures: Sequence[Structure]) -> list[PrescreenResult]:
        """One :class:`PrescreenResult` per input structure, in input order."""
        outcomes: list[dict[str, StageOutcome]] = [{} for _ in structures]
        alive = list(range(len(structures)))
        for stage in self.stages:
            todo = alive if self.gate else list(range(len(structures)))
            if not todo:
                break
            batch = attempt(stage.check_many, [structures[k] for k in todo])
            if batch.ok and len(batch.value or []) != len(todo):
                raise InputError(f"stage {stage.name} returned {len(batch.value or [])} outcomes for {len(todo)} "
                                 "structures")
            # A structure that breaks a batched check (a model, a parser) must fail alone: check each by itself.
            results = batch.value if batch.ok and batch.value is not None else [
                _check_alone(stage, structures[k]) for k in todo]
            for k, res in zip(todo, results):
                outcomes[k][stage.name] = res
            alive = [k for k in alive if outcomes[k][stage.name].passed]
        out: list[PrescreenResult] = []
        for oc in outcomes:
            failed = next((name for name, o in oc.items() if not o.passed), None)
            out.append(PrescreenResult(passed=failed is None and len(oc) == len(self.stages),
                                       outcomes=oc, failed_stage=failed))
        return out

    def check(self, structure: Structure) -> PrescreenResult:
        return self.run([structure])[0]


# ---------------------------------------------------------------------------------------------- config


class ChargeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    rule: ChargeRule = Field(
        "common", description="common: tools.measures.charge_check (structure-aware, common states); smact: CDVAE's rule"
    )
    min_share: float = Field(COMMON_STATE_MIN_SHARE, gt=0, lt=1,
                             description="rule common: an oxidation state is common at this share of its ICSD reports")
    oxidation_states_set: str = Field("smact14", description="rule smact: SMACT's list (smact14 as CDVAE)")
    use_pauling_test: bool = True
    include_alloys: bool = True
    max_combinations: int = Field(1_000_000, description="rule smact: oxidation-state combinations tried at most")


class GeometryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    radius_scale: float = Field(0.5, description="d_ij >= radius_scale * (r_i + r_j), covalent radii")
    min_distance: float = Field(MIN_DISTANCE_A, description="A, hard floor on any periodic distance")
    max_occupation: float = Field(1.7, description="SCIGEN space-occupation ratio ceiling")
    min_volume: float = Field(MIN_VOLUME_A3, description="A^3")


class EhullParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    ceiling: float = Field(1.0, description="eV/atom, unrelaxed CHGNet E_hull above which a candidate stops")


class StabilityModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="off until benchmarks/bench_stability_model.py shows it beats the ceiling")
    version: str = Field("promoted", description="promoted (newest promoted version), latest, or a name like v001")
    min_probability: float | None = Field(0.5, ge=0, le=1, description="gate: P(stable at 0.1 eV/atom) below this stops")
    ceiling: float | None = Field(None, description="eV/atom: predicted relaxed E_hull above which a candidate stops")
    root: str | None = Field(None, description="folder of model versions (default: data/stability)")


class PrescreenParams(BaseModel):
    """The prescreen's settings (``configs/prescreen.yaml``); echoed into results for the audit log."""

    model_config = ConfigDict(extra="forbid")
    gate: bool = True
    charge: ChargeParams = Field(default_factory=ChargeParams)
    geometry: GeometryParams = Field(default_factory=GeometryParams)
    ehull: EhullParams = Field(default_factory=EhullParams)
    stability_model: StabilityModelParams = Field(default_factory=StabilityModelParams)


def load_prescreen_params(path: str | Path | None = None) -> PrescreenParams:
    """Settings from YAML (default ``configs/prescreen.yaml``; built-in defaults if that file is absent)."""
    return load_config(PrescreenParams, "prescreen", path)


def build_prescreen(
    params: PrescreenParams | None = None,
    *,
    ehull_fn: EhullFn | None = None,
    energy_fn: EnergyFn | None = None,
    extra_stages: Sequence[PrescreenStage] = (),
) -> Prescreen:
    """The standard pipeline: charge -> geometry -> [extra_stages] -> ehull -> [stability_model].

    The ehull stage is included only when ``ehull_fn`` is given and ``params.ehull.enabled``; the learned
    stability model only when ``ehull_fn`` is given and ``params.stability_model.enabled`` (off by default).
    Extra stages run after the cheap checks and before CHGNet.
    """
    params = params or PrescreenParams()
    stages: list[PrescreenStage] = []
    if params.charge.enabled:
        c = params.charge
        stages.append(ChargeNeutralityStage(
            oxidation_states_set=c.oxidation_states_set, use_pauling_test=c.use_pauling_test,
            include_alloys=c.include_alloys, max_combinations=c.max_combinations, rule=c.rule,
            min_share=c.min_share,
        ))
    if params.geometry.enabled:
        g = params.geometry
        stages.append(GeometryStage(radius_scale=g.radius_scale, min_distance=g.min_distance,
                                    max_occupation=g.max_occupation, min_volume=g.min_volume))
    stages.extend(extra_stages)
    if params.ehull.enabled and ehull_fn is not None:
        stages.append(EhullStage(ehull_fn=ehull_fn, ceiling=params.ehull.ceiling, energy_fn=energy_fn))
    if params.stability_model.enabled and ehull_fn is not None:
        m = params.stability_model
        stages.append(StabilityModelStage(ehull_fn=ehull_fn, min_probability=m.min_probability, ceiling=m.ceiling,
                                          version=m.version, root=m.root))
    return Prescreen(stages=stages, gate=params.gate)
