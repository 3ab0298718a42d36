"""Kiln's HTTPScaledObject as KEDA's own HTTP add-on interceptor reads it (real back-end).

The same parked service as ``test_scale_from_zero.py``, with kedacore/http-add-on v0.12.0's
interceptor in front of it (``tests/support/keda_http.py``) instead of the simulated one: it
reads the HTTPScaledObject Kiln rendered through the API server, so its hosts, path prefix,
target Service and ``timeouts`` are taken as the add-on itself takes them. A request outside
what it routes is its own 404; a routed request at zero replicas, with nothing to wake the
service, is held for the rendered ``conditionWait`` (the serving Service's EndpointSlice, from
the controller-manager, lists no ready endpoint) and then cut with the add-on's 502. The whole
add-on waking a service and forwarding to it is ``test_http_add_on.py``.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import openai
import pytest

from kiln.demo.openai_act import chat_round_trip

from ..support.keda_http import RealInterceptor
from ..support.real_cluster import RealSandbox
from .test_scale_from_zero import NAME, NS, SANDBOX, _pods, _status, park


@pytest.fixture
async def parked(real_plane, prometheus_binaries):
    async with RealSandbox(real_plane, **SANDBOX) as sb:
        await park(sb)
        interceptor = RealInterceptor(prometheus_binaries, real_plane, sb.api)
        try:
            await interceptor.start()
            yield sb, interceptor
        finally:
            await interceptor.stop()
            await sb.stop_operator()
            await sb.stop_kubelet()


async def test_the_add_ons_interceptor_routes_only_the_rendered_host_and_path(parked):
    sb, interceptor = parked
    at = f"http://127.0.0.1:{interceptor.proxy_port}"
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{at}/v1/models", headers={"Host": "elsewhere.llm.svc"}) as other:
            assert other.status == 404, await other.text()
        async with client.get(f"{at}/metrics", headers={"Host": f"{NAME}-openai.{sb.ns(NS)}.svc:8080"}) as outside:
            assert outside.status == 404, await outside.text()
    assert sb.get("llmservices", NAME, NS)["spec"]["replicas"] == 0


async def test_the_add_ons_interceptor_holds_a_routed_request_for_the_rendered_condition_wait(parked):
    sb, _ = parked
    await sb.stop_operator()  # it would put its own conditionWait back
    await sb.api.request("PATCH", f"/apis/http.keda.sh/v1alpha1/namespaces/{sb.ns(NS)}/httpscaledobjects/{NAME}",
                         {"spec": {"timeouts": {"conditionWait": "2s"}}},
                         content_type="application/merge-patch+json")
    await asyncio.sleep(2.0)  # the interceptor's informer takes the change
    url = _status(sb)["endpoints"]["openai"]  # the client's way in: the rendered ExternalName Service
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as error:
        await chat_round_trip(sb.api, url, NAME, stream=False)
    waited = time.monotonic() - started
    assert error.value.status_code == 502, error.value.response.text
    assert "error on backend" in error.value.response.text
    assert 2.0 <= waited < 6.0  # held for conditionWait (2 s), not its default 1.5 s
    assert _pods(sb) == []

