"""Kiln's HTTPScaledObject in the hands of KEDA's HTTP add-on's own operator (real back-end).

kedacore/http-add-on v0.12.0's operator (``tests/support/keda_http.py``, :class:`AddOnOperator`)
runs against the real control plane beside Kiln's, with the parked scale-from-zero example
of ``test_scale_from_zero.py``. It takes Kiln's HTTPScaledObject (its ``Ready`` condition),
puts its finalizer on it and makes KEDA's ScaledObject of the same name, which the API server
validates against KEDA's CRD: that ScaledObject is what KEDA scales the LLMService by, so its
target, bounds and cool-down are checked against what Kiln rendered. The two operators then
share objects without a write loop; and a service leaving keda-http for keda mode hands the
name over: Kiln deletes its HTTPScaledObject and waits (Reconciling) while the add-on's
operator lets it go (its finalizer) and the controller-manager's garbage collector removes the
ScaledObject it controlled; then Kiln's own ScaledObject of that name takes its place, and the
way back hands it to the add-on's again.
"""

from __future__ import annotations

import asyncio

import pytest

from kiln.api import API_VERSION
from kiln.decide.conditions import get_condition
from kiln.render.wake import HTTP_SCALED_OBJECT_API

from ..support.keda_http import AddOnOperator
from ..support.real_cluster import RealSandbox
from .test_scale_from_zero import NAME, NS, SANDBOX, _status, park

FINALIZER = "httpscaledobject.http.keda.sh"  # operator/controllers/http/finalizer.go


@pytest.fixture
async def both(real_plane, prometheus_binaries):
    operator = AddOnOperator(prometheus_binaries, real_plane)
    try:
        await operator.start()
        async with RealSandbox(real_plane, **SANDBOX) as sb:
            try:
                await park(sb)
                yield sb, operator
            finally:
                await sb.stop_operator()
                await sb.stop_kubelet()
    finally:
        operator.stop()


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


async def test_the_add_ons_operator_makes_keda_scale_the_llmservice_as_rendered(both):
    sb, operator = both
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


async def test_a_service_leaving_keda_http_and_back_hands_the_scaled_object_over_each_way(both):
    sb, _ = both
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
