"""One way to read a tool's settings: ``configs/<name>.yaml`` into its pydantic model.

Every tool that has a config file (prescreen, relax, hull) loads it through :func:`load_config`, so a user
gets the same one-line :class:`InputError` for a missing file, bad YAML, an unknown key or a bad value,
always naming the file. The models forbid extra keys (``extra="forbid"``): a misspelt key is an error,
never a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tessera.tools.errors import InputError
from tessera.tools.paths import CONFIG_DIR

M = TypeVar("M", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """The first validation problem as a short phrase: ``unknown key 'fmx'`` or ``steps: <pydantic's message>``
    (a validator's own message is kept as written, without pydantic's "Value error, " prefix)."""
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where and not msg.startswith(where) else msg


def load_config(model: type[M], name: str, path: str | Path | None = None, *, config_dir: Path = CONFIG_DIR) -> M:
    """Settings for one tool: ``path`` if given, else ``config_dir/<name>.yaml``, validated by ``model``.

    When no ``path`` is given and the default file does not exist (an installed package ships no
    configs/ folder), the model's own defaults are returned; the shipped YAML files equal them. An empty
    file also gives the defaults.

    Args:
        model: the pydantic model of the settings (should forbid extra keys).
        name: the config's name, e.g. ``"relax"`` for ``configs/relax.yaml``; used in error messages.
        path: an explicit YAML file, which must exist.
        config_dir: where default config files live (the repository's ``configs/``).

    Raises:
        InputError: the explicit file is missing or unreadable, its YAML is malformed or not a mapping,
            it has a key the model does not know, or a value fails validation. One line, naming the file.
    """
    p = Path(path) if path is not None else config_dir / f"{name}.yaml"
    if not p.exists():
        if path is not None:
            raise InputError(f"{p}: no such {name} config")
        return model()
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"{p}: cannot read {name} config ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: invalid {name} config (bad YAML: {first})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{p}: invalid {name} config (expected a mapping of settings, got {type(data).__name__})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{p}: invalid {name} config ({describe_validation_error(exc)})") from exc
