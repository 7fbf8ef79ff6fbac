"""The package's shape (issue 15): layers import downward only, no circle (lazy imports included),
small modules, a ``Compose`` that only composes, and no executor dispatching on transform classes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gpuaug"

# A subpackage may import its own and lower ranks only (the top-level package and the old-path aliases sit above all).
RANKS = {"functional": 0, "io": 0, "fusion": 1, "transforms": 2, "interop": 3, "loader": 4, "tools": 4}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every gpuaug module ``path`` imports, at the top or inside a function (``from a import b`` counts ``a.b`` if a module)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules}
            found.update(submodules or {base})  # ``from gpuaug import transforms``: the submodule, not the package
    return {module for module in found if module in modules and module != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _rank(module: str) -> int | None:
    parts = module.split(".")
    return RANKS.get(parts[1]) if len(parts) > 1 else None


def test_no_import_circle():
    graph, state, path = _graph(), {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(target) :] + [target]))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_layers_import_downward_only():
    wrong = [
        f"{module} ({_rank(module)}) imports {target} ({_rank(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _rank(module) is not None and _rank(target) is not None and _rank(target) > _rank(module)
    ]
    assert wrong == []


def test_every_subpackage_says_what_it_owns():
    for name in RANKS:
        doc = ast.get_docstring(ast.parse((ROOT / name / "__init__.py").read_text())) or ""
        assert len(doc.split()) >= 30, f"gpuaug.{name} needs a paragraph saying what it owns and may import"


def test_modules_stay_small_and_compose_only_composes():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines()) for path in ROOT.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > 620} == {}
    tree = ast.parse((ROOT / "transforms" / "compose.py").read_text())
    compose = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Compose")
    assert compose.end_lineno - compose.lineno + 1 <= 200


def test_no_dispatch_on_transform_classes_outside_interop():
    """Executors, the loader and the tools read roles, plans and descriptions; only the interop adapters
    (which convert other libraries' classes) and a transform's own module test gpuaug op classes."""
    import gpuaug.transforms as T

    ops = {name for name in dir(T) if isinstance(getattr(T, name), type) and name not in ("Transform", "Compose", "BatchInfo")}
    found = []
    for path in ROOT.rglob("*.py"):
        if path.parent.name == "interop":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                names = {ast.unparse(item) for item in getattr(node.args[1], "elts", [node.args[1]])}
                if any(name in names for op in ops for name in (op, f"T.{op}", f"ga.{op}", f"transforms.{op}")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
