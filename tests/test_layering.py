"""The house's layering, read statically from the source (no module is imported).

Every ``import`` and ``from ... import`` in agents/, cli/, tools/, generators/ and store/ counts, wherever
it is written: at the top, inside a function (a lazy import is still a dependency), or under
``if TYPE_CHECKING:``. The rules (issue 14):

(a) tools/, generators/ and store/ are UI-free: they never import typer or rich;
(b) only cli/ imports ``tessera.cli``;
(c) generators/ stands alone: nothing from ``tessera.tools``, ``tessera.store`` or ``tessera.agents``;
(d) there is no import cycle among tessera modules (the failure names the cycle, file:line per edge);
(e) the bottom of the house (errors, paths, the Candidate record, structure io, the measures, the config
    loader, the hull's reference data and energy scale) imports nothing from the pipeline above it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOMS: tuple[str, ...] = ("agents", "cli", "tools", "generators", "store")
"""Top-level folders that install as ``tessera.<room>`` (pyproject.toml package-dir)."""
BOTTOM: frozenset[str] = frozenset(
    f"tessera.tools.{name}"
    for name in ("errors", "paths", "candidate", "io", "measures", "config", "reference_data", "energy_scale",
                 "isolation", "hashing", "runlog")
)
"""Core records and shared rules: they may import each other, never a pipeline stage (prescreen, relax, ...)."""


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to a dotted name, with where it is written."""

    source: str  # importing module, e.g. tessera.tools.hull
    target: str  # imported name, e.g. tessera.tools.measures or typer.core
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["tessera", *parts])


def _source_files() -> list[Path]:
    return sorted(p for room in ROOMS for p in (REPO / room).rglob("*.py") if "__pycache__" not in p.parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _imports_of(path: Path) -> list[Import]:
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[Import] = []
    for node in ast.walk(tree):  # every node: function bodies and TYPE_CHECKING blocks included
        if isinstance(node, ast.Import):
            out.extend(Import(module, alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(module, is_package, node.level, node.module) if node.level
                    else (node.module or ""))
            # ``from pkg import name``: name may be a submodule (pkg.name) or an attribute of pkg; the
            # graph below keeps whichever of the two is a known module.
            out.extend(Import(module, f"{base}.{alias.name}" if alias.name != "*" else base, path, node.lineno)
                       for alias in node.names)
    return out


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found: list[Import] = []
    for path in _source_files():
        found.extend(_imports_of(path))
    return found


@pytest.fixture(scope="module")
def modules() -> set[str]:
    return {_module_name(p) for p in _source_files()}


def _in_room(module: str, *rooms: str) -> bool:
    return any(module == f"tessera.{r}" or module.startswith(f"tessera.{r}.") for r in rooms)


def _under(target: str, prefix: str) -> bool:
    return target == prefix or target.startswith(prefix + ".")


def _report(violations: list[Import], what: str) -> str:
    lines = [f"{len(violations)} import(s) {what}:"]
    lines += [f"  {v.where()}: {v.source} imports {v.target}" for v in violations]
    return "\n".join(lines)


def test_every_room_has_source_files(modules: set[str]) -> None:
    """Guards the checks below against scanning nothing (a renamed folder would make them pass vacuously)."""
    for room in ROOMS:
        assert any(_in_room(m, room) for m in modules), f"no Python files found under {room}/"


def test_tools_generators_and_store_never_import_typer_or_rich(imports: list[Import]) -> None:
    bad = [i for i in imports if _in_room(i.source, "tools", "generators", "store")
           and any(_under(i.target, ui) for ui in ("typer", "rich"))]
    assert not bad, _report(bad, "of a UI library below the CLI")


def test_only_the_cli_imports_the_cli(imports: list[Import]) -> None:
    bad = [i for i in imports if not _in_room(i.source, "cli") and _under(i.target, "tessera.cli")]
    assert not bad, _report(bad, "of tessera.cli from outside cli/")


def test_generators_import_nothing_from_tools_store_or_agents(imports: list[Import]) -> None:
    bad = [i for i in imports if _in_room(i.source, "generators")
           and any(_under(i.target, f"tessera.{room}") for room in ("tools", "store", "agents"))]
    assert not bad, _report(bad, "from generators/ into another room")


def test_the_bottom_of_the_house_imports_nothing_above_it(imports: list[Import], modules: set[str]) -> None:
    missing = BOTTOM - modules
    assert not missing, f"bottom-of-the-house modules not found: {sorted(missing)}"
    graph = _graph(imports, modules)
    bad = [i for source in sorted(BOTTOM) for target, i in graph[source].items() if target not in BOTTOM]
    assert not bad, _report(bad, "from a core module into the pipeline above it")


def _graph(imports: list[Import], modules: set[str]) -> dict[str, dict[str, Import]]:
    """module -> {imported tessera module -> the first import statement that makes that edge}."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for i in imports:
        target = i.target
        # ``from tessera.tools.hull import ReferenceHull`` -> tessera.tools.hull (the longest known module).
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != i.source:
            graph[i.source].setdefault(target, i)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    components.append(sorted(comp))
    return components


def _shortest_cycle(graph: dict[str, dict[str, Import]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component."""
    start = component[0]
    members = set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle found in component {component}")  # cannot happen for an SCC


def test_no_import_cycle_among_tessera_modules(imports: list[Import], modules: set[str]) -> None:
    graph = _graph(imports, modules)
    reports: list[str] = []
    for component in _strongly_connected(graph):
        cycle = _shortest_cycle(graph, component)
        edges = [f"    {graph[a][b].where()}: {a} -> {b}" for a, b in zip(cycle, cycle[1:])]
        reports.append(f"  cycle {' -> '.join(cycle)}"
                       + (f" (component of {len(component)} modules)" if len(component) > len(cycle) - 1 else "")
                       + "\n" + "\n".join(edges))
    assert not reports, "import cycles among tessera modules (lazy imports count):\n" + "\n".join(reports)


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path: Path) -> None:
    """The checker itself: a cycle closed only by an import inside a function is found and named."""
    a = Import("tessera.x.a", "tessera.x.b.Thing", tmp_path, 1)
    b = Import("tessera.x.b", "tessera.x.a", tmp_path, 7)  # as if written inside a function
    c = Import("tessera.x.c", "tessera.x.a", tmp_path, 3)
    graph = _graph([a, b, c], {"tessera.x.a", "tessera.x.b", "tessera.x.c"})
    components = _strongly_connected(graph)
    assert components == [["tessera.x.a", "tessera.x.b"]]
    assert _shortest_cycle(graph, components[0]) == ["tessera.x.a", "tessera.x.b", "tessera.x.a"]


def test_imports_inside_functions_and_relative_imports_are_read(tmp_path: Path, monkeypatch) -> None:
    """The reader sees lazy, TYPE_CHECKING and relative imports, resolved to absolute names."""
    room = tmp_path / "tools"
    room.mkdir()
    (room / "__init__.py").write_text("")
    (room / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import io\n"
        "if TYPE_CHECKING:\n"
        "    from ..store.schema import Row\n"
        "def f():\n"
        "    import typer\n"
        "    from .hull import ReferenceHull\n"
    )
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    targets = {i.target for i in _imports_of(room / "m.py")}
    assert {"tessera.tools.io", "tessera.store.schema.Row", "typer", "tessera.tools.hull.ReferenceHull"} <= targets
