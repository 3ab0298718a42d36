"""`kiln simulate`: trace loading, the replay, and the CLI's JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kiln.errors import SpecInvalid
from kiln.sim import load_trace

from ..conftest import ROOT

FIELDS = {"gpuHours", "sloAttainment", "ttftP50Ms", "ttftP99Ms", "tpotP99Ms", "scaleEvents", "maxReplicas"}


def _trace(tmp_path, rows):
    path = tmp_path / "trace.csv"
    path.write_text("timestamp_s,input_tokens,output_tokens\n" + "".join(f"{t},{i},{o}\n" for t, i, o in rows))
    return path


def test_plain_csv_and_scaling(tmp_path):
    path = _trace(tmp_path, [(10, 100, 20), (12, 200, 30)])
    requests = load_trace(path, rate_scale=2, time_scale=2)
    assert [r.arrival for r in requests][::2] == [0.0, 4.0] and len(requests) == 4


def test_bad_trace_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SpecInvalid, match="--trace: x.csv has columns"):
        load_trace(path)


def test_simulate_json_for_every_policy(tmp_path):
    # A burst that needs more than one replica, then quiet.
    rows = [(t * 0.02, 3000, 400) for t in range(30000)]
    path = _trace(tmp_path, rows)
    result = subprocess.run([sys.executable, "-m", "kiln", "simulate", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"),
                             "--trace", str(path), "-o", "json", "--cold-start", "30"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    policies = json.loads(result.stdout)["policies"]
    assert set(policies) == {"kiln", "hpa", "static"}
    for figures in policies.values():
        assert FIELDS <= set(figures)
    assert policies["kiln"]["maxReplicas"] > 1


def test_metrics_outage_flag_is_checked(tmp_path):
    path = _trace(tmp_path, [(0, 10, 10)])
    result = subprocess.run([sys.executable, "-m", "kiln", "simulate", "-f", str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml"),
                             "--trace", str(path), "--metrics-outage", "soon"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--metrics-outage" in result.stderr
