"""The package layering, read from the source with ``ast`` (nothing is imported).

``seg_contract`` is the one wire contract: the control plane (``lambdas``) and the gateway
(``onprem_gateway``) both import it and never each other, and the contract imports
neither. Inside the control plane, the use cases and the domain stay free of boto3,
FastAPI and the adapters (``lambdas/usecases/__init__.py``); the gateway's core stays free
of I/O and of the rest of the gateway (``onprem_gateway/core/__init__.py``).

The control plane is a hexagon: the domain (values, pure rules, the one error module)
imports nothing else of ``lambdas``; the ports import only the domain; adapters import
the ports and the domain, never a use case nor an edge; use cases import the domain and
the ports, never an adapter nor an edge; ``lambdas.composition`` is the one place that
puts adapters and use cases together. And no package imports itself round in a circle.
Every import counts, including those under ``TYPE_CHECKING`` and inside functions."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repository."""
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported_modules(
    tree: ast.AST, module: str, is_module: Callable[[str], bool] = _is_module
) -> Iterator[str]:
    """Every module a file imports, relative imports resolved against ``module``; ``from
    package import name`` counts as importing ``package.name`` when that is a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                source = ".".join([*base, node.module] if node.module else base)
            elif node.module:
                source = node.module
            else:  # pragma: no cover - "from . import" always has a level
                continue
            for alias in node.names:
                inner = f"{source}.{alias.name}"
                yield inner if is_module(inner) else source


def _module_files(target: str) -> list[Path]:
    """The Python files of a package, or the one file of a module."""
    path = ROOT / target.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return [path.with_suffix(".py")]
    return sorted(path.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(package: str) -> Iterator[tuple[str, str]]:
    """(file, imported module) for every Python file of ``package``."""
    for path in _module_files(package):
        relative = path.relative_to(ROOT)
        module = ".".join(relative.with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for imported in _imported_modules(tree, module):
            yield str(relative), imported


def _within(imported: str, forbidden: str) -> bool:
    return imported == forbidden or imported.startswith(forbidden + ".")


RULES = [
    ("lambdas", ("onprem_gateway", "seg_local", "seg_cli", "cdk")),
    ("onprem_gateway", ("lambdas", "seg_local", "seg_cli", "cdk")),
    ("seg_contract", ("lambdas", "onprem_gateway", "seg_local", "seg_cli", "cdk")),
    ("lambdas.usecases", ("boto3", "botocore", "fastapi", "lambdas.adapters", "lambdas.api")),
    ("lambdas.domain", ("boto3", "botocore", "fastapi", "lambdas.adapters", "lambdas.usecases")),
    ("lambdas.ports", ("boto3", "botocore", "fastapi")),
    # The composition root puts adapters and use cases together; the edges use it.
    ("lambdas.composition", ("fastapi", "lambdas.api", "lambdas.handlers")),
    # The gateway's pure core: values in, values out (``onprem_gateway/core/__init__.py``).
    (
        "onprem_gateway.core",
        (
            *("onprem_gateway.agent", "onprem_gateway.proxy", "onprem_gateway.config"),
            *("asyncio", "socket", "ssl", "os", "pathlib", "httpx", "aiohttp", "websockets"),
        ),
    ),
]


@pytest.mark.parametrize(("package", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_package_never_imports_the_forbidden_ones(package: str, forbidden: tuple[str, ...]) -> None:
    found = [
        f"{file} imports {imported}"
        for file, imported in _imports(package)
        if any(_within(imported, f) for f in forbidden)
    ]
    assert found == []


# Inside the control plane, what each layer may import of ``lambdas`` (anything outside
# ``lambdas``, such as seg_contract and third-party libraries, is for ``RULES`` above).
HEXAGON = [
    ("lambdas.domain", ("lambdas.domain",)),
    ("lambdas.ports", ("lambdas.domain",)),
    ("lambdas.adapters", ("lambdas.adapters", "lambdas.domain", "lambdas.ports")),
    ("lambdas.usecases", ("lambdas.usecases", "lambdas.domain", "lambdas.ports")),
]
# The edges reach the adapters through the composition root (``lambdas.composition``)
# only, and the API never imports a handler (the API's handler imports the API).
EDGES = [
    ("lambdas.handlers", ("lambdas.adapters",)),
    ("lambdas.api", ("lambdas.adapters", "lambdas.handlers")),
]
# The API's container (``lambdas.api.deps``) extends the composition root with the one
# adapter only the API needs.
EDGE_EXCEPTIONS = {
    ("lambdas/api/deps.py", "lambdas.adapters.secretsmanager_device_services_key"),
}


@pytest.mark.parametrize(("layer", "allowed"), HEXAGON, ids=[h[0] for h in HEXAGON])
def test_each_layer_of_the_hexagon_imports_only_the_layers_inside_it(
    layer: str, allowed: tuple[str, ...]
) -> None:
    found = [
        f"{file} imports {imported}"
        for file, imported in _imports(layer)
        if _within(imported, "lambdas") and not any(_within(imported, a) for a in allowed)
    ]
    assert found == []


@pytest.mark.parametrize(("edge", "forbidden"), EDGES, ids=[e[0] for e in EDGES])
def test_the_edges_build_adapters_only_through_the_composition_root(
    edge: str, forbidden: tuple[str, ...]
) -> None:
    imports = set(_imports(edge))
    found = [
        f"{file} imports {imported}"
        for file, imported in sorted(imports - EDGE_EXCEPTIONS)
        if any(_within(imported, f) for f in forbidden)
    ]
    assert found == []
    # An exception that no longer happens is taken off the list.
    stale = {e for e in EDGE_EXCEPTIONS if e[0].startswith(edge.replace(".", "/") + "/")} - imports
    assert stale == set()


def test_the_typed_errors_are_all_in_the_one_error_module() -> None:
    """Every error the API answers with (``UseCaseError`` and its family) and every error
    a port raises is declared in ``lambdas.domain.errors``, nowhere else: no layer grows
    its own refinement of them. (A module may keep a private parse error of its own.)"""
    errors = ROOT / "lambdas/domain/errors.py"
    family = {
        node.name
        for node in ast.parse(errors.read_text(encoding="utf-8")).body
        if isinstance(node, ast.ClassDef)
    }
    found = [
        f"{path.relative_to(ROOT)}: class {node.name}"
        for path in _module_files("lambdas")
        if path != errors
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(b, ast.Name | ast.Attribute) and ast.unparse(b).split(".")[-1] in family
            for b in node.bases
        )
    ]
    assert found == []


def test_the_scan_sees_imports_of_every_form() -> None:
    """The checker itself: plain, from-, relative, nested (function-level) and
    ``TYPE_CHECKING`` imports; ``from package import module`` names the module."""
    source = (
        "import onprem_gateway.core\n"
        "from lambdas import ports\n"
        "from lambdas import resources, settings\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from seg_contract.models import Access\n"
        "def f():\n"
        "    from ..other import x\n"
    )
    found = set(_imported_modules(ast.parse(source), "pkg.sub.mod"))
    assert found == {
        *("onprem_gateway.core", "lambdas.ports", "lambdas.resources", "lambdas.settings"),
        *("pkg.sub", "seg_contract.models", "pkg.other"),
    }


# --- import cycles -------------------------------------------------------------------

GRAPH_PACKAGES = ("lambdas", "onprem_gateway", "seg_contract")

# Import cycles of the gateway allowed for now, each as the set of modules that import
# one another round in a circle (a strongly connected component of the import graph).
# None today: the proxy's request path imports one way (connection -> flow ->
# state -> roles), the structural types of ``proxy/roles.py`` and
# ``proxy/client_side.py`` standing for the way back. The list may only shrink: when a
# cycle here is broken (or loses a module), the test fails until its entry is removed.
KNOWN_GATEWAY_CYCLES: list[frozenset[str]] = []


def _import_graph(packages: Sequence[str]) -> dict[str, set[str]]:
    """module -> the modules of ``packages`` it imports (every form, see the scan)."""
    files = {_module_name(p): p for package in packages for p in _module_files(package)}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # Relative imports resolve against the file's own name (a package's is __init__).
        own = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        imported = set(_imported_modules(tree, own, is_module=lambda name: name in files))
        graph[module] = {m for m in imported if m in files and m != module}
    return graph


def _cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def _cycle_path(graph: Mapping[str, set[str]], component: frozenset[str]) -> str:
    """One shortest circle through the component's first module, ``a -> b -> a``."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return " -> ".join([*reversed(path), start])
                if succ not in came_from:
                    came_from[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"{sorted(component)} is not a cycle")  # pragma: no cover


