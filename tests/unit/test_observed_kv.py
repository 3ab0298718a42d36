"""Closing the planner's loop: Triton's KV block metrics next to the prediction."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kiln.autoscale import KVSample, parse_triton_metrics
from kiln.api import LLMServiceStatus
from kiln.controller.telemetry import Telemetry
from kiln.decide import Observed, observe
from kiln.decide.status import parse_status, status_wire

PAGE = """# HELP nv_trt_llm_kv_cache_block_metrics TRT LLM KV cache block metrics
# TYPE nv_trt_llm_kv_cache_block_metrics gauge
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm",version="1"} 32
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm",version="1"} 12664
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm",version="1"} 3166
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="free",model="tensorrt_llm",version="1"} 9498
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm",version="1"} 0.25
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 3
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 17
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 68
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="ensemble",version="1"} 1200
"""


def test_triton_page_parses():
    sample = parse_triton_metrics(PAGE)
    assert sample == KVSample(max_blocks=12664, used_blocks=3166, tokens_per_block=32,
                              waiting_requests=3, active_requests=17, max_requests=68)
    assert sample.capacity_tokens == 405248 and sample.utilization == 0.25
    assert sample.batch_fraction == 0.25
    assert parse_triton_metrics("# nothing here\n") is None


def _status(predicted, observed=None):
    """A Ready service whose plan predicted ``predicted`` KV-cache tokens."""
    return LLMServiceStatus.model_validate({
        "conditions": [{"type": "Ready", "status": "True", "reason": "ReplicasReady",
                        "lastTransitionTime": "t"}],
        "plan": {"fits": True, "tensorParallel": 1, "pipelineParallel": 1, "kvCacheTokens": predicted,
                 "observedKVCacheTokens": observed}})


def _observe(status, samples):
    return observe(status, Observed(samples=tuple(samples)), "t", 1)


def test_observed_tokens_and_error_land_in_status_plan():
    status = _status(400000)
    events = _observe(status, [KVSample(12664, 3166, 32), KVSample(12664, 6332, 32)])
    wire = status_wire(status)
    assert wire["plan"]["observedKVCacheTokens"] == 405248
    assert wire["plan"]["kvCacheTokensError"] == -0.013
    assert wire["kvCacheUtilization"] == "38%"
    assert events == []


def test_kv_utilisation_is_a_fraction_in_the_status_and_a_percentage_in_the_object():
    status = _status(400000)
    _observe(status, [KVSample(12664, 3166, 32), KVSample(12664, 6332, 32)])  # 25% and 50%
    assert status.kv_cache_utilization == 0.38  # whole percent, as `kubectl get llms` shows it
    wire = status_wire(status)
    assert wire["kvCacheUtilization"] == "38%"
    assert parse_status(wire).kv_cache_utilization == 0.38
    with pytest.raises(ValidationError, match="kvCacheUtilization"):
        LLMServiceStatus.model_validate({"kvCacheUtilization": "0.38"})


def test_the_operator_exports_the_status_figures_as_gauges():
    status = _status(400000)
    _observe(status, [KVSample(12664, 3166, 32), KVSample(12664, 6332, 32)])
    telemetry = Telemetry()
    telemetry.observe_service("llm", "m", {"replicas": 2}, status)

    def gauge(name):
        return telemetry.registry.get_sample_value(name, {"namespace": "llm", "service": "m"})
    assert gauge("kiln_service_kv_cache_utilization") == 0.38
    assert (gauge("kiln_plan_kv_cache_tokens"), gauge("kiln_observed_kv_cache_tokens")) == (400000, 405248)
    # Without the builtin autoscaler the service should run its spec's replicas.
    assert gauge("kiln_service_desired_replicas") == 2
    assert telemetry.registry.get_sample_value(
        "kiln_service_condition", {"namespace": "llm", "service": "m", "condition": "Ready"}) == 1


def test_every_build_outcome_is_exported_at_zero_before_the_first():
    # A counter series born at 1 has no increase(), and the chart's KilnEngineBuildFailed
    # alert is increase() > 0 (tests/integration/test_alerts.py, on a real Prometheus).
    registry = Telemetry().registry
    assert [registry.get_sample_value("kiln_engine_builds_total", {"result": r})
            for r in ("started", "succeeded", "failed")] == [0, 0, 0]


def test_an_error_above_15_percent_posts_one_event():
    [(kind, reason, message)] = _observe(_status(600000), [KVSample(12664, 0, 32)])
    assert (kind, reason) == ("Warning", "PlanMismatch") and "405248" in message and "+48%" in message
    # already reported for this allocation
    assert _observe(_status(600000, observed=405248), [KVSample(12664, 0, 32)]) == []


def test_no_samples_changes_nothing():
    status = _status(1000)
    _observe(status, [])
    assert "observedKVCacheTokens" not in status_wire(status)["plan"]


def test_a_service_not_ready_keeps_its_figures():
    status = _status(1000)
    status.conditions[0].status = "False"
    _observe(status, [KVSample(12664, 3166, 32)])
    assert status_wire(status)["kvCacheUtilization"] is None


def test_the_input_token_counter_is_read_from_the_histogram_sum():
    page = PAGE + """# HELP nv_llm_input_token_len Input token length
