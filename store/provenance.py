"""Provenance helpers: the code version and the versions of the tools a run used."""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

from tessera.tools.hashing import file_sha256  # noqa: F401 - re-exported: the store records checkpoint hashes
from tessera.tools.paths import REPO_ROOT

_TRACKED_PACKAGES = ("pymatgen", "chgnet", "torch", "lancedb", "pylance", "numpy", "smact", "spglib", "ase")


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` in a git checkout, else the installed package version."""
    try:
        base = importlib.metadata.version("tessera")
    except importlib.metadata.PackageNotFoundError:
        base = "0+unknown"
    if not (REPO_ROOT / ".git").exists():
        return base
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short=10", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return base  # git missing or not a repository after all: the package version still names the code
    return f"{base}+g{sha}{'.dirty' if dirty else ''}"


@lru_cache(maxsize=1)
def tool_versions() -> dict[str, str]:
    """Versions of Tessera and the main scientific packages (those installed)."""
    out = {"tessera": code_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def current_user() -> str:
    """The reviewer name to use when none is given: $USER, else the login name."""
    user = os.environ.get("USER") or os.environ.get("USERNAME")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def host_name() -> str:
    return socket.gethostname()
