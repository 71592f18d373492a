"""From a DesignSpec's guidance terms to the sampler's universal guidance, and back to per-crystal values.

:func:`build_guidance` maps element symbols to the model's vocabulary and each :class:`GuidanceTerm` to a
differentiable term of ``tessera.generators.guidance`` (targets as sets with a tolerance), combined by the
p-norm with the terms' strengths as weights. :func:`guidance_record` evaluates the same terms on the
finished crystals (one-hot types), so every candidate records each term's value and whether it met its
target: the "meets the spec" half of S.U.N.-C.
"""

from __future__ import annotations

from typing import Any, Sequence

from tessera.tools.errors import InputError
from tessera.tools.spec import GuidanceOptions, GuidanceTerm


def _indices(symbols: Sequence[str], vocab: Sequence[int], kind: str) -> tuple[int, ...]:
    from pymatgen.core import Element

    out = []
    for s in symbols:
        z = Element(s).Z
        if z not in vocab:
            raise InputError(f"guidance.{kind}: {s} does not occur in the training data, the model cannot place it")
        out.append(list(vocab).index(z))
    return tuple(out)


def _target(term: GuidanceTerm) -> Any:
    from tessera.generators.guidance import Target

    if isinstance(term.target, list):
        return Target.interval(term.target[0], term.target[1], tolerance=term.tolerance)
    return Target.point(float(term.target), tolerance=term.tolerance)


def build_term(term: GuidanceTerm, vocab: Sequence[int]) -> Any:
    """The generators.guidance term of one spec term."""
    from tessera.generators.guidance import Coordination, CoordinationHistogram, MinDistance, VolumePerAtom

    if term.kind == "volume_per_atom":
        return VolumePerAtom(_target(term))
    if term.kind == "min_distance":
        return MinDistance(float(term.target))  # type: ignore[arg-type]
    center, neighbour = (_indices([e], vocab, term.kind) for e in term.elements)
    assert term.cutoff is not None  # the spec's validator requires it for coordination terms
    if term.kind == "coordination":
        return Coordination(center=center, neighbour=neighbour, cutoff=term.cutoff, target=_target(term),
                            softness=term.softness)
    return CoordinationHistogram(center=center, neighbour=neighbour, cutoff=term.cutoff,
                                 target_probs=tuple(float(x) for x in term.target),  # type: ignore[union-attr]
                                 softness=term.softness)


COORDINATION_KINDS = ("coordination", "coordination_distribution")


def overlap_guard(terms: Sequence[GuidanceTerm], options: GuidanceOptions, vocab: Sequence[int]) -> Any:
    """The overlap guard added beside coordination terms (None when off, unneeded or replaced).

    Coordination terms pull neighbours inside their cutoff; unopposed they pull atoms onto each other: at
    n = 256 per case (benchmarks/results/guidance_n256_steps200.json) 23-53% of coordination-guided crystals
    came out with overlapping atoms. The guard is a RadiusOverlap term at ``options.overlap_guard`` x the sum of
    covalent radii (Cordero 2008, the prescreen's geometry radii), weighted like the strongest term. A spec
    with its own min_distance term has chosen its floor, so no guard is added.
    """
    from ase.data import covalent_radii

    from tessera.generators.guidance import RadiusOverlap

    if options.overlap_guard <= 0 or not any(t.kind in COORDINATION_KINDS for t in terms):
        return None
    if any(t.kind == "min_distance" for t in terms):
        return None
    return RadiusOverlap(radii=tuple(float(covalent_radii[int(z)]) for z in vocab), factor=options.overlap_guard)


def build_guidance(terms: Sequence[GuidanceTerm], options: GuidanceOptions, vocab: Sequence[int]) -> Any:
    """A ``UniversalGuidance`` for the sampler (None when there are no terms: sampling stays unguided)."""
    from tessera.generators.guidance import Objective, UniversalGuidance
    from tessera.generators.sampler import GuidanceSettings

    if not terms:
        return None
    built = [build_term(t, vocab) for t in terms]
    weights = [t.strength for t in terms]
    guard = overlap_guard(terms, options, vocab)
    if guard is not None:
        built.append(guard)
        weights.append(max(weights))
    objective = Objective(terms=tuple(built), weights=tuple(weights), p=options.p)
    try:
        settings = GuidanceSettings(scale=options.scale, schedule=options.schedule, every=options.every,
                                    grad_norm=options.grad_norm, backward_steps=options.backward_steps,
                                    backward_lr=options.backward_lr, recurrence=options.recurrence)
    except ValueError as exc:
        raise InputError(f"guidance options: {exc}") from None
    return UniversalGuidance(objective=objective, settings=settings)


def guidance_record(terms: Sequence[GuidanceTerm], batch: Any, vocab: Sequence[int]) -> list[list[dict[str, Any]]]:
    """Per crystal of a finished CrystalBatch, per term: {kind, elements, target, value, met}.

    A coordination distribution records its histogram and its divergence; it counts as met when the
    Jensen-Shannon divergence is at most the term's tolerance.
    """
    import torch

    from tessera.generators.guidance import CoordinationHistogram, Crystals, MinDistance

    crystals = Crystals.from_batch(batch, len(vocab))
    n = int(batch.n_atoms.shape[0])
    out: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    with torch.no_grad():
        for term in terms:
            built = build_term(term, vocab)
            base = {"kind": term.kind, "elements": term.elements, "target": term.target}
            if isinstance(built, CoordinationHistogram):
                hist, div = built.value(crystals), built.loss(crystals)
                for i in range(n):
                    out[i].append({**base, "value": [round(float(x), 4) for x in hist[i]],
                                   "divergence": float(div[i]), "met": bool(div[i] <= term.tolerance)})
                continue
            values = built.value(crystals)
            if isinstance(built, MinDistance):
                met = values >= float(term.target) - term.tolerance  # type: ignore[arg-type]
            else:
                met = built.target.met(values)
            for i in range(n):
                v = float(values[i])
                out[i].append({**base, "value": v if v != float("inf") else None, "met": bool(met[i])})
    return out
