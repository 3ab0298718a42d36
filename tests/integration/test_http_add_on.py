"""KEDA's HTTP add-on, its own binaries, around a Kiln service (real back-end).

kedacore/http-add-on v0.12.0's operator, scaler and interceptor (``tests/support/keda_http.py``)
run against the real control plane beside Kiln's operator, with the parked scale-from-zero
example of ``test_scale_from_zero.py``; KEDA itself is the one stand-in, doing only what it
does to wake a target from zero (:class:`~tests.support.keda_http.KedaActivation`).

- The add-on's operator takes Kiln's HTTPScaledObject (its ``Ready`` condition), puts its
  finalizer on it and makes KEDA's ScaledObject of the same name, which the API server
  validates against KEDA's CRD: that ScaledObject is what KEDA scales the LLMService by, so its
  target, bounds and cool-down are checked against what Kiln rendered. The two operators then
  share objects without a write loop.
- A request at zero replicas wakes the service through the whole add-on: the interceptor holds
  and counts it, the scaler reads the count from the interceptor's admin port (found through
  its Service's EndpointSlice) and tells KEDA the ScaledObject is active (its metric target is
  Kiln's concurrency target), KEDA raises the LLMService from zero through ``/scale``, Kiln and
  the controller-manager bring a Pod up, and once the endpointslice controller lists it the
  interceptor forwards the held request to it, streamed. The Pod listens on an address of this
  machine, and the interceptor resolves the serving Service's name to it through an
  ``/etc/hosts`` of its own, as cluster DNS would.
- A service leaving keda-http for keda mode hands the ScaledObject's name over: Kiln deletes
  its HTTPScaledObject and waits (Reconciling) while the add-on's operator lets it go (its
  finalizer) and the controller-manager's garbage collector removes the ScaledObject it
  controlled; then Kiln's own ScaledObject of that name takes its place, and the way back
  hands it to the add-on's again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest

from kiln.api import API_VERSION
from kiln.decide.conditions import get_condition, is_true
from kiln.demo.openai_act import PROMPT, chat_round_trip
from kiln.render.wake import HTTP_SCALED_OBJECT_API

from ..support.keda_http import (AddOnOperator, AddOnScaler, KedaActivation, RealInterceptor, pod_address,
                                 private_hosts, ready_endpoints)
from ..support.real_cluster import RealSandbox
from .test_scale_from_zero import NAME, NS, SANDBOX, _pods, _status, park

FINALIZER = "httpscaledobject.http.keda.sh"  # operator/controllers/http/finalizer.go


def _not_here() -> str | None:
    """Why the add-on's interceptor and scaler cannot reach what runs on this machine."""
    if pod_address() is None:
        return "this machine has no address but loopback, which no EndpointSlice may list"
    return private_hosts()


@pytest.fixture
async def add_on(real_plane, prometheus_binaries):
    """The parked service, with the add-on's operator, interceptor and scaler around it."""
    if why := _not_here():
        pytest.skip(why)
    with contextlib.ExitStack() as stops:
        operator = AddOnOperator(prometheus_binaries, real_plane)
        stops.callback(operator.stop)
        await operator.start()
        async with RealSandbox(real_plane, **SANDBOX) as sb, contextlib.AsyncExitStack() as running:
            running.push_async_callback(sb.stop_kubelet)
            running.push_async_callback(sb.stop_operator)
            await park(sb)
            hso = await _get(sb, HTTP_SCALED_OBJECT_API, "HTTPScaledObject")
            service = f"{hso['spec']['scaleTargetRef']['service']}.{sb.ns(NS)}"
            interceptor = RealInterceptor(prometheus_binaries, real_plane, sb.api, hosts={service: pod_address()},
                                          admin_service=AddOnScaler.ADMIN_SERVICE)
            running.push_async_callback(interceptor.stop)
            await interceptor.start()
            scaler = AddOnScaler(prometheus_binaries, real_plane, interceptor.admin_port)
            running.push_async_callback(scaler.stop)
            await scaler.start()
            yield sb, operator, interceptor, scaler


async def _get(sb, api_version: str, kind: str) -> dict | None:
    return await sb.api.get(api_version, kind, NAME, sb.ns(NS))


async def _accepted(sb) -> tuple[dict, dict]:
    """The HTTPScaledObject once the add-on's operator reports it Ready, and its ScaledObject."""
    async def ready():
        hso = await _get(sb, HTTP_SCALED_OBJECT_API, "HTTPScaledObject")
        so = await _get(sb, "keda.sh/v1alpha1", "ScaledObject")
        condition = get_condition(((hso or {}).get("status") or {}).get("conditions") or [], "Ready")
        return (hso, so) if condition and condition["status"] == "True" and so else None
    for _ in range(300):
        if found := await ready():
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the add-on's operator did not take HTTPScaledObject {NAME}")


