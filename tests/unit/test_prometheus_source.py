"""The builtin autoscaler's Prometheus source, against an HTTP server that answers
``/api/v1/query`` in Prometheus's response format (instant vectors; ``last_over_time``
keeps every label but the metric name)."""

from __future__ import annotations

import aiohttp.web
from aiohttp.test_utils import TestServer
import pytest

from kiln.api import parse_service_spec
from kiln.controller.autoscaler import BuiltinAutoscaler
from kiln.controller.prometheus import PrometheusMetrics

LABELS = {"namespace": "llm", "llmservice": "svc", "model": "tensorrt_llm", "version": "1"}


def _vector(series):
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {**LABELS, **labels}, "value": [1700000000.0, str(value)]} for labels, value in series]}}


ANSWERS = {
    "nv_trt_llm_kv_cache_block_metrics": [
        ({"pod": "svc-server-0", "kv_cache_block_type": kind}, value)
        for kind, value in (("max", 1000), ("used", 400), ("tokens_per", 32), ("fraction", 0.4))
    ] + [({"pod": "svc-server-1", "kv_cache_block_type": "used"}, 10)],  # no max: skipped
    "nv_trt_llm_request_metrics": [
        ({"pod": "svc-server-0", "request_type": kind}, value)
        for kind, value in (("active", 32), ("max", 64), ("waiting", 3))],
    "nv_llm_input_token_len_sum": [({"pod": "svc-server-0", "response_metric_type": "total_input_tokens"}, 5e6)],
    "nv_llm_input_token_len_count": [({"pod": "svc-server-0", "response_metric_type": "total_input_tokens"}, 4e3)],
    "nv_llm_output_token_len_sum": [({"pod": "svc-server-0", "response_metric_type": "total_output_tokens"}, 9e5)],
    "nv_inference_first_response_histogram_ms_bucket": [
        ({"pod": "svc-server-0", "le": le}, count)
        for le, count in (("100", 10), ("500", 3000), ("2000", 3990), ("5000", 4000), ("+Inf", 4000))],
}


@pytest.fixture
async def prometheus():
    queries = []

    async def query(request):
        promql = request.query["query"]
        queries.append(promql)
        metric = promql.removeprefix("last_over_time(").split("{", 1)[0]
        return aiohttp.web.json_response(_vector(ANSWERS.get(metric, [])))

    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/query", query)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), queries


async def test_samples_per_pod_from_prometheus(prometheus):
    url, queries = prometheus
    source = PrometheusMetrics(url)
    try:
        [sample] = await source.kv_samples("llm", "app.kubernetes.io/instance=svc,app.kubernetes.io/component=server")
    finally:
        await source.close()
    assert sample.replica == "svc-server-0"
    assert (sample.max_blocks, sample.used_blocks, sample.tokens_per_block) == (1000, 400, 32)
    assert (sample.active_requests, sample.max_requests, sample.waiting_requests) == (32, 64, 3)
    assert sample.input_tokens_total == 5e6 and sample.utilization == 0.4
    # The counters the demand from arrivals reads, and the first-response histogram.
    assert (sample.finished_total, sample.output_tokens_total) == (4e3, 9e5)
    assert sample.first_responses == ((0.1, 10), (0.5, 3000), (2.0, 3990), (5.0, 4000), (float("inf"), 4000))
    assert all(q.startswith("last_over_time(") and 'namespace="llm",llmservice="svc"' in q
               and q.endswith("[45s])") for q in queries)


async def test_an_unreachable_prometheus_gives_no_samples_so_the_law_holds():
    source = PrometheusMetrics("http://127.0.0.1:9")
    try:
        assert await source.kv_samples("llm", "app.kubernetes.io/instance=svc") == []
    finally:
        await source.close()


async def test_the_autoscaler_uses_the_source_the_spec_names(prometheus):
    url, _ = prometheus
    scaler = BuiltinAutoscaler(api=None, metrics="pods-source")
    spec = parse_service_spec({"model": {"source": "hf://a/b"}, "autoscaling": {
        "mode": "builtin", "metricsSource": "prometheus", "prometheusUrl": url}})
    try:
        assert isinstance(scaler.source(spec), PrometheusMetrics)
        assert scaler.source(spec).url == scaler.source(spec).url
        assert scaler.source(parse_service_spec({"model": {"source": "hf://a/b"}})) == "pods-source"
    finally:
        await scaler.close()


async def test_every_url_a_tenant_names_shares_the_autoscaler_s_one_session(monkeypatch):
    """Each distinct prometheusUrl kept a source with its own connection pool for the life
    of the operator: a tenant editing the URL's path every tick grew the operator without
    end. The sources share one session, and keep nothing per URL."""
    import aiohttp

    made = []
    real = aiohttp.ClientSession

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    async def query(request):
        return aiohttp.web.json_response(_vector(ANSWERS.get("nv_trt_llm_kv_cache_block_metrics", [])))

    app = aiohttp.web.Application()
    app.router.add_get("/{prefix}/api/v1/query", query)
    scaler = BuiltinAutoscaler(api=None, metrics="pods-source")
    async with TestServer(app, host="127.0.0.1") as server:
        monkeypatch.setattr(aiohttp, "ClientSession", counting)
        try:
            for i in range(200):
                spec = parse_service_spec({"model": {"source": "hf://a/b"}, "autoscaling": {
                    "mode": "builtin", "metricsSource": "prometheus",
                    "prometheusUrl": f"http://127.0.0.1:{server.port}/p{i}"}})
                assert await scaler.source(spec).kv_samples("llm", "app.kubernetes.io/instance=svc")
        finally:
            await scaler.close()
    assert len(made) == 1
