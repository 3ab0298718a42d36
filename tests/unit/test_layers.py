"""The seams: pure layers stay pure (import-linter contracts in pyproject.toml) and type-check
under ``mypy --strict``, and every source directory is a package that a non-editable install
ships."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import ROOT


def test_import_contracts_hold():
    result = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                             "sys.exit(lint_imports_command(['--no-cache']))"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_every_source_directory_is_a_package():
    missing = [str(d.relative_to(ROOT)) for top in ("operator/kiln", "runtime/kiln_runtime")
               for d in [ROOT / top, *(ROOT / top).rglob("*")]
               if d.is_dir() and d.name not in ("__pycache__", "data") and any(d.glob("*.py"))
               and not (d / "__init__.py").exists()]
    assert missing == []


PURE = ("api", "planner", "render", "decide", "autoscale", "sim")


def test_pure_layers_type_check_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                             "--cache-dir", str(tmp_path), *(f"kiln/{name}" for name in PURE)],
                            cwd=ROOT / "operator", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
