"""spec.autoscaling.prometheusUrl is a base URL only, and the platform team may restrict it.

A tenant chooses the URL; the operator sends requests to it. Before, any host and path was
taken, and a ``?`` turned Kiln's ``/api/v1/query`` suffix into a query value, so the
operator would GET whatever URL the tenant wrote.
"""

from __future__ import annotations

import aiohttp.web
from aiohttp.test_utils import TestServer
import pytest

from kiln.api import parse_service_spec
from kiln.api.crd import crds
from kiln.controller.autoscaler import BuiltinAutoscaler
from kiln.decide.policy import Policy
from kiln.controller.prometheus import PrometheusMetrics
from kiln.errors import SpecInvalid

HOSTILE = [
    "http://169.254.169.254/latest/meta-data?",
    "http://prom:9090/api/v1/admin/tsdb/delete_series?match[]=up&x=",
    "http://user:pw@prom:9090",
    "http://prom:9090@evil.example",
    "http://prom:9090/#",
    "http://prom:9090/x?y",
    "http://prom:9090\r\nHost: evil",
    "file:///etc/passwd",
]


def _spec(url):
    return {"model": {"source": "hf://a/b"}, "autoscaling": {
        "mode": "builtin", "metricsSource": "prometheus", "prometheusUrl": url}}


@pytest.mark.parametrize("url", HOSTILE)
def test_a_url_with_query_fragment_or_credentials_is_refused_naming_the_field(url):
    with pytest.raises(SpecInvalid) as error:
        parse_service_spec(_spec(url))
    assert "spec.autoscaling.prometheusUrl" in str(error.value)
    with pytest.raises(SpecInvalid):
        Policy().check_prometheus(url)


def test_the_crd_carries_the_same_pattern():
    [service] = [c for c in crds() if c["spec"]["names"]["kind"] == "LLMService"]
    schema = service["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    pattern = schema["properties"]["spec"]["properties"]["autoscaling"]["properties"]["prometheusUrl"]["pattern"]
    import re
    assert all(not re.search(pattern, url) for url in HOSTILE)
    assert re.search(pattern, "http://prometheus-operated.monitoring.svc:9090/prefix")


@pytest.fixture
async def prefixed_prometheus():
    """A Prometheus behind a path prefix, recording each request's path and query."""
    seen = []

    async def query(request):
        seen.append((request.path, dict(request.query)))
        return aiohttp.web.json_response({"status": "success", "data": {"result": []}})

    async def elsewhere(request):
        seen.append((request.path, dict(request.query)))
        raise aiohttp.web.HTTPFound("http://169.254.169.254/latest/meta-data")

    app = aiohttp.web.Application()
    app.router.add_get("/prom/api/v1/query", query)
    app.router.add_get("/redirecting/api/v1/query", elsewhere)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), seen


async def test_requests_go_to_the_query_endpoint_under_the_base_and_follow_no_redirect(prefixed_prometheus):
    base, seen = prefixed_prometheus
    source = PrometheusMetrics(Policy().check_prometheus(base + "/prom/"))
    redirecting = PrometheusMetrics(Policy().check_prometheus(base + "/redirecting"))
    try:
        assert await source.kv_samples("llm", "app.kubernetes.io/instance=svc,x=y") == []
        assert await redirecting.kv_samples("llm", "app.kubernetes.io/instance=svc") == []
    finally:
        await source.close()
        await redirecting.close()
    assert {path for path, _ in seen} == {"/prom/api/v1/query", "/redirecting/api/v1/query"}
    assert all(set(query) == {"query"} for _, query in seen)
    from kiln.controller.prometheus import _FAMILIES
    assert len(seen) == 2 * len(_FAMILIES)  # one query per family each; the redirect was not followed


def test_the_platform_teams_list_restricts_the_urls():
    policy = Policy(prometheus_urls=("http://prometheus.monitoring.svc:9090",))
    assert str(policy.check_prometheus("http://prometheus.monitoring.svc:9090/")) == \
        "http://prometheus.monitoring.svc:9090/"
    with pytest.raises(SpecInvalid) as error:
        policy.check_prometheus("http://prometheus.team-b.svc:9090")
    assert "prometheus.allowedUrls" in error.value.message
    scaler = BuiltinAutoscaler(api=None, metrics="pods-source", policy=policy)
    with pytest.raises(SpecInvalid):
        scaler.source(parse_service_spec(_spec("http://10.0.0.1:9090")))


def test_a_bad_allowed_url_stops_kiln_run_at_start_naming_the_flag(capsys):
    from kiln.cli import main
    assert main(["run", "--allowed-prometheus-url", "http://prom:9090/?x="]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --allowed-prometheus-url:") and "Traceback" not in err
