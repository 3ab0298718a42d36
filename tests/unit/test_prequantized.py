"""A source whose weights are already quantized (``quantization_config`` in its config.json).

Kiln quantizes a 16-bit checkpoint itself; of the already-quantized ones it builds only Meta's
FP8 Llama (fbgemm_fp8), which the Llama converter reads as FP8 row-wise by itself
(kiln_runtime.support.ROWWISE_FP8_SOURCE). Every other one is refused before a Job exists, by
the planner, and again by ``kiln-runtime build`` before any download, naming model.source."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from kiln.api.validation import parse_service_spec
from kiln.planner import ModelConfig, catalog_config
from kiln.planner.build import FP8_ROWWISE
from kiln.render.engine import build_spec, engine_for
from kiln_runtime import build, support
from kiln_runtime.errors import BadSpec
from kiln_runtime.spec import parse_build_spec

from ..support import fake_trtllm
from ..support.planning import planned
from .test_runtime_build import _check_against_reference

LLAMA_8B = catalog_config("meta-llama/Llama-3.1-8B-Instruct")
META_FP8 = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
            "modules_to_not_convert": ["lm_head"]}


def _config(quantization):
    raw = copy.deepcopy(LLAMA_8B)
    raw["quantization_config"] = quantization
    return raw


def _planned(raw, precision="fp8", gpu="H100-80GB"):
    spec = parse_service_spec({"model": {"source": "hf://someone/llama-quantized"}, "precision": precision,
                               "gpu": {"type": gpu}})
    result, found = planned(spec, ModelConfig.from_hf(raw))
    return spec, result, found


def test_what_a_config_says_its_weights_are():
    assert support.prequantized(LLAMA_8B) is None
    assert support.prequantized(_config(META_FP8)) == "fbgemm_fp8"
    assert support.prequantized(_config({"quant_method": "awq", "bits": 4})) == "awq"
    assert support.prequantized(_config({"bits": 4})) == "unnamed"
    assert support.prequantized(_config(None)) is None
    # The Hub repository is the tenant's choice: what is read of it is bounded and printable.
    assert support.prequantized(_config({"quant_method": "x\n\x1b[31m" + "y" * 500})) == "x[31m" + "y" * 35


@pytest.mark.parametrize("method", ["modelopt", "awq", "gptq", "compressed-tensors", "bitsandbytes"])
def test_an_already_quantized_source_is_refused_before_a_job_exists(method):
    _, result, _ = _planned(_config({"quant_method": method}))
    assert result.fits is False and not result.buildable
    [reason] = [r for r in result.reasons if r.startswith("model.source:")]
    assert f"quant_method: {method}" in reason and "16-bit original" in reason


def test_meta_fp8_is_built_row_wise_by_the_llama_converter():
    spec, result, gpu = _planned(_config(META_FP8))
    assert result.fits and result.buildable and result.build.recipe == FP8_ROWWISE
    # 8 bits a weight to download and no calibration pass in host memory.
    _, sixteen_bit, _ = _planned(LLAMA_8B, precision="bf16")
    assert result.build.scratch_bytes < sixteen_bit.build.scratch_bytes
    raw = build_spec(engine_for(spec, result, gpu, "llm"))
    checkpoint = build.dry_run(parse_build_spec(raw), _config(META_FP8))["steps"][1]["argv"]
    assert checkpoint[1].endswith("/models/core/llama/convert_checkpoint.py")
    assert {"--use_fp8_rowwise", "--load_by_shard"} <= set(checkpoint)
    _check_against_reference(checkpoint)


@pytest.mark.parametrize("precision", ["bf16", "int4-awq"])
def test_meta_fp8_is_built_only_at_fp8(precision):
    _, result, _ = _planned(_config(META_FP8), precision=precision)
    assert not result.buildable
    assert any("only at precision: fp8" in r for r in result.reasons)


def test_meta_fp8_is_refused_where_row_wise_scaling_is():
    _, result, _ = _planned(_config(META_FP8), gpu="B200-180GB")
    assert not result.buildable and any("sm100" in r for r in result.reasons)


def test_the_runtime_refuses_them_too_before_any_download():
    spec, result, gpu = _planned(LLAMA_8B)  # a spec written for a 16-bit model
    raw = build_spec(engine_for(spec, result, gpu, "llm"))
    with pytest.raises(BadSpec, match="quant_method: awq"):
        build.dry_run(parse_build_spec(raw), _config({"quant_method": "awq"}))
    with pytest.raises(BadSpec, match="checkpointRecipe: the model's weights are Meta's FP8"):
        build.dry_run(parse_build_spec(raw), _config(META_FP8))



def test_a_quantization_written_beside_config_json_is_refused_before_the_checkpoint_step(tmp_path):
    """Older ModelOpt exports say it only in hf_quant_config.json: seen once the files are
    there (downloaded or mounted), before quantize.py would load them on the GPUs."""
    calls, log = tmp_path / "calls.jsonl", tmp_path / "termination-log"
    env = {**os.environ, **fake_trtllm.install(tmp_path / "fakes"), "KILN_FAKE_CALLS": str(calls),
           "KILN_TERMINATION_LOG": str(log)}
    model = fake_trtllm.tiny_model(tmp_path / "models" / "tiny")
    (model / "hf_quant_config.json").write_text(json.dumps({"quantization": {"quant_algo": "FP8"}}))
    spec = {"engineKey": "cd" * 32, "engineName": "tiny-0123456789",
            "model": {"source": str(model), "revision": "main"}, "precision": "fp8", "kvCacheDtype": "fp8",
            "tensorParallel": 1, "pipelineParallel": 1, "gpuArch": "sm90", "toolchain": "tensorrt-llm==1.2.1",
            "limits": {"maxBatchSize": 8, "maxInputLen": 512, "maxSeqLen": 1024, "maxNumTokens": 1024,
                       "tokensPerBlock": 32},
            "cacheDir": str(tmp_path / "cache"), "workDir": str(tmp_path / "work")}
    result = subprocess.run([sys.executable, "-m", "kiln_runtime", "build"],
                            env={**env, "KILN_BUILD_SPEC": json.dumps(spec)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: step 'checkpoint' failed: model.source: its weights are already quantized (hf_quant_config.json)")
    assert not calls.exists()  # quantize.py never ran
    assert json.loads(log.read_text())["step"] == "checkpoint"
