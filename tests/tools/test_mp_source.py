"""The Materials Project source against a local HTTP server that answers like the MP API (mp-api 0.46).

The server speaks the two routes the real client uses: ``GET /heartbeat`` (called when MPRester is
constructed) and ``GET /materials/thermo/?chemsys=...&thermo_types=GGA_GGA%2BU&_fields=entries,...``
(``get_entries_in_chemsys``), answering ``{"data": [thermo docs], "meta": {"total_doc": n}}`` with
each doc's ``entries`` a dict of thermo type -> ComputedStructureEntry dict.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import parse_qs, urlparse

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from tessera.tools.errors import InputError, ToolFailed
from tessera.tools.hull import ReferenceHull
from tessera.tools.mp_source import MPSource

API_KEY = "k" * 32  # mp-api insists on 32 characters
MU = {"Li": -1.9089, "O": -4.9480}  # eV/atom, scripted elemental ground states


def _entry(structure: Structure, e_form_per_atom: float, mid: str) -> dict:
    comp = structure.composition
    energy = (e_form_per_atom + sum(comp.fractional_composition[el] * MU[el.symbol] for el in comp.elements)) * len(structure)
    entry = ComputedStructureEntry(structure, energy, entry_id=f"{mid}-GGA", data={"material_id": mid},
                                   parameters={"run_type": "GGA"})
    return entry.as_dict()


def _scripted_docs() -> list[dict]:
    li = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    o2 = Structure(Lattice.cubic(4.0), ["O", "O"], [[0, 0, 0], [0, 0, 0.3]])
    li2o = Structure(Lattice.cubic(4.61), ["Li"] * 8 + ["O"] * 4,
                     [[0.25, 0.25, 0.25], [0.75, 0.75, 0.25], [0.75, 0.25, 0.75], [0.25, 0.75, 0.75],
                      [0.75, 0.75, 0.75], [0.25, 0.25, 0.75], [0.25, 0.75, 0.25], [0.75, 0.25, 0.25],
                      [0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    li2o2 = Structure(Lattice.hexagonal(3.14, 7.65), ["Li", "Li", "O", "O"],
                      [[0, 0, 0], [1 / 3, 2 / 3, 0.25], [1 / 3, 2 / 3, 0.85], [2 / 3, 1 / 3, 0.65]])
    # ids are made up so they never collide with the shipped entries
    rows = [("Li", li, 0.0, "mp-900135"), ("O", o2, 0.0, "mp-912957"),
            ("Li-O", li2o, -2.07, "mp-901960"), ("Li-O", li2o2, -1.65, "mp-900841")]
    return [{"chemsys": cs, "material_id": mid, "thermo_type": "GGA_GGA+U",
             "entries": {"GGA_GGA+U": _entry(s, ef, mid)}} for cs, s, ef, mid in rows]


class _FakeMP:
    """A tiny MP API on 127.0.0.1 that counts the requests it answers."""

    def __init__(self) -> None:
        self.docs = _scripted_docs()
        self.hits: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.hits.append(self.path)
                url = urlparse(self.path)
                q = parse_qs(url.query)
                if url.path.rstrip("/") == "/heartbeat":
                    body = {"version": "0.90.0", "db_version": "2025_09_25", "access_controlled_batch_ids": []}
                elif url.path.rstrip("/") == "/materials/thermo":
                    wanted = set(q.get("chemsys", [""])[0].split(","))
                    types = set(q.get("thermo_types", ["GGA_GGA+U"])[0].split(","))
                    data = [d for d in fake.docs if d["chemsys"] in wanted and d["thermo_type"] in types]
                    body = {"data": data, "meta": {"total_doc": len(data)}}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def thermo_hits(self) -> int:
        return sum("/materials/thermo" in h for h in self.hits)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_mp() -> Iterator[_FakeMP]:
    server = _FakeMP()
    yield server
    server.close()


def test_construction_does_not_contact_the_server(fake_mp: _FakeMP, tmp_path) -> None:
    MPSource(api_key=API_KEY, endpoint=fake_mp.endpoint, cache_dir=tmp_path)
    assert fake_mp.hits == []


def test_fetch_then_cache(fake_mp: _FakeMP, tmp_path) -> None:
    src = MPSource(api_key=API_KEY, endpoint=fake_mp.endpoint, cache_dir=tmp_path)
    entries = src.entries(["O", "Li"])
    assert {e.composition.reduced_formula for e in entries} == {"Li", "O2", "Li2O", "Li2O2"}
    assert fake_mp.thermo_hits() == 1
    assert src.cache_path(["Li", "O"]).exists()

    # a new source (new process, say) with the same cache: no request at all, not even a heartbeat
    before = len(fake_mp.hits)
    again = MPSource(api_key=API_KEY, endpoint=fake_mp.endpoint, cache_dir=tmp_path).entries(["Li", "O"])
    assert len(fake_mp.hits) == before
    assert sorted(e.energy for e in again) == pytest.approx(sorted(e.energy for e in entries))


def test_formation_energies_and_hull(fake_mp: _FakeMP, tmp_path) -> None:
    src = MPSource(api_key=API_KEY, endpoint=fake_mp.endpoint, cache_dir=tmp_path)
    refs = {r.material_id: r for r in src.reference_entries(("Li", "O"))}
    assert refs["mp-901960"].formation_energy_per_atom == pytest.approx(-2.07, abs=1e-9)
    assert refs["mp-900135"].formation_energy_per_atom == pytest.approx(0.0, abs=1e-9)
    assert all(r.source == "mp-api" for r in refs.values())

    # Li2O at its MP formation energy: on the hull with MP's entries, 0.97 eV/atom below it without
    # Li2O itself (then the hull at Li2O is 2/3 Li + 1/3 Li2O2: -1.65 * (1/3) / (1/2) = -1.10 eV/atom)
    s = Structure(Lattice.cubic(4.61), ["Li", "Li", "O"], [[0.25, 0.25, 0.25], [0.75, 0.75, 0.75], [0, 0, 0]])
    with_li2o = ReferenceHull(sources=("mp20",), entry_provider=src.reference_entries)
    energy = -2.07 + (2 * with_li2o.mu["Li"] + with_li2o.mu["O"]) / 3  # eV/atom on the shipped mu
    res = with_li2o.e_hull(s, energy)
    assert "mp-api" in res.sources
    assert res.e_hull <= 1e-9  # on the hull (or below, if a shipped mp20 entry is higher than MP's)
    without = ReferenceHull(sources=("mp20",), entry_provider=src.reference_entries,
                            exclude_ids=["mp-901960"] + [e.material_id for e in with_li2o.reference_entries(("Li", "O"))
                                                       if e.source != "mp-api"])
    res2 = without.e_hull(s, energy)
    assert res2.e_hull == pytest.approx(-2.07 + 1.10, abs=1e-6)
    assert set(res2.decomposition) == {"Li", "Li2O2"}


def test_missing_key_is_a_clear_input_error(monkeypatch) -> None:
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(InputError, match="MP_API_KEY"):
        MPSource.from_env()


def test_server_error_is_tool_failed(tmp_path) -> None:
    # nothing listens on this port: the client's connection error becomes one ToolFailed line
    src = MPSource(api_key=API_KEY, endpoint="http://127.0.0.1:9/", cache_dir=tmp_path)
    with pytest.raises(ToolFailed, match="Materials Project"):
        src.entries(["Li", "O"])


def test_hull_config_switch_uses_the_environment(fake_mp: _FakeMP, tmp_path, monkeypatch) -> None:
    """``use_mp_api: true`` builds the source from MP_API_KEY / MP_API_ENDPOINT and caches under TESSERA_MP_CACHE."""
    from tessera.tools.hull import HullParams

    monkeypatch.setenv("MP_API_KEY", API_KEY)
    monkeypatch.setenv("MP_API_ENDPOINT", fake_mp.endpoint)
    monkeypatch.setenv("TESSERA_MP_CACHE", str(tmp_path))
    hull = ReferenceHull.from_params(HullParams(use_mp_api=True))
    assert fake_mp.hits == []  # nothing fetched until a chemical system is asked for
    s = Structure(Lattice.cubic(4.61), ["Li", "Li", "O"], [[0.25, 0.25, 0.25], [0.75, 0.75, 0.75], [0, 0, 0]])
    res = hull.e_hull(s, -4.5)
    assert res.sources[-1] == "mp-api"
    assert fake_mp.thermo_hits() == 1
    hull.e_hull(s, -4.4)  # same chemical system: the cached phase diagram, no new request
    ReferenceHull.from_params(HullParams(use_mp_api=True)).e_hull(s, -4.4)  # new hull: the disk cache
    assert fake_mp.thermo_hits() == 1
    assert any(tmp_path.rglob("*Li-O.json"))
