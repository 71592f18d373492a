"""Required elements (DesignSpec chemistry.required) are checked and recorded per sampled crystal."""

from __future__ import annotations

from pathlib import Path

from tessera.tools.sample import SampleParams, sample_crystals
from tessera.tools.spec import parse_spec


def test_required_elements_are_recorded_and_decide_the_spec_verdict(tmp_path: Path) -> None:
    spec = parse_spec({"chemistry": {"elements": ["Mn", "Fe", "O"], "required": ["O"], "n_elements": 2, "atoms": 6},
                       "budgets": {"samples": 6}, "seed": 4})
    warnings: list[str] = []
    result = sample_crystals(SampleParams.from_spec(spec, out=tmp_path / "s", steps=10, threads=1),
                             on_warning=warnings.append)
    assert any("not forced" in w and "O" in w for w in warnings)
    for c in result.candidates:
        record = c.provenance["constraints"]
        has_o = "O" in {el.symbol for el in c.structure().composition.elements}
        assert record["required"] == ["O"] and record["required_met"] is has_o
        assert c.provenance["constraints_satisfied"] is has_o


def test_a_closed_system_needs_no_check(tmp_path: Path) -> None:
    spec = parse_spec({"chemistry": {"elements": ["Li", "O"], "required": ["Li", "O"], "n_elements": 2, "atoms": 4},
                       "budgets": {"samples": 2}, "seed": 0})
    result = sample_crystals(SampleParams.from_spec(spec, out=tmp_path / "s", steps=10, threads=1))
    assert all("constraints" not in c.provenance for c in result.candidates)
    assert all({el.symbol for el in c.structure().composition.elements} == {"Li", "O"} for c in result.candidates)
