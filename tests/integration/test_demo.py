"""`kiln demo` as a newcomer runs it: from any directory, the same lines on every run (a
simulated clock), within 100 columns and 60 lines, the autoscaler scaling the example up on
the trace's bursts and back down. ``--update-golden`` rewrites the transcript."""

from __future__ import annotations

import logging
import re

import pytest

from kiln.cli import main

from ..conftest import ROOT

pytestmark = pytest.mark.emulator_only("kiln demo embeds the emulator")

GOLDEN = ROOT / "tests" / "golden" / "demo.txt"


@pytest.fixture(autouse=True)
def _log_levels():
    """`kiln demo` quiets kopf's and aiohttp's loggers for its process; not for later tests."""
    loggers = [logging.getLogger(name) for name in ("kopf", "aiohttp")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels):
        logger.setLevel(level)


def test_demo_transcript_is_the_golden_one(tmp_path, monkeypatch, capsys, request):
    monkeypatch.chdir(tmp_path)  # the examples ship with the package
    code = main(["demo"])
    text = capsys.readouterr().out
    assert code == 0, text
    lines = text.splitlines()
    assert len(lines) < 60, text
    assert max(len(line) for line in lines) <= 100, text
    # Scale-up first on the bursts, scale-down one replica at a time, never inside the
    # stabilisation window, and back to 1 at the end.
    ups = re.findall(r"(\d\d):(\d\d)  ScaledUp: .*scaling up 1 -> (\d)", text)
    downs = re.findall(r"(\d\d):(\d\d)  ScaledDown: .*scaling down (\d) -> (\d)", text)
    assert ups and int(ups[0][2]) > 1, text
    assert downs and downs[-1][3] == "1", text
    first_up, first_down = ups[0], downs[0]
    assert (int(first_down[0]) * 60 + int(first_down[1])) - (int(first_up[0]) * 60 + int(first_up[1])) > 300
    assert all(int(a) - int(b) == 1 for *_, a, b in downs)
    # The table is the CRD's printer columns.
    assert re.search(r"^NAME +READY +REASON +REPLICAS +GPUS +PRECISION +TPXPP +KV-UTIL +AGE$",
                     text, re.M), text
    assert "scaleDownStabilizationSeconds\":300" in text
    if request.config.getoption("--update-golden"):
        GOLDEN.write_text(text)
    assert GOLDEN.read_text() == text, "the demo's output changed: rerun with --update-golden and review"


def test_demo_reports_a_folder_without_services(tmp_path, capsys):
    assert main(["demo", "--examples", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --examples: no LLMService manifests in {tmp_path}"


def test_a_service_that_cannot_go_on_ends_the_wait_and_says_why(tmp_path, capsys):
    """A stalled service waits for a change to its manifest, not for time: the demo stops
    waiting once every service is Ready or stalled, and prints each stall's reason and
    message, well within its --timeout."""
    example = (ROOT / "examples" / "mistral-7b-fp16.yaml").read_text()
    (tmp_path / "big.yaml").write_text(example.replace("name: mistral-7b", "name: too-big").replace(
        "mistralai/Mistral-7B-Instruct-v0.3", "meta-llama/Llama-3.1-70B-Instruct"))
    assert main(["demo", "--examples", str(tmp_path), "--timeout", "600"]) == 1
    out = capsys.readouterr().out
    assert "Not every service became Ready; it cannot go on without a change to its manifest:" in out
    assert "  llmservice/too-big (DoesNotFit): does not fit: weights" in out
