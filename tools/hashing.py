"""Content hashes that tie a record to the exact bytes behind it (weights, inputs)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MB chunks (checkpoint provenance: the exact weights behind a candidate)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def structure_key(cif: str) -> str:
    """Key of an input structure (resuming relaxations, deduplicating labels): SHA-256 of its CIF text."""
    return hashlib.sha256(cif.encode()).hexdigest()
