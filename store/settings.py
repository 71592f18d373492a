"""Store settings: where the candidate store and its audit logs live.

Resolution order for the store location: an explicit ``--store DIR`` (or ``Store.open(path)``), else the
``TESSERA_STORE`` environment variable, else the platform user data directory,
``~/.local/share/tessera/store`` on Linux (``$XDG_DATA_HOME/tessera/store`` when that is set).

A store location is a local directory or a URI LanceDB understands (``s3://...``, ``gs://...``,
``az://...``, ``memory://...``). Audit logs are append-only files that need ``fsync`` and ``flock``, so they
always live on a local filesystem: inside the store directory for local stores, in ``TESSERA_AUDIT_DIR``
for remote ones.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_store_location() -> str:
    """The platform user data directory for Tessera's store (no environment variable consulted)."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform.startswith("win"):
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return str(base / "tessera" / "store")


class StoreSettings(BaseSettings):
    """Settings read from ``TESSERA_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TESSERA_", extra="forbid")

    store: str = Field(default_factory=default_store_location, description="store directory or URI")
    audit_dir: Path | None = Field(None, description="local directory for audit logs of a remote (URI) store")
    commit_retries: int = Field(12, ge=1, description="attempts for a LanceDB commit that meets a conflict")
    compact_every: int = Field(50, ge=1, description="compact a table after this many commits by one handle")
    auto_index_rows: int = Field(
        100_000, ge=1, description="`tessera store optimize` builds the IVF_PQ and scalar indexes from this many rows"
    )


def resolve_store_location(explicit: str | os.PathLike[str] | None = None) -> str:
    """The store location to use: ``explicit`` if given, else the settings' (env or default)."""
    if explicit is not None and str(explicit) != "":
        return str(explicit)
    return StoreSettings().store
