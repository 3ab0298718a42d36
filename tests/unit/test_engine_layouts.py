"""The three layouts whose engines failed to load or build in NVIDIA's images: 4 GPUs per node,
Blackwell (SM100), weight streaming. For each, the engine config.json the dry run predicts is
checked, and a build with the fake tools (which copy the checkpoint's mapping and resolve the
plugins as trtllm-build does) publishes exactly that. Also: the timing cache in a read-only
image working directory, and --workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from kiln.api import parse_service_spec
from kiln.render.engine import build_spec, engine_for
from kiln_runtime import build
from kiln_runtime.spec import parse_build_spec

from ..conftest import ROOT
from ..support import fake_trtllm
from ..support.planning import planned

FOUR_GPU_NODES = yaml.safe_load(
    (ROOT / "examples" / "llama-3.1-70b-bf16-4gpu-nodes-rdma.yaml").read_text())["spec"]
LAYOUTS = {
    "per-node-4": FOUR_GPU_NODES,
    "sm100-nvfp4": {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                    "precision": "nvfp4", "gpu": {"type": "B200-180GB"}},
    "weight-streaming": {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                         "precision": "fp8", "engine": {"weightStreaming": True}},
}


def _build_spec(service: dict, tmp_path) -> dict:
    spec = parse_service_spec(service)
    result, gpu = planned(spec)
    assert result.fits, result.reasons
    raw = build_spec(engine_for(spec, result, gpu, "llm"), result.build)
    model = fake_trtllm.tiny_model(tmp_path / "models" / "tiny")
    return {**raw, "model": {"source": str(model), "revision": "main"},
            "cacheDir": str(tmp_path / "cache"), "workDir": str(tmp_path / "work")}


def _build(tmp_path, raw: dict) -> subprocess.CompletedProcess[str]:
    """kiln-runtime build with the fakes, started in a directory uid 1000 could not write."""
    env = {**os.environ, **fake_trtllm.install(tmp_path / "fakes"),
           "KILN_BUILD_SPEC": json.dumps(raw),
           "KILN_TERMINATION_LOG": str(tmp_path / "termination-log"),
           "KILN_FAKE_WRITABLE": f"{tmp_path / 'cache'}:{tmp_path / 'work'}"}
    image_workdir = tmp_path / "opt-tritonserver"
    image_workdir.mkdir()
    return subprocess.run([sys.executable, "-m", "kiln_runtime", "build"], env=env,
                          cwd=image_workdir, capture_output=True, text=True, timeout=120)


def _subset(actual: dict, predicted: dict, path: str = "") -> None:
    for key, value in predicted.items():
        assert key in actual, f"{path}{key} missing from the built config.json"
        if isinstance(value, dict):
            _subset(actual[key], value, f"{path}{key}.")
        else:
            assert actual[key] == value, f"{path}{key}: built {actual[key]!r}, predicted {value!r}"


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_built_engine_config_is_the_predicted_one(layout, tmp_path):
    raw = _build_spec(LAYOUTS[layout], tmp_path)
    config = json.loads((tmp_path / "models" / "tiny" / "config.json").read_text())
    predicted = build.dry_run(parse_build_spec(raw), config)["engineConfig"]
    result = _build(tmp_path, raw)
    assert result.returncode == 0, result.stdout + result.stderr
    built = json.loads((tmp_path / "cache" / raw["engineKey"] / "engine" / "config.json").read_text())
    _subset(built, predicted)
    pretrained, build_config = predicted["pretrained_config"], predicted["build_config"]
    if layout == "per-node-4":
        # what WorldConfig::mpi checks against the GPUs it finds on each node
        assert pretrained["mapping"] == {"world_size": 8, "tp_size": 4, "pp_size": 2,
                                         "gpus_per_node": 4}
    elif layout == "sm100-nvfp4":
        assert pretrained["quantization"]["quant_algo"] == "NVFP4"
        assert build_config["plugin_config"]["gemm_plugin"] == "nvfp4"
    else:
        assert build_config["weight_streaming"] is True
        assert build_config["plugin_config"]["gemm_plugin"] is None  # non-plugin weights
        assert pretrained["quantization"]["quant_algo"] == "FP8"


def test_single_node_engines_keep_the_default_mapping(tmp_path):
    raw = _build_spec(LAYOUTS["weight-streaming"], tmp_path)
    assert "gpusPerNode" not in raw
    steps = build.dry_run(parse_build_spec(raw), {"architectures": ["LlamaForCausalLM"]})["steps"]
    assert "mapping" not in [s["name"] for s in steps]


def test_the_fake_build_fails_like_trtllm_build_without_a_writable_timing_cache(tmp_path):
    """What every build did before: no --output_timing_cache, started in the image's working
    directory, so rank 0 cannot save model.cache (builder.py: assert ok)."""
    raw = _build_spec(LAYOUTS["weight-streaming"], tmp_path)
    config = json.loads((tmp_path / "models" / "tiny" / "config.json").read_text())
    dry = build.dry_run(parse_build_spec(raw), config)
    engine = next(s for s in dry["steps"] if s["name"] == "engine")
    assert engine["cwd"] == raw["workDir"]
    cache_flag = engine["argv"].index("--output_timing_cache")
    assert engine["argv"][cache_flag + 1] == f"{raw['workDir']}/model.cache"
    checkpoint = tmp_path / "ckpt"
    fake_trtllm.install(tmp_path / "fakes")
    env = {**os.environ, "KILN_FAKE_WRITABLE": str(tmp_path / "work")}
    subprocess.run([sys.executable, str(tmp_path / "fakes/examples/quantization/quantize.py"),
                    "--model_dir", str(tmp_path / "models" / "tiny"), "--output_dir", str(checkpoint),
                    "--qformat", "fp8"], env=env, check=True, capture_output=True)
    old_argv = [a for i, a in enumerate(engine["argv"]) if i not in (cache_flag, cache_flag + 1)]
    old_argv[old_argv.index("--checkpoint_dir") + 1] = str(checkpoint)
    old_argv[old_argv.index("--output_dir") + 1] = str(tmp_path / "work" / "engine")
    (tmp_path / "opt-tritonserver").mkdir()
    result = subprocess.run([str(tmp_path / "fakes/bin/trtllm-build"), *old_argv[1:]], env=env,
                            cwd=tmp_path / "opt-tritonserver", capture_output=True, text=True)
    assert result.returncode == 1 and "Failed to save timing cache" in result.stdout


@pytest.mark.parametrize("visible", ["all", "GPU-8a1b2c3d-0000-1111-2222-333344445555", ""])
def test_workers_is_the_world_size_whatever_the_visible_devices_say(visible, tmp_path, monkeypatch):
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", visible)
    raw = _build_spec({"model": {"source": "hf://meta-llama/Llama-3.1-70B-Instruct"},
                       "precision": "fp8", "gpus": 4}, tmp_path)
    dry = build.dry_run(parse_build_spec(raw), {"architectures": ["LlamaForCausalLM"],
                                                "num_attention_heads": 64, "num_key_value_heads": 8})
    engine = next(s["argv"] for s in dry["steps"] if s["name"] == "engine")
    assert engine[engine.index("--workers") + 1] == "4"
