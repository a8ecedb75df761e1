"""House rules: every import arrow points the documented way; no module imports in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# source folder -> installed package name (pyproject.toml's package-dir mapping)
FOLDERS = {
    "metasym_control": "metasym_control",
    "envs": "metasym_control.envs",
    "models": "metasym_control.models",
    "controllers": "metasym_control.controllers",
}
# the seams: data types and protocols that every room may know
INTERFACES = frozenset(
    f"metasym_control.{m}"
    for m in ("params", "task", "trajectory", "dynamics", "controller", "windows", "system_env")
)
# env modules that hold the Gymnasium face (models must not import them)
ENV_FACES = ("env", "vector")


def _modules() -> dict[str, Path]:
    """Every project module by installed dotted name."""
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return name in MODULES and MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Project modules that `name` imports anywhere in its file: top level, inside
    functions and under `TYPE_CHECKING` alike (each is an arrow)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import, resolved against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for t in targets:
            # `import a.b.c` names module a.b.c; keep the longest project module it names
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _room(name: str) -> str:
    if name in INTERFACES:
        return "interface"
    for room in ("envs", "models", "controllers"):
        if name == f"metasym_control.{room}" or name.startswith(f"metasym_control.{room}."):
            return room
    return "wiring"


def _allowed(src: str, dst: str) -> bool:
    """The documented arrows (docs/ARCHITECTURE.md)."""
    a, b = _room(src), _room(dst)
    if a == "wiring":
        return True
    if b == "interface":
        return True
    if a == "interface":
        return False  # interfaces know only interfaces
    if a == b:
        return True
    if a == "models" and b == "envs":
        # physics and parameters, never the Gymnasium face or a package re-exporting it
        return not _is_package(dst) and dst.rpartition(".")[2] not in ENV_FACES
    return False


def test_the_scan_sees_the_project() -> None:
    # a scan that found nothing would pass every rule below
    assert "metasym_control.dynamics" in MODULES
    assert "metasym_control.controllers.mppi" in MODULES
    assert "metasym_control.dynamics" in GRAPH["metasym_control.controllers.mppi"]
    assert sum(len(v) for v in GRAPH.values()) > 100


@pytest.mark.parametrize("src", sorted(MODULES))
def test_arrows_point_the_documented_way(src: str) -> None:
    bad = sorted(dst for dst in GRAPH[src] if not _allowed(src, dst))
    assert not bad, f"{src} ({_room(src)}) imports {bad}, against docs/ARCHITECTURE.md"


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_the_rules_catch_a_violation() -> None:
    # the checker itself: a controller importing a model, an interface importing the wiring,
    # a model importing an env's Gymnasium face and a two-module cycle are all caught
    assert not _allowed("metasym_control.controllers.mppi", "metasym_control.models.metasym")
    assert not _allowed("metasym_control.dynamics", "metasym_control.closed_loop")
    assert not _allowed("metasym_control.models.x", "metasym_control.envs.quadrotor.env")
    assert _allowed("metasym_control.demo", "metasym_control.models.metasym")
    saved = dict(GRAPH)
    try:
        GRAPH["metasym_control.dynamics"] = {
            *GRAPH["metasym_control.dynamics"],
            "metasym_control.controller",
        }
        GRAPH["metasym_control.controller"] = {
            *GRAPH["metasym_control.controller"],
            "metasym_control.dynamics",
        }
        assert any("metasym_control.dynamics" in c for c in _cycles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
