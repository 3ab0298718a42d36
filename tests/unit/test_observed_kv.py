"""Closing the planner's loop: Triton's KV block metrics next to the prediction."""

from __future__ import annotations

from kiln.autoscale import KVSample, parse_triton_metrics
from kiln.controller.service import Outcome, _observe, _Status

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


def _status(predicted):
    st = _Status({}, 1, "t")
    st.data["plan"] = {"fits": True, "kvCacheTokens": predicted}
    return st


def test_observed_tokens_and_error_land_in_status_plan():
    st, out = _status(400000), Outcome(status={})
    _observe(st, out, [KVSample(12664, 3166, 32), KVSample(12664, 6332, 32)], None)
    assert st.data["plan"]["observedKVCacheTokens"] == 405248
    assert st.data["plan"]["kvCacheTokensError"] == -0.013
    assert st.data["kvCacheUtilization"] == "38%"
    assert out.events == []


def test_an_error_above_15_percent_posts_one_event():
    st, out = _status(600000), Outcome(status={})
    _observe(st, out, [KVSample(12664, 0, 32)], None)
    [(kind, reason, message)] = out.events
    assert (kind, reason) == ("Warning", "PlanMismatch") and "405248" in message and "+48%" in message
    again = Outcome(status={})
    _observe(_status(600000), again, [KVSample(12664, 0, 32)], 405248)
    assert again.events == []  # already reported for this allocation


def test_no_samples_changes_nothing():
    st = _status(1000)
    _observe(st, Outcome(status={}), [], None)
    assert "observedKVCacheTokens" not in st.data["plan"]


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