async def test_the_add_ons_operator_makes_keda_scale_the_llmservice_as_rendered(add_on):
    sb, operator, _, _ = add_on
    hso, so = await _accepted(sb)
    [ready] = [c for c in hso["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["reason"], ready["message"]) == ("Reconciled", "ScaledObject created and configured")
    assert FINALIZER in hso["metadata"]["finalizers"]

    [owner] = so["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "HTTPScaledObject", NAME, hso["metadata"]["uid"], True)
    spec = so["spec"]
    # KEDA scales the LLMService through its /scale subresource, within the rendered bounds.
    assert spec["scaleTargetRef"] == {"apiVersion": API_VERSION, "kind": "LLMService", "name": NAME}
    rendered = hso["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (rendered["replicas"]["min"],
                                                                  rendered["replicas"]["max"])
    assert spec["minReplicaCount"] == 0
    assert spec["cooldownPeriod"] == rendered["scaledownPeriod"] == 900
    [trigger] = spec["triggers"]
    assert trigger["type"] == "external-push"
    assert trigger["metadata"] == {"scalerAddress": f"{operator.SCALER}.keda:{operator.SCALER_PORT}",
                                   "httpScaledObject": NAME}

    # Settled: neither operator rewrites what the other wrote (Kiln resyncs every 0.5 s here).
    versions = (hso["metadata"]["resourceVersion"], so["metadata"]["resourceVersion"])
    await asyncio.sleep(4.0)
    hso_now = await _get(sb, HTTP_SCALED_OBJECT_API, "HTTPScaledObject")
    so_now = await _get(sb, "keda.sh/v1alpha1", "ScaledObject")
    assert (hso_now["metadata"]["resourceVersion"], so_now["metadata"]["resourceVersion"]) == versions
    assert get_condition(_status(sb)["conditions"], "Ready")["reason"] == "ScaledToZero"


async def test_a_request_at_zero_wakes_the_service_through_the_add_on_and_is_answered(add_on):
    sb, _, interceptor, scaler = add_on
    _, so = await _accepted(sb)
    [trigger] = so["spec"]["triggers"]
    hso = await _get(sb, HTTP_SCALED_OBJECT_API, "HTTPScaledObject")
    [(_, address)] = interceptor.hosts.items()
    sb.cluster.addresses = itertools.chain([address], sb.cluster.addresses)  # the woken Pod's
    url = _status(sb)["endpoints"]["openai"]

    # Nothing pending: KEDA's HPA would read no demand against Kiln's concurrency target.
    name, target, value = await scaler.metric(so, trigger)
    assert (target, value) == (hso["spec"]["scalingMetric"]["concurrency"]["targetValue"], 0)
    assert not await scaler.is_active(so, trigger)

    async with KedaActivation(sb.api, scaler, sb.ns(NS)) as keda:
        started = time.monotonic()
        text, usage, _ = await chat_round_trip(sb.api, url, NAME, stream=True)
        waited = time.monotonic() - started

    assert "simulated" in text.lower() and PROMPT in text and usage is not None
    # Held at zero replicas, which the scaler told KEDA from the interceptor's count, until the
    # Pod KEDA's wake made was ready and listed.
    assert keda.active and keda.wakes == [f"{sb.ns(NS)}/{NAME}"]
    assert waited >= SANDBOX["start_seconds"]
    [pod] = _pods(sb)
    assert pod["status"]["podIP"] == address
    assert await ready_endpoints(sb.api, sb.ns(NS), hso["spec"]["scaleTargetRef"]["service"]) == [address]
    await sb.wait_for(lambda: is_true(_status(sb).get("conditions", []), "Ready")
                      and get_condition(_status(sb)["conditions"], "Ready")["reason"] == "ReplicasReady",
                      what="Ready with one replica")

    # Warm now: forwarded at once, and nothing more to wake.
    async with KedaActivation(sb.api, scaler, sb.ns(NS)) as keda:
        whole, _, _ = await chat_round_trip(sb.api, url, NAME, stream=False)
    assert whole == text and keda.wakes == []
    assert sb.get("llmservices", NAME, NS)["spec"]["replicas"] == 1 and len(_pods(sb)) == 1


async def test_a_service_leaving_keda_http_and_back_hands_the_scaled_object_over_each_way(add_on):
    sb, _, _, _ = add_on
    await _accepted(sb)
    await sb.api._call("PATCH", f"/apis/{API_VERSION}/namespaces/{sb.ns(NS)}/llmservices/{NAME}",
                       body={"spec": {"replicas": 1, "autoscaling": {"mode": "keda", "minReplicas": 1}}},
                       content_type="application/merge-patch+json")

    async def kilns():
        so = await _get(sb, "keda.sh/v1alpha1", "ScaledObject")
        refs = (so or {}).get("metadata", {}).get("ownerReferences") or []
        return so if [(r["kind"], r["name"]) for r in refs if r.get("controller")] == [("LLMService", NAME)] else None
    for _ in range(600):
        if so := await kilns():
            break
        await asyncio.sleep(0.1)
    else:
        status = _status(sb)
        raise AssertionError(f"no ScaledObject of Kiln's: {status.get('conditions')}")
    assert await _get(sb, HTTP_SCALED_OBJECT_API, "HTTPScaledObject") is None
    assert so["spec"]["triggers"][0]["type"] == "prometheus"
    assert so["spec"]["minReplicaCount"] == 1

    # And back: Kiln deletes its own ScaledObject as it applies the HTTPScaledObject, and the
    # add-on's operator makes its own of that name.
    await sb.api._call("PATCH", f"/apis/{API_VERSION}/namespaces/{sb.ns(NS)}/llmservices/{NAME}",
                       body={"spec": {"replicas": 0, "autoscaling": {"mode": "keda-http", "minReplicas": 0}}},
                       content_type="application/merge-patch+json")
    hso, so = await _accepted(sb)
    assert [r["kind"] for r in so["metadata"]["ownerReferences"]] == ["HTTPScaledObject"]
    assert so["spec"]["triggers"][0]["type"] == "external-push"
    await sb.wait_for(lambda: get_condition(_status(sb).get("conditions", []), "Ready")["reason"] == "ScaledToZero",
                      timeout=30, what="Ready at zero replicas in keda-http mode again")
