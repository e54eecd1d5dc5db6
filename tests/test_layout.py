"""The house rules of the layout (README "Layout and data flow"), checked on the source itself:

- each room imports only rooms upstream of it (ROOMS, in data-flow order), and nothing in the product
  imports the test rigs in tools/;
- no module-level import circle anywhere in the product or tools/;
- no source file is longer than MAX_LINES (generated data aside).
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.conftest import REPO

# Data flows one way: spec -> placement -> clusters -> workloads -> checks, then hybridml's own rooms.
ROOMS = (
    "infra",
    "policies.placement",
    "clusters",
    "datacenter",
    "workloads",
    "policies.rules",
    "policies.facts",
    "policies.crossguard",
    "policies.pack",
    "hybridml.stack",
    "hybridml.program",
    "hybridml.local",
    "hybridml.ops",
    "hybridml.cli",
    "tools",
)
PACKAGES = ("infra", "policies", "clusters", "workloads", "datacenter", "hybridml", "tools")
PACKAGE_ROOTS = {"policies", "hybridml"}   # package __init__ files that only document their rooms
MAX_LINES = 600
LONG_FILES_ALLOWED: dict[str, str] = {}     # path -> why (none today)


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the product modules it imports (relative imports resolved; `from pkg import mod` counts mod)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    package = package[:len(package) - (node.level - 1)]
                    base = ".".join(package + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = subs or [base]
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def _room(module: str) -> str:
    for room in sorted(ROOMS, key=len, reverse=True):
        if module == room or module.startswith(room + "."):
            return room
    return module


def test_every_module_belongs_to_a_room() -> None:
    strays = sorted(m for m in _modules() if _room(m) not in ROOMS and m not in PACKAGE_ROOTS)
    assert strays == [], f"modules outside every room of ROOMS: {strays}"


def test_rooms_import_only_rooms_upstream() -> None:
    modules = _modules()
    rank = {room: i for i, room in enumerate(ROOMS)}
    bad = []
    for module, targets in _imports(modules).items():
        for target in targets:
            src, dst = _room(module), _room(target)
            if dst in PACKAGE_ROOTS or src == dst:
                continue
            if rank.get(dst, -1) > rank.get(src, -1):
                bad.append(f"{module} -> {target} ({src} may not import {dst}, downstream of it)")
    assert bad == [], "\n".join(bad)


def test_no_import_circle() -> None:
    modules = _modules()
    edges = _imports(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w in PACKAGE_ROOTS:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    assert circles == [], f"import circles: {circles}"


def test_the_rules_see_a_violation() -> None:
    """The checks above are not vacuous: a downstream import and a circle are found in a made-up graph."""
    assert _room("hybridml.ops.rollout") == "hybridml.ops" and _room("policies.placement.solver") == "policies.placement"
    rank = {room: i for i, room in enumerate(ROOMS)}
    assert rank[_room("workloads.stack")] > rank[_room("clusters.sizing")]   # clusters may not import workloads
    assert len(_imports(_modules())["hybridml.cli.app"]) > 5


def test_no_source_file_is_too_long() -> None:
    long = []
    for folder in (*PACKAGES, "scripts", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            n = len(path.read_text().splitlines())
            if n > MAX_LINES and rel not in LONG_FILES_ALLOWED:
                long.append(f"{rel}: {n} lines")
    assert long == [], f"files over {MAX_LINES} lines: {long}"
