"""Kiln's HTTPScaledObject as KEDA's own HTTP add-on interceptor reads it (real back-end).

The same parked service as ``test_scale_from_zero.py``, with kedacore/http-add-on v0.12.0's
interceptor in front of it (``tests/support/keda_http.py``) instead of the simulated one: it
reads the HTTPScaledObject Kiln rendered through the API server, so its hosts, path prefix,
target Service and ``timeouts`` are taken as the add-on itself takes them. A request outside
what it routes is its own 404; a routed request at zero replicas, with nothing to wake the
service, is held for the rendered ``conditionWait`` (the serving Service's EndpointSlice, from
the controller-manager, lists no ready endpoint) and then cut with the add-on's 502. With KEDA's
part of the wake done from the interceptor's own pending counts, a held request is forwarded,
streamed, to the woken Pod once the controller-manager lists it in the serving Service's
EndpointSlice: the Pod listens on an address of this machine, and the interceptor resolves the
Service's name to it through an ``/etc/hosts`` of its own, as cluster DNS would.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import openai
import pytest

from kiln.decide.conditions import get_condition, is_true
from kiln.demo.openai_act import PROMPT, chat_round_trip
from kiln.render.wake import HTTP_SCALED_OBJECT_API

from ..support.keda_http import RealInterceptor, Waker, pod_address, private_hosts
from ..support.real_cluster import RealSandbox
from .test_scale_from_zero import NAME, NS, SANDBOX, _pods, _status, park


def _no_forward() -> str | None:
    """Why the interceptor cannot reach a Pod on this machine, or None when it can."""
    if pod_address() is None:
        return "this machine has no address but loopback, which no EndpointSlice may list"
    return private_hosts()


@pytest.fixture
async def parked(real_plane, prometheus_binaries):
    async with RealSandbox(real_plane, **SANDBOX) as sb:
        await park(sb)
        hso = await sb.api.get(HTTP_SCALED_OBJECT_API, "HTTPScaledObject", NAME, sb.ns(NS))
        service = hso["spec"]["scaleTargetRef"]["service"]
        hosts = {} if _no_forward() else {f"{service}.{sb.ns(NS)}": pod_address()}
        interceptor = RealInterceptor(prometheus_binaries, real_plane, sb.api, hosts=hosts)
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


async def test_the_add_ons_interceptor_forwards_a_held_request_to_the_woken_pod(parked):
    sb, interceptor = parked
    if not interceptor.hosts:
        pytest.skip(_no_forward())
    [(host, address)] = interceptor.hosts.items()
    service = host.split(".")[0]
    sb.cluster.addresses = itertools.chain([address], sb.cluster.addresses)  # the woken Pod's
    url = _status(sb)["endpoints"]["openai"]
    key = f"{sb.ns(NS)}/{NAME}"

    async with Waker(interceptor) as waker:
        started = time.monotonic()
        text, usage, _ = await chat_round_trip(sb.api, url, NAME, stream=True)
        waited = time.monotonic() - started

    assert "simulated" in text.lower() and PROMPT in text and usage is not None
    # Held while pending at zero replicas, then answered by the one Pod the wake made, at the
    # address the controller-manager listed in the Service's EndpointSlice.
    assert waker.wakes == [key] and {k for k, _ in waker.seen} == {key}
    assert waited >= SANDBOX["start_seconds"]
    [pod] = _pods(sb)
    assert pod["status"]["podIP"] == address
    slices = await sb.api.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/{sb.ns(NS)}/endpointslices",
                                  query=[("labelSelector", f"kubernetes.io/service-name={service}")])
    assert [a for s in slices["items"] for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") for a in e["addresses"]] == [address]
    await sb.wait_for(lambda: is_true(_status(sb).get("conditions", []), "Ready")
                      and get_condition(_status(sb)["conditions"], "Ready")["reason"] == "ReplicasReady",
                      what="Ready with one replica")

    # Warm now: forwarded at once, and nothing more to wake.
    async with Waker(interceptor) as waker:
        whole, _, _ = await chat_round_trip(sb.api, url, NAME, stream=False)
    assert whole == text and waker.wakes == []
    assert sb.get("llmservices", NAME, NS)["spec"]["replicas"] == 1 and len(_pods(sb)) == 1
