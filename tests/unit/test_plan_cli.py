"""`kiln plan`: the verdict before any GPU time is spent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from kiln.api import Precision

from ..conftest import EXAMPLES, ROOT


def _kiln(*args):
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True, timeout=60)


def _manifest(tmp_path, **spec):
    base = yaml.safe_load((ROOT / "examples" / "llama-3.1-70b-fp8-tp4.yaml").read_text())
    base["spec"].update(spec)
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_plan_on_every_example(path):
    result = _kiln("plan", "-f", str(path), "-o", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["fits"] is True
    assert {"tensorParallel", "pipelineParallel", "weightBytesPerGpu", "kvBytesPerTokenPerGpu",
            "kvCacheTokens", "maxConcurrentSequences", "reasons"} <= set(plan)


def test_70b_bf16_on_one_80gb_gpu_exits_1_with_shortfall_and_suggestion(tmp_path):
    path = _manifest(tmp_path, precision="bf16", gpus=1, parallelism={"tensor": "auto", "pipeline": "auto"})
    result = _kiln("plan", "-f", str(path))
    assert result.returncode == 1
    assert "GiB short" in result.stdout and "would fit with gpus: 2" in result.stdout


def test_malformed_model_config_exits_2(tmp_path):
    config = tmp_path / "config.json"
    config.write_text("{not json")
    result = _kiln("plan", "-f", str(_manifest(tmp_path)), "--model-config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith("error: --model-config") and "Traceback" not in result.stderr


def test_compare_shows_every_supported_precision(tmp_path):
    result = _kiln("plan", "-f", str(ROOT / "examples" / "llama-3.1-70b-fp8-tp4.yaml"), "--compare", "-o", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["precision"]: row for row in json.loads(result.stdout)["precisions"]}
    assert set(rows) == {p.value for p in Precision}
    assert rows["bf16"]["relativeDecodeSpeed"] == 1.0
    assert rows["fp8"]["weightGiBPerGpu"] < rows["bf16"]["weightGiBPerGpu"] / 1.8
    assert rows["int4-awq"]["fewestGpus"] <= rows["fp8"]["fewestGpus"] <= rows["bf16"]["fewestGpus"]
    assert rows["nvfp4"]["fits"] is False  # H100 has no FP4 tensor cores
    text = _kiln("plan", "-f", str(ROOT / "examples" / "llama-3.1-70b-fp8-tp4.yaml"), "--compare")
    assert "calibration" in text.stdout and "FEWEST GPUS" in text.stdout


def test_70b_on_one_24gb_gpu_lists_weight_streaming(tmp_path):
    path = _manifest(tmp_path, gpus=1, gpu={"type": "L4"}, parallelism={"tensor": "auto", "pipeline": "auto"})
    result = _kiln("plan", "-f", str(path))
    assert result.returncode == 1
    assert "engine.weightStreaming: true" in result.stdout and "throughput drops sharply" in result.stdout


def test_planner_benchmark_prints_json():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "planner.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["accuracy"]["kvExact"] is True
    assert {"planMs", "baselineParseMs", "planToBaselineRatio", "meetsTarget"} <= set(report["speed"])
