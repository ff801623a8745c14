"""The layers, checked: no module imports one above it, and the rules and stores know no HTTP,
metrics or settings. Read from the source with ast, so a lazy import inside a function counts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "gme_recwatch"

# Lowest first. A module may import its own layer and the ones below, never one above.
LAYERS: list[set[str]] = [
    {"clock", "ratelimit", "events", "signature", "hints", "blind"},
    {"lifecycle", "deadlines"},
    {"stores"},
    {"settings", "metrics", "logging", "tracing"},
    {"intake", "snapshots", "cos", "reconcile"},
    {"service"},
    {"errors", "instrument", "callback", "admin", "app", "edge"},
    {"server", "simulate"},
    {"cli"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
HTTP_LIBRARIES = {"litestar", "uvicorn", "httpx", "granian", "starlette"}


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(package modules, third-party top-level names) a file imports, lazily or not."""
    own: set[str] = set()
    third: set[str] = set()
    depth = len(path.relative_to(PACKAGE).parts) - 1
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                third.add((node.module or "").split(".")[0])
                continue
            up = node.level - 1 - depth  # levels above the package root: must be <= 0
            base = (node.module or "").split(".")
            if up < 0 and depth:  # `from . import x` inside stores/ stays in stores
                own.add("stores")
                continue
            if base[0]:
                own.add(base[0])
            else:
                own.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Import):
            third.update(alias.name.split(".")[0] for alias in node.names)
    return own, third


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_module_has_a_layer() -> None:
    names = {_module_of(p) for p in SOURCES} - {"__init__"}
    assert names <= set(LEVEL), f"modules without a layer: {names - set(LEVEL)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    me = _module_of(path)
    own, _ = _imports(path)
    higher = {m for m in own - {me, "__version__"} if m in LEVEL and LEVEL[m] > LEVEL[me]}
    assert not higher, f"{me} imports {higher}, which sit above it"


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in SOURCES
        if _module_of(p)
        in {"lifecycle", "deadlines", "stores", "clock", "events", "signature", "hints", "ratelimit", "intake"}
    ],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_rules_stores_and_intake_know_no_http(path: Path) -> None:
    own, third = _imports(path)
    assert not third & HTTP_LIBRARIES, third & HTTP_LIBRARIES
    if _module_of(path) != "intake":
        assert not own & {"metrics", "settings"}, own
