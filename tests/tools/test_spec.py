"""DesignSpec: strict, early validation (one line per problem), a stable hash, a schema for the planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessera.tools.errors import InputError
from tessera.tools.spec import DesignSpec, load_spec, parse_spec, spec_json_schema


def test_a_motif_spec_round_trips_with_a_stable_hash(tmp_path: Path) -> None:
    data = {"goal": "kagome Mn", "chemistry": {"elements": ["Mn", "Sn"], "atoms": 6},
            "motif": {"lattice": "kagome", "element": "Mn"}, "budgets": {"samples": 8}, "seed": 3}
    spec = parse_spec(data)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec.model_dump(mode="json")))
    again = load_spec(path)
    assert again == spec and again.spec_hash() == spec.spec_hash() and len(spec.spec_hash()) == 64
    assert parse_spec({**data, "seed": 4}).spec_hash() != spec.spec_hash()
    assert DesignSpec().motif is None and DesignSpec().guidance == []  # the empty spec asks for nothing


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"motif": {"lattice": "kagomi", "element": "Mn"}}, ["unknown lattice", "kagome"]),
        ({"motif": {"lattice": "kagome", "element": "Xx"}}, ["Xx", "not an element"]),
        ({"chemistry": {"elements": ["Li", "Qq"]}}, ["Qq"]),
        ({"chemistry": {"atoms": 3}, "motif": {"lattice": "kagome", "element": "Mn"}}, ["impossible", "3"]),
        ({"chemistry": {"elements": ["Li", "O"], "required": ["Co"]}}, ["required", "Co"]),
        ({"chemistry": {"elements": ["Sn"]}, "motif": {"lattice": "kagome", "element": "Mn"}}, ["Mn", "not among"]),
        ({"budgets": {"samples": 0}}, ["budgets.samples"]),
        ({"colour": "blue"}, ["colour"]),
    ],
)
def test_bad_specs_are_one_clear_line(data: dict, words: list[str]) -> None:
    with pytest.raises(InputError) as err:
        parse_spec(data)
    line = str(err.value)
    assert "\n" not in line and all(w in line for w in words), line


def test_malformed_files_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"motif": ')
    (tmp_path / "list.json").write_text("[1, 2]")
    for name, word in (("bad.json", "not valid JSON"), ("list.json", "JSON object"), ("none.json", "no such file")):
        with pytest.raises(InputError, match=word):
            load_spec(tmp_path / name)


def test_schema_names_every_section() -> None:
    schema = spec_json_schema()
    assert {"chemistry", "motif", "guidance", "thresholds", "budgets", "seed", "version"} <= set(schema["properties"])
