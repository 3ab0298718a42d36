"""spec.gateway on both back-ends: the operator applies the route, the pool and its
endpoint picker, owned by the service; without the Gateway API / Inference Extension CRDs
the service stalls with the install commands and nothing of it is deployed."""

from __future__ import annotations

import copy

import yaml

from kiln.decide import claim
from kiln.decide.conditions import get_condition, is_true

from ..conftest import ROOT

NS = "llm"
GATEWAY = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8-gateway.yaml").read_text())


async def _run(sb, backend="emulator"):
    sb.add_namespace(NS)
    if backend == "real":  # the chart grants the gateway objects' writes only in gateway.namespaces
        sb.grant_chart_roles(NS, gateway=True)
    await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "simulated"})
    await sb.start_operator()
    sb.start_kubelet()
    await sb.create(copy.deepcopy(GATEWAY))


async def test_the_gateway_objects_are_applied_and_owned(make_sandbox, backend, monkeypatch):
    """And GatewayReady follows what a Gateway controller writes in the route's status (this
    test writes it, as one would): no watch reports a route's status, so at the next full
    resync (every FULL_RESYNC_SECONDS, 1 s here) or any earlier reconcile."""
    from kiln.controller import handlers

    monkeypatch.setattr(handlers, "FULL_RESYNC_SECONDS", 1.0)
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            timings={"resync_period": 1.0}) as sb:
        await _run(sb, backend)

        def ready():
            svc = sb.get("llmservices", "llama-8b-gw", NS)
            return svc if svc and is_true((svc.get("status") or {}).get("conditions", []),
                                          "Ready") else None
        svc = await sb.wait_for(ready, what="llama-8b-gw Ready")
        uid = svc["metadata"]["uid"]
        [route] = sb.objects("httproutes")
        [pool] = sb.objects("inferencepools")
        assert route["spec"]["rules"][0]["backendRefs"][0]["name"] == pool["metadata"]["name"]
        picker = sb.get("deployments", "llama-8b-gw-epp", NS)
        assert picker is not None and sb.get("configmaps", "llama-8b-gw-epp", NS) is not None
        for obj in (route, pool, picker):
            assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
        # The picker's pods are not serving pods: the service still counts one replica.
        assert svc["status"]["readyReplicas"] == 1

        def gateway_ready(reason):
            def check():
                condition = _condition(sb, "llama-8b-gw", NS, "GatewayReady")
                return condition if condition and condition["reason"] == reason else None
            return check
        pending = await sb.wait_for(gateway_ready("RoutePending"), what="GatewayReady RoutePending")
        assert pending["status"] == "Unknown"  # no Gateway controller runs here
        parent = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                "name": "inference-gateway", "namespace": "gateway"},
                  "controllerName": "example.com/gateway-controller"}

        async def say(accepted, reason, message=""):
            [route] = sb.objects("httproutes")
            await sb.api.patch_status(route, {"parents": [{**parent, "conditions": [
                {"type": "Accepted", "status": accepted, "reason": reason, "message": message,
                 "observedGeneration": route["metadata"]["generation"],
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "",
                 "observedGeneration": route["metadata"]["generation"],
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]})
        await say("True", "Accepted")
        routed = await sb.wait_for(gateway_ready("GatewayRouted"), what="GatewayReady GatewayRouted")
        assert routed["status"] == "True"
        await say("False", "NotAllowedByListeners", "no listener admits this namespace")
        refused = await sb.wait_for(gateway_ready("RouteNotAccepted"), what="GatewayReady RouteNotAccepted")
        assert refused["status"] == "False" and "no listener admits this namespace" in refused["message"]
        assert is_true(sb.get("llmservices", "llama-8b-gw", NS)["status"]["conditions"], "Ready")
        await sb.stop_operator()
        await sb.stop_kubelet()


async def test_without_the_crds_the_service_stalls_with_the_install_commands(make_sandbox, backend):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            missing_apis=("inference.networking.k8s.io/v1/inferencepools",)) as sb:
        await _run(sb, backend)

        def stalled():
            svc = sb.get("llmservices", "llama-8b-gw", NS)
            condition = svc and get_condition((svc.get("status") or {}).get("conditions", []),
                                              "Stalled")
            return condition if condition and condition["status"] == "True" else None
        condition = await sb.wait_for(stalled, what="Stalled")
        assert condition["reason"] == "MissingDependency"
        assert condition["message"].startswith("spec.gateway: the cluster does not serve InferencePool")
        assert "gateway-api-inference-extension/releases/download/v1.5.0" in condition["message"]
        assert sb.objects("deployments") == [] and sb.objects("httproutes") == []
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()


OTHER = "llm-b"


def _condition(sb, name, namespace, type_="Stalled"):
    svc = sb.get("llmservices", name, namespace)
    return svc and get_condition((svc.get("status") or {}).get("conditions", []), type_)


def _routes(sb, namespace):
    return [r for r in sb.objects("httproutes") if r["metadata"]["namespace"] == sb.ns(namespace)]


async def test_a_model_name_on_a_gateway_is_the_services_that_routes_it_and_another_waits_for_it(
        make_sandbox, backend, monkeypatch):
    """Two services serving one model name on one Gateway would tie, and the Gateway gives
    the requests to the older HTTPRoute: a tenant could take another's prompts by claiming
    its name, in a new service or by renaming an old one. The service whose route routes the
    name keeps it; another that asks for it stalls (ModelNameInUse) with no route and no
    serving pods, not naming another tenant's service, and takes the name once it is free. A
    renamed service keeps the name its route still routes until the route changes."""
    monkeypatch.setattr(claim, "RETRY_SECONDS", 1.0)
    # A service whose route routes a name looks again at the next resync tick once another
    # service's claims of it change.
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            timings={"resync_period": 1.0}) as sb:
        for namespace in (NS, OTHER):
            sb.add_namespace(namespace)
            if backend == "real":
                sb.grant_chart_roles(namespace, gateway=True)
            await sb.add_secret(namespace, "hf-token", {"HF_TOKEN": "simulated"})
        await sb.start_operator()
        sb.start_kubelet()
        name = GATEWAY["spec"]["servedModelName"]

        def ready(svc_name, namespace):
            return lambda: (_condition(sb, svc_name, namespace, "Ready") or {}).get("status") == "True"

        def in_use(svc_name, namespace):
            def check():
                condition = _condition(sb, svc_name, namespace)
                return condition if condition and condition["reason"] == "ModelNameInUse" else None
            return check

        # An older service in the other namespace, serving another name on the same Gateway.
        older = copy.deepcopy(GATEWAY)
        older["metadata"].update(name="older", namespace=OTHER)
        older["spec"]["servedModelName"] = "another-model"
        await sb.create(older)
        await sb.wait_for(ready("older", OTHER), what="older Ready")
        await sb.create(copy.deepcopy(GATEWAY))
        await sb.wait_for(ready("llama-8b-gw", NS), what="llama-8b-gw Ready")

        impostor = copy.deepcopy(GATEWAY)
        impostor["metadata"].update(name="impostor", namespace=OTHER)
        await sb.create(impostor)
        condition = await sb.wait_for(in_use("impostor", OTHER), what="impostor ModelNameInUse")
        assert condition["message"].startswith(
            f"spec.servedModelName: the model name {name!r} is served on Gateway gateway/inference-gateway "
            "by an LLMService in another namespace, whose route has routed it since")
        assert sb.ns(NS) not in condition["message"] and "llama-8b-gw" not in condition["message"]
        assert [r["metadata"]["name"] for r in _routes(sb, OTHER)] == ["older-openai"]
        assert sb.get("deployments", "impostor-server", OTHER) is None

        # The older service takes the name by a rename: it is the later claim, and waits.
        await sb.patch_spec(OTHER, "older", {"servedModelName": name})
        await sb.wait_for(in_use("older", OTHER), what="older ModelNameInUse")
        [route] = _routes(sb, NS)
        assert route["spec"]["rules"][0]["matches"][0]["headers"][0]["value"] == name
        # Its route for the name it had stays, as everything of a stalled service does, and so
        # does its claim of that name: the Gateway still sends it there.
        [kept] = _routes(sb, OTHER)
        assert kept["spec"]["rules"][0]["matches"][0]["headers"][0]["value"] == "another-model"
        latecomer = copy.deepcopy(GATEWAY)
        latecomer["metadata"]["name"] = "latecomer"
        latecomer["spec"]["servedModelName"] = "another-model"
        await sb.create(latecomer)
        await sb.wait_for(in_use("latecomer", NS), what="latecomer ModelNameInUse")
        assert [r["metadata"]["name"] for r in _routes(sb, NS)] == ["llama-8b-gw-openai"]

        # The name is free. The renamed service's route, the older one, takes it, as the
        # Gateway would rank them; the other gives way, and the name the rename let go is
        # the latecomer's.
        await sb.api.delete(sb.get("llmservices", "llama-8b-gw", NS))
        await sb.wait_for(ready("older", OTHER), what="older Ready on its new name")
        await sb.wait_for(ready("latecomer", NS), what="latecomer Ready on the name older let go")
        condition = await sb.wait_for(in_use("impostor", OTHER), what="impostor waiting for older")
        assert "by LLMService older, whose route has routed it since" in condition["message"]

        def routed():
            return {r["metadata"]["name"]: r["spec"]["rules"][0]["matches"][0]["headers"][0]["value"]
                    for r in sb.objects("httproutes") if r["metadata"]["namespace"] in (sb.ns(NS), sb.ns(OTHER))}
        await sb.wait_for(lambda: routed() == {"older-openai": name, "latecomer-openai": "another-model"},
                          what="one route per name", timeout=60)
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()
