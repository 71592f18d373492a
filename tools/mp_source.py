"""Materials Project reference entries via mp-api, cached on disk (optional; needs ``MP_API_KEY``).

The shipped hull (``data/hull_entries.parquet``) covers the MP-20/MPTS-52 era. When a user has an API
key and asks for it (``use_mp_api: true`` in ``configs/hull.yaml``), this module fetches every entry of
a chemical system and its sub-systems from the Materials Project ``materials/thermo`` endpoint with
thermo type ``GGA_GGA+U`` (MP2020-corrected GGA/GGA+U: the same scale CHGNet 0.3.0 predicts on;
r2SCAN-mixed entries would be on a different one) and turns them into formation energies.

``MPRester`` contacts the server when constructed, so it is built only on a cache miss, never at
import or construction of :class:`MPSource`. The cache is one JSON file per (endpoint, thermo type,
chemical system) under ``cache_dir`` (default: ``$TESSERA_MP_CACHE`` or
``$XDG_DATA_HOME/tessera/mp_entries`` or ``~/.local/share/tessera/mp_entries``); a cached system is
served without any network access.

Formation energies use MP's own elemental ground states from the same answer (lowest corrected
energy per atom of each element), falling back to the shipped elemental references for an element
MP did not return, so the hull reproduces MP's.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from monty.json import MontyEncoder
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedStructureEntry

from tessera.tools.errors import DataError, InputError, ToolFailed
from tessera.tools.reference_data import ReferenceEntry, load_elemental_references

THERMO_TYPE: str = "GGA_GGA+U"
SOURCE_NAME: str = "mp-api"
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """Where fetched entries live: $TESSERA_MP_CACHE, else the user's data dir."""
    explicit = os.environ.get("TESSERA_MP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "tessera" / "mp_entries"


def _default_rester_factory(api_key: str, endpoint: str | None) -> Any:
    from mp_api.client import MPRester

    kwargs: dict[str, Any] = {"api_key": api_key, "use_document_model": False, "mute_progress_bars": True}
    if endpoint is not None:
        kwargs["endpoint"] = endpoint
    return MPRester(**kwargs)


class MPSource:
    """Materials Project entries per chemical system, fetched once and cached on disk.

    Args:
        api_key: the user's Materials Project API key (32 characters).
        endpoint: API base URL (default: mp-api's, https://api.materialsproject.org/).
        cache_dir: where to keep fetched systems (default :func:`default_cache_dir`).
        thermo_type: MP thermo type to request (``GGA_GGA+U`` matches CHGNet 0.3.0's scale).
        rester_factory: ``(api_key, endpoint) -> MPRester``-like object (the real MPRester by default).
    """

    def __init__(
        self,
        *,
        api_key: str,
        endpoint: str | None = None,
        cache_dir: str | Path | None = None,
        thermo_type: str = THERMO_TYPE,
        rester_factory: Callable[[str, str | None], Any] = _default_rester_factory,
    ) -> None:
        if not api_key:
            raise InputError("Materials Project source needs an API key (set MP_API_KEY)")
        self.api_key = api_key
        self.endpoint = endpoint
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.thermo_type = thermo_type
        self._rester_factory = rester_factory
        self._rester: Any = None
        self.n_fetches = 0
        self._memory: dict[tuple[str, ...], list[ComputedStructureEntry]] = {}

    @classmethod
    def from_env(cls, *, cache_dir: str | Path | None = None, endpoint: str | None = None) -> "MPSource":
        """A source using ``MP_API_KEY`` (and ``MP_API_ENDPOINT`` if set); InputError when the key is missing."""
        key = os.environ.get("MP_API_KEY", "").strip()
        if not key:
            raise InputError("use_mp_api is on but MP_API_KEY is not set (get a key at materialsproject.org)")
        return cls(api_key=key, endpoint=endpoint or os.environ.get("MP_API_ENDPOINT") or None, cache_dir=cache_dir)

    # ------------------------------------------------------------------ cache

    def _endpoint_tag(self) -> str:
        return hashlib.sha256((self.endpoint or "default").encode()).hexdigest()[:10]

    def cache_path(self, system: Sequence[str]) -> Path:
        """The cache file of a chemical system (sorted symbols) for this endpoint and thermo type."""
        key = "-".join(sorted(set(system)))
        tt = self.thermo_type.replace("+", "U")
        return self.cache_dir / self._endpoint_tag() / f"{tt}__{key}.json"

    def _read_cache(self, path: Path) -> list[ComputedStructureEntry] | None:
        if not path.exists():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != _CACHE_VERSION:
                return None
            return [ComputedStructureEntry.from_dict(d) for d in doc["entries"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"Materials Project cache file {path} is unreadable ({exc}); delete it to refetch") from exc

    def _write_cache(self, path: Path, system: tuple[str, ...], entries: list[ComputedStructureEntry]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": _CACHE_VERSION, "chemsys": "-".join(system), "thermo_type": self.thermo_type,
               "endpoint": self.endpoint or "default", "fetched_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "entries": [e.as_dict() for e in entries]}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, cls=MontyEncoder))  # emmet's EntryID and numpy values need Monty
        os.replace(tmp, path)  # atomic: a killed process never leaves a half-written cache file

    # ------------------------------------------------------------------ fetching

    def _fetch(self, system: tuple[str, ...]) -> list[ComputedStructureEntry]:
        self.n_fetches += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mp-api warns about thermo-type defaults we set explicitly
            try:
                if self._rester is None:  # constructing MPRester already talks to the server
                    self._rester = self._rester_factory(self.api_key, self.endpoint)
                entries = self._rester.get_entries_in_chemsys(
                    list(system), additional_criteria={"thermo_types": [self.thermo_type]}
                )
            except Exception as exc:  # noqa: BLE001 - network/server errors of any kind become one line
                raise ToolFailed(f"Materials Project query for {'-'.join(system)} failed: {exc}") from exc
        return sorted(entries, key=lambda e: str(e.entry_id))

    def entries(self, system: Sequence[str]) -> list[ComputedStructureEntry]:
        """All MP entries (MP2020-corrected) of a chemical system and its sub-systems; cached."""
        key = tuple(sorted(set(system)))
        if not key:
            raise InputError("empty chemical system")
        if key in self._memory:
            return self._memory[key]
        path = self.cache_path(key)
        cached = self._read_cache(path)
        if cached is None:
            cached = self._fetch(key)
            self._write_cache(path, key, cached)
        self._memory[key] = cached
        return cached

    def reference_entries(self, system: Sequence[str]) -> list[ReferenceEntry]:
        """MP entries of a system as formation energies (eV/atom), ready for :class:`tools.hull.ReferenceHull`."""
        entries = self.entries(system)
        shipped = load_elemental_references()
        mu: dict[str, float] = {}
        for e in entries:
            if len(e.composition.elements) == 1:
                el = e.composition.elements[0].symbol
                mu[el] = min(mu.get(el, float("inf")), e.energy_per_atom)
        out: list[ReferenceEntry] = []
        for e in entries:
            comp: Composition = e.composition
            els = [el.symbol for el in comp.elements]
            if any(el not in mu and el not in shipped for el in els):
                continue
            ref = sum(comp[el] * mu.get(el, shipped.get(el, 0.0)) for el in els)
            e_form = (e.energy - ref) / comp.num_atoms
            mid = str(e.data.get("material_id") or e.entry_id or "")
            out.append(ReferenceEntry(mid.split("-GGA")[0] if mid else "mp-unknown", comp, float(e_form), SOURCE_NAME))
        return out
