"""Scale from zero that wakes (autoscaling.mode keda-http), end to end.

A service at zero replicas reports how it wakes; the OpenAI client, pointed at
``status.endpoints.openai``, reaches the (simulated) KEDA HTTP add-on interceptor through the
rendered ExternalName Service; the interceptor holds the request, its scaler raises the
service to one replica, the operator and the kubelet bring a pod up, and the held request is
answered through the serving Service."""

from __future__ import annotations

import copy

import aiohttp
import openai
import pytest
import yaml

from kiln.decide.conditions import get_condition, is_true
from kiln.demo.interceptor import SimulatedHttpAddOn
from kiln.demo.openai_act import PROMPT, chat_round_trip

from ..conftest import ROOT

NS = "llm"
WAKE = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8-scale-from-zero.yaml").read_text())
NAME = WAKE["metadata"]["name"]


def _status(sb):
    return (sb.get("llmservices", NAME, NS) or {}).get("status") or {}


def _pods(sb):
    """The service's serving Pods (on a real server its build Job's Pod is listed too)."""
    return [p for p in sb.objects("pods") if p["metadata"]["namespace"] == sb.ns(NS)
            and p["metadata"]["labels"].get("app.kubernetes.io/component") == "server"]



SANDBOX = {"build_seconds": 0.2, "start_seconds": 0.5, "retry_delay": 0.2, "timings": {"resync_period": 0.5}}


async def park(sb):
    """The example service in ``sb``, parked at zero as KEDA leaves it after the scale-down
    period, with the operator and the kubelet running."""
    sb.add_namespace(NS)
    sb.add_namespace("keda", shared=True)  # the rendered ExternalName Service names it
    await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "simulated"})
    await sb.start_operator()
    sb.start_kubelet()
    manifest = copy.deepcopy(WAKE)
    manifest["spec"]["replicas"] = 0
    await sb.create(manifest)

    def parked_at_zero():
        ready = get_condition(_status(sb).get("conditions", []), "Ready")
        return ready if ready and ready["reason"] == "ScaledToZero" else None
    await sb.wait_for(parked_at_zero, timeout=60, what=f"{NAME} Ready at zero replicas")


@pytest.fixture
async def parked(make_sandbox):
    async with make_sandbox(**SANDBOX) as sb:
        await park(sb)
        add_on = SimulatedHttpAddOn(sb.api)
        await add_on.start()
        yield sb, add_on
        await add_on.stop()
        await sb.stop_operator()
        await sb.stop_kubelet()


async def test_a_request_at_zero_replicas_is_held_and_answered_after_the_wake(backend, parked):
    sb, add_on = parked
    status = _status(sb)
    url = status["endpoints"]["openai"]
    assert url == f"http://{NAME}-openai.{sb.ns(NS)}.svc:8080/v1"
    wake = status["scaleFromZero"]
    assert wake["url"] == url and wake["coldStartSeconds"] > 0
    assert wake["holdSeconds"] >= wake["coldStartSeconds"]
    ready = get_condition(status["conditions"], "Ready")
    assert f"the next request to {url} wakes it" in ready["message"]
    assert f"expected cold start {wake['coldStartSeconds']} s" in ready["message"]
    assert _pods(sb) == [] and sb.get("deployments", f"{NAME}-server", NS)["spec"]["replicas"] == 0

    text, usage, chunks = await chat_round_trip(sb.api, url, NAME, stream=True)

    assert "simulated" in text.lower() and PROMPT in text and usage is not None
    # It was held: no replica when it arrived, answered once the woken one was ready.
    [held] = add_on.log
    assert held.cold and held.status == 200
    assert held.waited_seconds >= 0.5  # the kubelet's simulated start
    assert add_on.wakes == [f"{sb.ns(NS)}/{NAME}"]
    assert sb.get("llmservices", NAME, NS)["spec"]["replicas"] == 1
    assert len(_pods(sb)) == 1
    await sb.wait_for(lambda: is_true(_status(sb).get("conditions", []), "Ready")
                      and get_condition(_status(sb)["conditions"], "Ready")["reason"] == "ReplicasReady",
                      what="Ready with one replica")

    # Warm now: the next request is not held and wakes nothing.
    whole, _, _ = await chat_round_trip(sb.api, url, NAME, stream=False)
    assert whole == text
    assert not add_on.log[-1].cold and add_on.wakes == [f"{sb.ns(NS)}/{NAME}"]


async def test_the_interceptor_routes_by_host_and_path_only(backend, parked):
    sb, add_on = parked
    # The interceptor itself, under a Host no HTTPScaledObject lists: a 404, and nothing wakes.
    transport_url = f"http://127.0.0.1:{add_on.port}"
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{transport_url}/v1/models",
                              headers={"Host": "elsewhere.llm.svc"}) as other:
            assert other.status == 404
        # The routed host, outside the /v1 prefix.
        async with client.get(f"{transport_url}/metrics",
                              headers={"Host": f"{NAME}-openai.{sb.ns(NS)}.svc:8080"}) as outside:
            assert outside.status == 404
    assert add_on.wakes == [] and add_on.log == []
    assert sb.get("llmservices", NAME, NS)["spec"]["replicas"] == 0


async def test_a_held_request_is_cut_at_the_condition_wait_when_nothing_wakes(backend, parked):
    sb, add_on = parked
    await add_on.stop_scaling()  # KEDA is down: nothing raises the replicas
    # The operator would put its own conditionWait back on its next reconcile (it corrects drift
    # in the objects it owns); this test is about the interceptor alone.
    await sb.stop_operator()
    await sb.api._call("PATCH", f"/apis/http.keda.sh/v1alpha1/namespaces/{sb.ns(NS)}/httpscaledobjects/{NAME}",
                       body={"spec": {"timeouts": {"conditionWait": "1s"}}},
                       content_type="application/merge-patch+json")
    url = _status(sb)["endpoints"]["openai"]
    with pytest.raises(openai.InternalServerError) as error:
        await chat_round_trip(sb.api, url, NAME, stream=False)
    assert error.value.status_code == 502 and "error on backend" in error.value.response.text
    [held] = add_on.log
    assert held.cold and held.status == 502 and add_on.wakes == []
    assert 1.0 <= held.waited_seconds < 3.0
    assert _pods(sb) == []
