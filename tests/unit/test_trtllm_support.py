"""What TensorRT-LLM 1.2.1 can build, end to end: every catalog architecture x precision x KV
dtype x GPU type the planner accepts dry-runs into command lines the recorded CLIs take;
what it refuses the runtime refuses too, before any download."""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import pytest
import yaml

from kiln.api import Precision, parse_service_spec
from kiln.planner import GPU_CATALOG, ModelConfig, load_catalog
from kiln.render.engine import build_spec, engine_for
from kiln_runtime import build, image
from kiln_runtime.errors import BadSpec
from kiln_runtime.spec import parse_build_spec

from .test_runtime_build import _check_against_reference
from ..support.planning import planned

KV_DTYPES = ("auto", "fp16", "bf16", "fp8", "int8")


@cache
def _models() -> dict[str, tuple[str, dict]]:
    """The smallest catalog model of each architecture."""
    out: dict[str, tuple[str, dict]] = {}
    for name, config in load_catalog().items():
        model = ModelConfig.from_hf(config)
        best = out.get(model.architecture)
        if best is None or model.hf_param_count < ModelConfig.from_hf(best[1]).hf_param_count:
            out[model.architecture] = (name, config)
    return out


def _service(name: str, **spec):
    raw = {"model": {"source": f"hf://{name}"}, "gpus": 8,
           "engine": {"maxSeqLen": 2048, "maxInputLen": 1024, "maxNumTokens": 2048}, **spec}
    if "engine" in spec:
        raw["engine"] = {"maxSeqLen": 2048, "maxInputLen": 1024, "maxNumTokens": 2048,
                         **spec["engine"]}
    return parse_service_spec(raw)


def _plan_and_build_spec(name, config, **spec):
    parsed = _service(name, **spec)
    result, gpu = planned(parsed)
    return result, build_spec(engine_for(parsed, result, gpu, "llm"), result.build)


@pytest.mark.parametrize("architecture", sorted(_models()))
def test_every_accepted_combination_dry_runs_into_the_recorded_clis(architecture):
    name, config = _models()[architecture]
    accepted = refused = 0
    for gpu in sorted({g.name for g in GPU_CATALOG.values()}):
        for precision in Precision:
            for kv in KV_DTYPES:
                try:
                    result, raw = _plan_and_build_spec(name, config, precision=precision.value,
                                                       kvCacheDtype=kv, gpu={"type": gpu})
                except Exception as error:  # layouts the model cannot take
                    assert "spec." in str(error), error
                    continue
                if result.fits:
                    accepted += 1
                    dry = build.dry_run(parse_build_spec(raw), config)
                    for step in dry["steps"]:
                        argv = step["argv"]
                        if argv[0] != "kiln-runtime":
                            _check_against_reference(argv)
                        assert all(image.covered(a) for a in argv if a.startswith("/")), argv
                elif not result.buildable:
                    refused += 1
                    with pytest.raises(BadSpec):  # the runtime refuses it as well
                        build.dry_run(parse_build_spec(raw), config)
    if architecture in ("Qwen3MoeForCausalLM", "Mistral3ForConditionalGeneration"):
        assert accepted == 0 and refused  # no TensorRT engine path in 1.2.1
    else:
        assert accepted and refused, (architecture, accepted, refused)


def test_qwen_fp8_kv_cache_with_a_converted_precision_is_refused_and_int8_is_routed():
    name, config = _models()["Qwen2ForCausalLM"]
    result, raw = _plan_and_build_spec(name, config, precision="bf16", kvCacheDtype="fp8")
    assert result.fits is False and not result.buildable
    assert "--fp8_kv_cache, which the qwen converter lacks" in result.reasons[0]
    assert "kvCacheDtype: int8" in result.reasons[0]
    with pytest.raises(BadSpec, match="qwen converter lacks"):
        build.dry_run(parse_build_spec(raw), config)
    result, raw = _plan_and_build_spec(name, config, precision="bf16", kvCacheDtype="int8")
    assert result.fits
    checkpoint = build.dry_run(parse_build_spec(raw), config)["steps"][1]["argv"]
    assert checkpoint[1].endswith("/models/core/qwen/convert_checkpoint.py")
    assert "--int8_kv_cache" in checkpoint
    _check_against_reference(checkpoint)
    with pytest.raises(AssertionError, match="convert_checkpoint_qwen has no --fp8_kv_cache"):
        _check_against_reference([*checkpoint, "--fp8_kv_cache"])  # what Kiln used to pass


