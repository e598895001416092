"""The house rules of docs/ARCHITECTURE.md, read from the code: no import circle, no import running upward.

Every import counts, the ones inside functions too (a lazy import still ties two modules together).
`from package import module` is an import of that module, not of the package's __init__.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tagcons"
MAX_LINES = 450  # a longer module is split by what it does (as tagcons/cli/ is by command group)
# Rooms by floor (docs/ARCHITECTURE.md): a module imports only from its own room or a lower floor.
FLOORS = {
    "ground": 0,  # errors, labels, runtime, distributed, configs, lazy, invisible, outputs
    "data": 1,
    "cache": 2,
    "evaluate": 2,
    "heads": 3,
    "embed": 3,
    "audit": 4,
    "finetune": 4,
    "posts": 4,
    "demo": 5,
    "cli": 6,  # the cli package: common.py below one module per command group, entry.py (main) on top
    "__main__": 7,  # python -m tagcons: runs the cli
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tagcons"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            targets |= submodules or {node.module}
        elif isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name.startswith("tagcons")}
    return {t for t in targets if t in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:  # tagcons/__init__.py
        return "ground"
    if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir():
        return parts[1]
    return parts[1] if parts[1] in FLOORS else "ground"


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start, if the imports hold one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for target in graph[node]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_no_module_imports_itself_through_others():
    graph = _graph()
    circles = [cycle for cycle in (_cycle_from(m, graph) for m in sorted(graph)) if cycle]
    assert not circles, " ; ".join(" -> ".join(c) for c in circles[:3])


def test_imports_point_down_the_floors_only():
    upward = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if FLOORS[_room(target)] > FLOORS[_room(module)]
        or (FLOORS[_room(target)] == FLOORS[_room(module)] and _room(target) != _room(module))
    ]
    assert not upward, upward


def test_every_room_has_a_floor():
    assert {_room(module) for module in _graph()} <= set(FLOORS)


def test_the_checks_see_a_circle_and_an_upward_import():
    graph = {"tagcons.a": {"tagcons.b"}, "tagcons.b": {"tagcons.a"}}
    assert _cycle_from("tagcons.a", graph) == ["tagcons.a", "tagcons.b", "tagcons.a"]
    assert FLOORS[_room("tagcons.heads.fit")] > FLOORS[_room("tagcons.data.pairs")]
    assert _room("tagcons.cli") == "cli" == _room("tagcons.cli.common") and _room("tagcons.errors") == "ground"


def test_no_module_is_over_the_line_limit():
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
