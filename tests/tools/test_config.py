"""The one config loader: every tool's YAML fails the same way, in one line that names the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from tessera.tools.config import load_config
from tessera.tools.errors import InputError
from tessera.tools.hull import HullParams, load_hull_params
from tessera.tools.paths import CONFIG_DIR
from tessera.tools.prescreen import PrescreenParams, load_prescreen_params
from tessera.tools.relax import RelaxParams, load_relax_params


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = 2


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(10, ge=1)
    inner: _Inner = Field(default_factory=_Inner)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "demo.yaml"
    p.write_text(text)
    return p


def test_reads_values_and_fills_defaults(tmp_path: Path) -> None:
    assert load_config(_Params, "demo", _write(tmp_path, "steps: 3\n")) == _Params(steps=3)
    assert load_config(_Params, "demo", _write(tmp_path, "")) == _Params()
    assert load_config(_Params, "demo", _write(tmp_path, "# only a comment\n")) == _Params()


def test_default_file_is_read_from_the_config_dir_and_its_absence_gives_defaults(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text("inner: {depth: 5}\n")
    assert load_config(_Params, "demo", config_dir=tmp_path).inner.depth == 5
    assert load_config(_Params, "absent", config_dir=tmp_path) == _Params()


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("stpes: 3\n", "unknown key 'stpes'"),
        ("inner: {dpth: 1}\n", "unknown key 'inner.dpth'"),
        ("steps: 0\n", "steps:"),
        ("steps: [1, 2\n", "bad YAML"),
        ("- steps\n- 3\n", "expected a mapping"),
    ],
)
def test_every_bad_file_is_one_line_naming_the_file(tmp_path: Path, text: str, phrase: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_config(_Params, "demo", path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid demo config") and phrase in message
    assert "\n" not in message


def test_a_missing_explicit_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such demo config") as info:
        load_config(_Params, "demo", tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(info.value)


@pytest.mark.parametrize(
    ("loader", "model", "name"),
    [(load_relax_params, RelaxParams, "relax"), (load_prescreen_params, PrescreenParams, "prescreen"),
     (load_hull_params, HullParams, "hull")],
)
def test_every_tool_loader_uses_it_and_the_shipped_file_equals_the_code_defaults(
    tmp_path: Path, loader, model, name: str
) -> None:
    assert (CONFIG_DIR / f"{name}.yaml").exists()  # the shipped file is what the default reads
    assert loader() == load_config(model, name) == model()  # an installed package without configs/ agrees
    bad = tmp_path / f"{name}.yaml"
    bad.write_text("no_such_setting: 1\n")
    with pytest.raises(InputError, match=f"invalid {name} config \\(unknown key 'no_such_setting'\\)"):
        loader(bad)
