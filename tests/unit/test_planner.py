from __future__ import annotations

import math

import pytest

from kiln.api import Precision, parse_service_spec
from kiln.errors import SpecInvalid
from kiln.planner import ModelConfig, load_catalog
from kiln.planner.memory import WEIGHT_BYTES, kv_bytes_per_token, weight_bytes_per_gpu

from kiln.api import KVCacheDtype

from ..support.planning import planned


ENTRIES = {k: v for k, v in load_catalog().items() if "param_count_computed" in v}


@pytest.mark.parametrize("name", sorted({id(v): k for k, v in ENTRIES.items()}.values()))
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_kv_bytes_match_formula(name, tp):
    raw = ENTRIES[name]
    model = ModelConfig.from_hf(raw)
    for dtype, size in ((KVCacheDtype.BF16, 2), (KVCacheDtype.FP8, 1)):
        expected = 2 * raw["num_hidden_layers"] * math.ceil(raw["num_key_value_heads"] / tp) \
            * raw["head_dim"] * size
        assert kv_bytes_per_token(model, dtype, tp, 1) == expected
    assert kv_bytes_per_token(model, KVCacheDtype.BF16, 1, 1) == raw["kv_bytes_per_token_16bit_tp1"]


@pytest.mark.parametrize("name", sorted({id(v): k for k, v in ENTRIES.items()}.values()))
@pytest.mark.parametrize("precision", [Precision.BF16, Precision.FP8])
def test_weights_within_3_percent(name, precision):
    raw = ENTRIES[name]
    model = ModelConfig.from_hf(raw)
    embed = raw["vocab_size"] * raw["hidden_size"]
    untied_head = 0 if raw["tie_word_embeddings"] else embed
    # parameters x precision bytes, with embeddings and a separate lm_head kept in 16 bit
    expected = (raw["param_count_computed"] - embed - untied_head) * WEIGHT_BYTES[precision] \
        + 2 * embed + 2 * embed
    assert weight_bytes_per_gpu(model, precision, 1, 1) == pytest.approx(expected, rel=0.03)


def _plan(source, **spec):
    parsed = parse_service_spec({"model": {"source": f"hf://{source}"}, **spec})
    return planned(parsed)[0]


def test_8b_on_one_gpu_picks_tp1():
    result = _plan("meta-llama/Llama-3.1-8B-Instruct", precision="bf16")
    assert result.fits and result.tensor_parallel == 1


def test_70b_bf16_on_one_gpu_does_not_fit_and_suggests():
    result = _plan("meta-llama/Llama-3.1-70B-Instruct", precision="bf16")
    assert result.fits is False
    assert "GiB short" in result.reasons[0]
    assert "would fit with gpus: 2" in result.reasons[-1]


def test_70b_bf16_auto_parallelism_uses_tp():
    result = _plan("meta-llama/Llama-3.1-70B-Instruct", precision="bf16", gpus=4)
    assert result.fits and result.tensor_parallel == 4


def test_tp_must_divide_heads():
    with pytest.raises(SpecInvalid, match="attention heads"):
        _plan("Qwen/Qwen2.5-7B-Instruct", gpus=8, parallelism={"tensor": 8, "pipeline": 1})
    assert _plan("Qwen/Qwen2.5-7B-Instruct", gpus=8).tensor_parallel in (1, 2, 4, 7)


def test_plan_status_is_what_the_crd_stores():
    from kiln.api.llmservice import PlanStatus

    for source, spec in (("meta-llama/Llama-3.1-70B-Instruct", {"precision": "bf16"}),
                         ("meta-llama/Llama-3.1-8B-Instruct", {"engine": {"weightStreaming": True}})):
        status = _plan(source, **spec).status().wire()
        assert PlanStatus.model_validate(status).wire() == status


def test_70b_on_a_24gb_gpu_offers_weight_streaming():
    result = _plan("meta-llama/Llama-3.1-70B-Instruct", precision="fp8", gpu={"type": "L4"})
    assert result.fits is False
    assert "engine.weightStreaming: true" in result.reasons[-1]
    streamed = _plan("meta-llama/Llama-3.1-70B-Instruct", precision="fp8", gpu={"type": "RTX-4090"},
                     engine={"weightStreaming": True, "maxSeqLen": 4096, "maxInputLen": 2048,
                             "maxBatchSize": 8, "maxNumTokens": 2048})
    assert streamed.fits and 0 < streamed.gpu_weights_percent < 1
    assert streamed.kv_cache_tokens >= 4096
    assert "throughput drops sharply" in streamed.notes[0]


def test_streaming_renders_the_build_flag_and_the_triton_share():
    import json

    from kiln.render import ServiceRef, render

    parsed = parse_service_spec({"model": {"source": "hf://meta-llama/Llama-3.1-70B-Instruct"},
                                 "precision": "fp8", "gpu": {"type": "RTX-4090"},
                                 "engine": {"weightStreaming": True, "maxSeqLen": 4096, "maxInputLen": 2048,
                                            "maxBatchSize": 8, "maxNumTokens": 2048}})
    result, gpu = planned(parsed)
    rendered = render(ServiceRef("big", "llm"), parsed, result, gpu)
    build = json.loads(rendered.build_job["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"])
    assert build["limits"]["weightStreaming"] is True
    serve = json.loads(rendered.workload["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"])
    assert serve["gpuWeightsPercent"] == result.gpu_weights_percent

    from kiln_runtime.spec import parse_build_spec
    from kiln_runtime.steps import plan_steps
    from kiln_runtime.serve import parse_serve_spec

    steps = {s.name: s.argv for s in plan_steps(parse_build_spec(build), "LlamaForCausalLM")}
    assert "--weight_streaming" in steps["engine"]
    assert steps["engine"][steps["engine"].index("--gemm_plugin") + 1] == "disable"
    assert parse_serve_spec(json.dumps(serve)).gpu_weights_percent == result.gpu_weights_percent
