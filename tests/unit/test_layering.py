"""The package layering, read from the source with ``ast`` (nothing is imported).

``seg_contract`` is the one wire contract: the control plane (``lambdas``) and the gateway
(``onprem_gateway``) both import it and never each other, and the contract imports
neither. Inside the control plane, the use cases and the domain stay free of boto3,
FastAPI and the adapters (``lambdas/usecases/__init__.py``); the gateway's core stays free
of I/O and of the rest of the gateway (``onprem_gateway/core/__init__.py``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(tree: ast.AST, module: str) -> Iterator[str]:
    """Every module a file imports, relative imports resolved against ``module``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                yield ".".join([*base, node.module] if node.module else base)
            elif node.module:
                yield node.module


def _imports(package: str) -> Iterator[tuple[str, str]]:
    """(file, imported module) for every Python file of ``package``."""
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
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


def test_the_scan_sees_imports_of_every_form() -> None:
    """The checker itself: plain, from-, relative and nested (function-level) imports."""
    source = (
        "import onprem_gateway.core\n"
        "from lambdas import ports\n"
        "from . import sibling\n"
        "def f():\n"
        "    from ..other import x\n"
    )
    found = set(_imported_modules(ast.parse(source), "pkg.sub.mod"))
    assert found == {"onprem_gateway.core", "lambdas", "pkg.sub", "pkg.other"}
