"""A DesignSpec's constraints judged on structures that did not come from our sampler.

``tessera evaluate --spec FILE`` gives structures from anywhere (another generator, a database, a hand-made
cell) the same constraint record a constrained sampling run writes: the motif found or not by the detector
(``motif_exact``, judged on the input as given), each guidance term's value on the input and whether it
meets its target, and the required elements present. The evaluation then relaxes, detects the motif again
(``motif_retained``) and counts S.U.N.-C exactly as for sampled candidates (tools.evaluate.check_constraints).
"""

from __future__ import annotations

from typing import Any, Sequence

from tessera.tools.isolation import attempt
from tessera.tools.spec import DesignSpec


def measure_guidance(terms: Sequence[Any], structures: Sequence[Any]) -> list[list[dict[str, Any]]]:
    """Per structure, per guidance term: {kind, elements, target, value, met} (tools.steering.guidance_record on
    a batch of the structures; the vocabulary is the elements present plus the terms' own)."""
    import numpy as np
    from pymatgen.core import Element

    from tessera.generators.crystal import collate
    from tessera.tools.steering import guidance_record

    if not terms or not structures:
        return [[] for _ in structures]
    numbers = {z for s in structures for z in s.atomic_numbers}
    numbers |= {Element(e).Z for t in terms for e in t.elements}
    vocab = sorted(numbers)
    lookup = {z: i for i, z in enumerate(vocab)}
    batch = collate([s.lattice.matrix for s in structures], [s.frac_coords for s in structures],
                    [np.array([lookup[z] for z in s.atomic_numbers]) for s in structures])
    return guidance_record(list(terms), batch, vocab)


def spec_record(structure: Any, spec: DesignSpec, guidance: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The constraint record of one structure under ``spec`` (empty dict: the spec constrains nothing)."""
    from tessera.tools.motif import detect_motif

    record: dict[str, Any] = {}
    if spec.motif is not None:
        m = spec.motif
        match = attempt(detect_motif, structure, m.lattice, m.element, bond_length=m.bond_length)
        found = bool(match.ok and match.value is not None and match.value.found)
        reason = match.error if not match.ok else (match.value.reason if match.value is not None else None)
        record.update({"motif": m.model_dump(mode="json"), "motif_exact": found, "motif_exact_reason": reason or None})
    if spec.guidance:
        record["guidance"] = guidance or []
        record["guidance_met"] = bool(guidance) and all(t["met"] for t in guidance)
    if spec.chemistry.required:
        present = {el.symbol for el in structure.composition.elements}
        record["required"] = list(spec.chemistry.required)
        record["required_met"] = set(spec.chemistry.required) <= present
    return record


def attach_spec(candidates: Sequence[Any], spec: DesignSpec) -> int:
    """Give each readable candidate the spec's constraint record and hash (its own sampled record, if it has
    one, is replaced: the spec given now is what it is judged against). Returns how many got a record."""
    live = [(c, attempt(c.structure)) for c in candidates if c.error is None]
    live = [(c, r.value) for c, r in live if r.ok and r.value is not None]
    measured = measure_guidance(spec.guidance, [s for _, s in live]) if spec.guidance else [None] * len(live)
    digest = spec.spec_hash()
    n = 0
    for (cand, structure), terms in zip(live, measured):
        record = spec_record(structure, spec, terms)
        cand.provenance["spec_hash"] = digest
        if record:
            cand.provenance["constraints"] = record
            cand.provenance["constraints_satisfied"] = (record.get("motif_exact", True)
                                                        and record.get("guidance_met", True)
                                                        and record.get("required_met", True))
            n += 1
    return n
