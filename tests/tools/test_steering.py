"""The overlap guard beside coordination terms (tools/steering.py): added where coordination terms pull atoms
together, weighted like the strongest term, and never where the spec has chosen its own floor or turned it off."""

from __future__ import annotations

from tessera.generators.guidance import Coordination, MinDistance, RadiusOverlap, VolumePerAtom
from tessera.tools.spec import GuidanceOptions, GuidanceTerm
from tessera.tools.steering import build_guidance

VOCAB = [3, 8, 27]  # Li O Co


def _cn(strength: float = 1.0) -> GuidanceTerm:
    return GuidanceTerm(kind="coordination", elements=["Co", "O"], cutoff=2.6, target=4, tolerance=0.5,
                        strength=strength)


def test_coordination_terms_get_the_guard_with_the_strongest_weight() -> None:
    g = build_guidance([_cn(2.0), GuidanceTerm(kind="volume_per_atom", target=10.0, strength=0.5)],
                       GuidanceOptions(overlap_guard=0.7), VOCAB)
    kinds = [type(t) for t in g.objective.terms]
    assert kinds == [Coordination, VolumePerAtom, RadiusOverlap]
    guard = g.objective.terms[-1]
    assert guard.factor == 0.7 and guard.radii == (1.28, 0.66, 1.26)  # Cordero covalent radii, A
    assert g.objective.weights == (2.0, 0.5, 2.0)


def test_no_guard_without_coordination_terms_or_when_the_spec_sets_its_floor_or_turns_it_off() -> None:
    volume = GuidanceTerm(kind="volume_per_atom", target=10.0)
    assert [type(t) for t in build_guidance([volume], GuidanceOptions(), VOCAB).objective.terms] == [VolumePerAtom]
    floor = GuidanceTerm(kind="min_distance", target=1.6)
    terms = build_guidance([_cn(), floor], GuidanceOptions(overlap_guard=0.7), VOCAB).objective.terms
    assert [type(t) for t in terms] == [Coordination, MinDistance]
    off = build_guidance([_cn()], GuidanceOptions(overlap_guard=0.0), VOCAB).objective.terms
    assert [type(t) for t in off] == [Coordination]
    assert build_guidance([], GuidanceOptions(), VOCAB) is None