@pytest.mark.parametrize("precision", ["int8-wo", "int4-wo", "int4-awq", "w4a8-awq", "int8-sq"])
def test_b200_refuses_int8_int4_awq_and_smoothquant_naming_fp8_or_nvfp4(precision):
    name, config = _models()["LlamaForCausalLM"]
    result, raw = _plan_and_build_spec(name, config, precision=precision, gpus=1,
                                       gpu={"type": "B200-180GB"})
    assert result.fits is False and not result.buildable
    assert "SM 100-119" in result.reasons[0] and "use precision: fp8 or nvfp4" in result.reasons[0]
    with pytest.raises(BadSpec, match="cannot be built for sm100"):
        parse_build_spec(raw)
    # the same precision builds on Hopper
    assert _plan_and_build_spec(name, config, precision=precision, gpus=1)[0].buildable


def test_b200_refuses_an_int8_kv_cache():
    name, config = _models()["LlamaForCausalLM"]
    result, _ = _plan_and_build_spec(name, config, precision="fp8", kvCacheDtype="int8", gpus=1,
                                     gpu={"type": "B200-180GB"})
    assert not result.buildable and "use kvCacheDtype: fp8" in result.reasons[0]


def _kiln_plan(tmp_path, **spec):
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
                                    "metadata": {"name": "s", "namespace": "llm"},
                                    "spec": {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"},
                                             **spec}}))
    return subprocess.run([sys.executable, "-m", "kiln", "plan", "-f", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_kiln_plan_names_the_reason_and_a_precision_that_works(tmp_path):
    awq = _kiln_plan(tmp_path, precision="int4-awq", gpu={"type": "B200-180GB"})
    assert awq.returncode == 1
    assert "cannot be built with TensorRT-LLM 1.2.1" in awq.stdout
    assert "use precision: fp8 or nvfp4" in awq.stdout
    streaming = _kiln_plan(tmp_path, precision="int4-wo", engine={"weightStreaming": True})
    assert streaming.returncode == 1
    assert "engine.weightStreaming: needs non-plugin weights" in streaming.stdout
    assert "use precision: bf16, fp8 or nvfp4" in streaming.stdout


@pytest.mark.parametrize("precision", ["int8-wo", "int4-wo", "int4-awq", "w4a8-awq", "int8-sq"])
def test_weight_streaming_is_offered_only_with_non_plugin_weights(precision):
    name, config = _models()["LlamaForCausalLM"]
    result, raw = _plan_and_build_spec(name, config, precision=precision, gpus=1,
                                       engine={"weightStreaming": True})
    assert not result.buildable and "non-plugin weights" in result.reasons[0]
    with pytest.raises(BadSpec, match="weightStreaming"):
        parse_build_spec(raw)
    # and the planner never suggests it for them
    big = _plan_and_build_spec("meta-llama/Llama-3.1-70B-Instruct",
                               load_catalog()["meta-llama/llama-3.1-70b-instruct"],
                               precision=precision, gpus=1, gpu={"type": "L40S"})[0]
    assert not any("weightStreaming: true" in reason for reason in big.reasons)


def test_djl_builds_follow_their_own_toolchain_not_1_2_1s_table():
    name, config = _models()["LlamaForCausalLM"]
    _, raw = _plan_and_build_spec(name, config, precision="int8-wo", gpus=1,
                                  gpu={"type": "B200-180GB"})
    with pytest.raises(BadSpec):
        parse_build_spec(raw)
    assert parse_build_spec({**raw, "toolchain": "tensorrt-llm==0.21.0"}).precision == "int8-wo"