# TYPE nv_llm_input_token_len histogram
nv_llm_input_token_len_bucket{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1",le="10"} 0
nv_llm_input_token_len_bucket{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1",le="+Inf"} 40
nv_llm_input_token_len_count{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1"} 40
nv_llm_input_token_len_sum{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1"} 81920
"""
    assert parse_triton_metrics(page).input_tokens_total == 81920
    assert parse_triton_metrics(PAGE).input_tokens_total is None


def test_finished_requests_and_generated_tokens_are_read_from_the_histograms():
    # Both histograms are observed once per finished request (the backend's
    # reportCustomMetrics): _count is requests finished, _sum their tokens.
    page = PAGE + """# HELP nv_llm_input_token_len Input token length
# TYPE nv_llm_input_token_len histogram
nv_llm_input_token_len_bucket{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1",le="+Inf"} 40
nv_llm_input_token_len_count{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1"} 40
nv_llm_input_token_len_sum{model="tensorrt_llm",response_metric_type="total_input_tokens",version="1"} 81920
# HELP nv_llm_output_token_len Output token length
# TYPE nv_llm_output_token_len histogram
nv_llm_output_token_len_bucket{model="tensorrt_llm",response_metric_type="total_output_tokens",version="1",le="+Inf"} 40
nv_llm_output_token_len_count{model="tensorrt_llm",response_metric_type="total_output_tokens",version="1"} 40
nv_llm_output_token_len_sum{model="tensorrt_llm",response_metric_type="total_output_tokens",version="1"} 6400
"""
    sample = parse_triton_metrics(page)
    assert (sample.finished_total, sample.input_tokens_total, sample.output_tokens_total) == (40, 81920, 6400)
    assert parse_triton_metrics(PAGE).finished_total is None


FIRST_RESPONSES = """# HELP nv_inference_first_response_histogram_ms Duration from request to first response in milliseconds
# TYPE nv_inference_first_response_histogram_ms histogram
nv_inference_first_response_histogram_ms_count{model="tensorrt_llm",version="1"} 37
nv_inference_first_response_histogram_ms_sum{model="tensorrt_llm",version="1"} 10771
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="100"} 8
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="500"} 30
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="2000"} 36
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="5000"} 37
nv_inference_first_response_histogram_ms_bucket{model="tensorrt_llm",version="1",le="+Inf"} 37
nv_inference_first_response_histogram_ms_count{model="ensemble",version="1"} 37
nv_inference_first_response_histogram_ms_sum{model="ensemble",version="1"} 10990
nv_inference_first_response_histogram_ms_bucket{model="ensemble",version="1",le="100"} 2
nv_inference_first_response_histogram_ms_bucket{model="ensemble",version="1",le="+Inf"} 37
"""


def test_the_first_response_histogram_is_read_for_the_engines_model():
    # Triton core's histogram (with --metrics-config histogram_latencies=true, for decoupled
    # models), its default buckets; the figures are the example of Triton's metrics guide.
    sample = parse_triton_metrics(PAGE + FIRST_RESPONSES)
    assert sample.first_responses == ((0.1, 8), (0.5, 30), (2.0, 36), (5.0, 37), (float("inf"), 37))
    assert parse_triton_metrics(PAGE).first_responses is None


def test_a_first_response_histogram_without_its_inf_bucket_or_with_too_many_is_not_read():
    page = PAGE + "\n".join(line for line in FIRST_RESPONSES.splitlines() if 'le="+Inf"' not in line) + "\n"
    assert parse_triton_metrics(page).first_responses is None
    many = "".join(f'nv_inference_first_response_histogram_ms_bucket{{model="tensorrt_llm",version="1",le="{i}"}} {i}\n'
                   for i in range(1, 200))
    page = PAGE + FIRST_RESPONSES.replace("# TYPE nv_inference_first_response_histogram_ms histogram\n",
                                          "# TYPE nv_inference_first_response_histogram_ms histogram\n" + many)
    assert parse_triton_metrics(page).first_responses is None