def test_no_import_cycles_beyond_the_known_gateway_ones() -> None:
    graph = _import_graph(GRAPH_PACKAGES)
    cycles = _cycles(graph)
    new = [_cycle_path(graph, c) for c in cycles if c not in KNOWN_GATEWAY_CYCLES]
    assert new == [], "import cycles:\n" + "\n".join(new)
    gone = [sorted(c) for c in KNOWN_GATEWAY_CYCLES if c not in cycles]
    assert gone == [], f"no longer cycles (remove them from KNOWN_GATEWAY_CYCLES): {gone}"


def test_the_control_plane_and_the_contract_have_no_cycle_at_all() -> None:
    assert all(_within(m, "onprem_gateway") for c in KNOWN_GATEWAY_CYCLES for m in c)
    graph = _import_graph(("lambdas", "seg_contract"))
    assert [_cycle_path(graph, c) for c in _cycles(graph)] == []


def test_the_cycle_finder_reports_each_circle_with_its_path() -> None:
    """The checker itself, on a made-up graph: a -> b -> c -> a, d -> e -> d, f alone."""
    graph = {"a": {"b"}, "b": {"c", "f"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    cycles = _cycles(graph)
    assert sorted(sorted(c) for c in cycles) == [["a", "b", "c"], ["d", "e"]]
    assert sorted(_cycle_path(graph, c) for c in cycles) == ["a -> b -> c -> a", "d -> e -> d"]


def test_the_graph_sees_a_type_checking_import_as_an_edge() -> None:
    """The ports once imported use-case values under ``TYPE_CHECKING`` while the use
    cases imported the ports: a cycle, however lazy, that the graph must show."""
    graph = _import_graph(("lambdas",))
    assert "lambdas.domain.email_view" in graph["lambdas.ports"]


def test_a_worker_process_imports_no_http_client() -> None:
    """Each worker is an interpreter of its own that pays in memory for what it imports:
    httpx (with the CLI it loads) was ~3.4 MiB of every worker's RSS, reached only
    through the agent's event reporter for its ``EventBuffer``."""
    graph = _import_graph(GRAPH_PACKAGES)
    reached: set[str] = set()
    todo = ["onprem_gateway.agent.worker_process"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert "onprem_gateway.agent.event_buffer" in reached  # the scan follows the imports
    clients = ("httpx", "aiohttp", "websockets", "onprem_gateway.agent.cloud")
    found = []
    for module in sorted(reached):
        path = ROOT / module.replace(".", "/")
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found += [
            f"{module} imports {imported}"
            for imported in _imported_modules(tree, own)
            if any(_within(imported, c) for c in clients)
        ]
    assert found == []
