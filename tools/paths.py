"""Where shipped data lives. The running program reads only the repository's own data/ folder."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
DATA_DIR: Path = REPO_ROOT / "data"
CONFIG_DIR: Path = REPO_ROOT / "configs"
POOL_PATH: Path = DATA_DIR / "pool.parquet"
HULL_ENTRIES_PATH: Path = DATA_DIR / "hull_entries.parquet"
ELEMENT_REFS_PATH: Path = DATA_DIR / "elemental_references.json"


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (portable in records), else as given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(path)
