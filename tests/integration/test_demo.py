"""`kiln demo`'s autoscaling act: a recorded trace replayed through the simulated Triton
metrics drives the real operator's builtin autoscaler up and back down."""

from __future__ import annotations

import io
import re
import shutil

import pytest

from kiln.demo.run import Replay, run_demo

from ..conftest import ROOT

pytestmark = pytest.mark.emulator_only("kiln demo embeds the emulator")


async def test_replayed_trace_scales_the_example_up_and_down(tmp_path):
    shutil.copy(ROOT / "examples" / "llama-3.1-8b-fp8.yaml", tmp_path)
    (tmp_path / "traces").mkdir()
    shutil.copy(ROOT / "examples" / Replay.trace, tmp_path / "traces")
    out = io.StringIO()
    # Twice the demo's speed, so the test takes half as long; the operator's periods follow.
    code = await run_demo(tmp_path, out=out, timeout=60, replay=Replay(speed=60.0))
    text = out.getvalue()
    assert code == 0, text
    ups = re.findall(r"event ScaledUp: .*scaling up 1 -> (\d)", text)
    downs = re.findall(r"event ScaledDown: .*scaling down (\d) -> (\d)", text)
    assert ups and int(ups[0]) > 1, text
    assert downs and downs[-1][1] == "1", text
    # Scale-down waits out the stabilisation: nothing comes down while the bursts last.
    first_down = re.search(r"(\d\d):(\d\d)  event ScaledDown", text)
    assert first_down and int(first_down[1]) * 60 + int(first_down[2]) > 300, text
    assert "back down to 1" in text
