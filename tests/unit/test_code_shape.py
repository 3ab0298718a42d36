"""How the code reads, checked: ruff's rules (pyproject.toml) hold, every module says what it
exports with an ``__all__`` that names only what it defines or imports, and no function of the
controller is longer than fifty lines."""

from __future__ import annotations

import ast
import subprocess
import sys

from ..conftest import ROOT

SOURCES = ("operator/kiln", "runtime/kiln_runtime")


def _modules() -> list:
    return sorted(path for top in SOURCES for path in (ROOT / top).rglob("*.py")
                  if path.name not in ("__main__.py",) and "__pycache__" not in path.parts)


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "operator", "runtime",
                             "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def _exports(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            return [ast.literal_eval(element) for element in node.value.elts]  # type: ignore[attr-defined]
    return None


def _defined(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name))
    return names


def test_every_module_declares_what_it_exports():
    """A package's ``__init__`` that only marks a directory may go without."""
    missing, unknown = [], []
    for path in _modules():
        tree = ast.parse(path.read_text(), str(path))
        exports = _exports(tree)
        where = str(path.relative_to(ROOT))
        if exports is None:
            if path.name != "__init__.py" or len(tree.body) > 1:
                missing.append(where)
            continue
        unknown += [f"{where}: {name}" for name in exports if name not in _defined(tree)]
    assert missing == []
    assert unknown == []


def test_no_controller_function_is_longer_than_fifty_lines():
    """The operator's edges (controller/) and its decision (decide/) read in small pieces."""
    long = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for top in ("operator/kiln/controller", "operator/kiln/decide") for path in (ROOT / top).glob("*.py")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 50]
    assert long == []
