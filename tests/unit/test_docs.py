"""The documentation site: generated reference pages are current and `mkdocs build --strict` passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.reference import PAGES

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_generated_reference_page_is_current(name: str, request: pytest.FixtureRequest) -> None:
    expected = PAGES[name]()
    if request.config.getoption("--update-golden"):
        (REFERENCE / name).write_text(expected)
    assert (REFERENCE / name).read_text() == expected, (
        f"docs/reference/{name} is stale: run `python -m kiln.reference docs/reference`")


def test_reference_names_every_field_and_command() -> None:
    crd_page, cli_page = PAGES["crds.md"](), PAGES["cli.md"]()
    for field in ("spec.engine.maxSeqLen", "spec.autoscaling.scaleDownStabilizationSeconds",
                  "spec.model.credentials.secretName"):
        assert f"### `{field}`" in crd_page
    assert "default `8192`" in crd_page
    for command in ("crds", "plan", "render", "simulate", "run", "demo"):
        assert f"## kiln {command}" in cli_page
    assert "3 verdict unknown" in cli_page


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
         "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "crds" / "index.html").exists()


def test_readme_links_resolve() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", readme)
    assert targets
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing


def test_demo_page_shows_the_current_transcript() -> None:
    transcript = (ROOT / "tests" / "golden" / "demo.txt").read_text()
    assert transcript in (ROOT / "docs" / "demo.md").read_text(), (
        "docs/demo.md: paste tests/golden/demo.txt into its transcript block")
