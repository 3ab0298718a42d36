"""spec.gateway on both back-ends: the operator applies the route, the pool and its
endpoint picker, owned by the service; without the Gateway API / Inference Extension CRDs
the service stalls with the install commands and nothing of it is deployed."""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from kiln.decide import claim
from kiln.decide.conditions import get_condition, is_true
from kiln.decide.policy import Policy
from kiln.render.platform import Platform

from ..conftest import ROOT

NS = "llm"
GATEWAY = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8-gateway.yaml").read_text())


async def _run(sb, backend="emulator", gateway_provider=""):
    sb.add_namespace(NS)
    if backend == "real":  # the chart grants the gateway objects' writes only in gateway.namespaces
        sb.grant_chart_roles(NS, gateway=True, gateway_provider=gateway_provider)
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


ISTIO = Policy(platform=Platform(gateway_provider="istio"))


async def test_with_istio_the_picker_gets_its_destination_rule(make_sandbox, backend):
    """gateway.provider istio: the operator writes the DestinationRule that has Istio's proxies
    reach the picker over TLS, owned by the service, with the chart's rights for it in the
    gateway namespace alone (on the real back-end, the Role the chart renders for that value)."""
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2, policy=ISTIO) as sb:
        await _run(sb, backend, gateway_provider="istio")

        def written():
            return sb.get("destinationrules", "llama-8b-gw-epp", NS)
        rule = await sb.wait_for(written, what="the picker's DestinationRule")
        svc = sb.get("llmservices", "llama-8b-gw", NS)
        assert rule["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
        assert rule["spec"]["host"] == f"llama-8b-gw-epp.{sb.ns(NS)}.svc.cluster.local"
        assert rule["spec"]["trafficPolicy"]["tls"] == {"mode": "SIMPLE", "insecureSkipVerify": True}
        await sb.wait_for(lambda: is_true((sb.get("llmservices", "llama-8b-gw", NS).get("status") or {})
                                          .get("conditions", []), "Ready"), what="Ready")
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()


async def test_with_istio_and_no_destination_rule_api_the_service_stalls(make_sandbox, backend):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2, policy=ISTIO,
                            missing_apis=("networking.istio.io/v1/destinationrules",)) as sb:
        await _run(sb, backend, gateway_provider="istio")

        def stalled():
            condition = _condition(sb, "llama-8b-gw", NS)
            return condition if condition and condition["status"] == "True" else None
        condition = await sb.wait_for(stalled, what="Stalled")
        assert condition["reason"] == "MissingDependency"
        assert "gateway.provider: istio" in condition["message"] and "DestinationRule" in condition["message"]
        assert sb.objects("httproutes") == [] and sb.objects("deployments") == []
        await sb.stop_operator()
        await sb.stop_kubelet()


OTHER = "llm-b"


async def test_each_gateways_model_list_holds_the_names_it_routes(make_sandbox, backend, tmp_path):
    """GET /v1/models through a Gateway (kiln/modellist.py): the operator keeps, in the ConfigMap
    the chart names, each Gateway's list of the model names its services' routes route (not one
    a service waits for), once each; and ``kiln model-list`` answers it from the ConfigMap's
    files. On the real back-end with the chart's Role for that ConfigMap alone."""
    from aiohttp.test_utils import TestClient, TestServer

    from kiln.modellist import MODEL_LIST_HEADER, model_list_app

    target = ("kiln-system", "kiln-model-list")  # the chart's release namespace and name
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            policy=Policy(model_list="/".join(target),
                                          model_list_gateways=("gateway/inference-gateway",))) as sb:
        for namespace in (NS, OTHER):
            sb.add_namespace(namespace)
            if backend == "real":
                sb.grant_chart_roles(namespace, gateway=True, model_list=True)
            await sb.add_secret(namespace, "hf-token", {"HF_TOKEN": "simulated"})
        await sb.start_operator()
        sb.start_kubelet()
        name = GATEWAY["spec"]["servedModelName"]
        key = "gateway_inference-gateway.json"

        def listed():
            data = (sb.get("configmaps", target[1], target[0]) or {}).get("data") or {}
            return [m["id"] for m in json.loads(data[key])["data"]] if key in data else []

        older = copy.deepcopy(GATEWAY)
        older["metadata"].update(name="older", namespace=OTHER)
        older["spec"]["servedModelName"] = "another-model"
        await sb.create(older)
        await sb.create(copy.deepcopy(GATEWAY))
        await sb.wait_for(lambda: listed() == ["another-model", name], what="both names listed")
        impostor = copy.deepcopy(GATEWAY)
        impostor["metadata"].update(name="impostor", namespace=OTHER)
        await sb.create(impostor)
        await sb.wait_for(lambda: (_condition(sb, "impostor", OTHER) or {}).get("reason") == "ModelNameInUse",
                          what="impostor ModelNameInUse")
        assert listed() == ["another-model", name]

        # What the chart's server answers on the Gateway's route, from the ConfigMap's files.
        for file, text in sb.get("configmaps", target[1], target[0])["data"].items():
            (tmp_path / file).write_text(text)
        async with TestClient(TestServer(model_list_app(tmp_path))) as client:
            answer = await (await client.get("/v1/models", headers={MODEL_LIST_HEADER: "gateway/inference-gateway"})).json()
        assert answer["object"] == "list"
        assert [(m["id"], m["object"], m["owned_by"]) for m in answer["data"]] == [
            ("another-model", "model", "Triton Inference Server"), (name, "model", "Triton Inference Server")]

        await sb.api.delete(sb.get("llmservices", "older", OTHER))
        await sb.wait_for(lambda: listed() == [name], what="the deleted service's name gone from the list")
        if backend == "real":  # the chart's server, Service and route, as the API server admits them
            from ..support.cluster import chart_manifests

            served = [o for o in chart_manifests({"gateway": {"modelList": {"gateways": ["gateway/inference-gateway"]}}})
                      if o["kind"] in ("Deployment", "Service", "HTTPRoute") and "model-list" in o["metadata"]["name"]]
            assert sorted(o["kind"] for o in served) == ["Deployment", "HTTPRoute", "Service"]
            for obj in served:
                sb.plane.apply(obj, dry_run=True)  # raises with the API server's answer if refused
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()
        if backend == "real":  # shared by every sandbox of the control plane
            sb.plane.http.delete(sb.plane.server + f"/api/v1/namespaces/{target[0]}/configmaps/{target[1]}", timeout=30)


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
        # impostor said ModelNameInUse before (naming llama-8b-gw's namespace only): wait for
        # its next look to name the new holder, rather than read the condition it already had.
        await sb.wait_for(lambda: (c := in_use("impostor", OTHER)()) and
                          "by LLMService older, whose route has routed it since" in c["message"],
                          what="impostor waiting for older")

        def routed():
            return {r["metadata"]["name"]: r["spec"]["rules"][0]["matches"][0]["headers"][0]["value"]
                    for r in sb.objects("httproutes") if r["metadata"]["namespace"] in (sb.ns(NS), sb.ns(OTHER))}
        await sb.wait_for(lambda: routed() == {"older-openai": name, "latecomer-openai": "another-model"},
                          what="one route per name", timeout=60)
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()


async def test_the_real_endpoint_picker_runs_as_rendered_and_reads_tritons_metrics(real_plane, epp_binary):
    """The picker Kiln writes, run: EPP v1.5.0 (tests/gateway, from its Go module) with the
    Deployment's arguments and environment, the ConfigMap's plugins and its ServiceAccount's
    token, against the real control plane. It passes its readiness check (gRPC health
    SERVING), finds the serving pod through the InferencePool, and reads the KV-cache fraction,
    the waiting and the scheduled requests from the pod's Triton metrics page by its Triton
    engine config. Before, v1.5.0 refused the metric flags Kiln passed and never started; with
    them taken out and no engine config it read vLLM's series, which Triton does not have."""
    from ..support.endpoint_picker import EndpointPicker
    from ..support.real_cluster import RealSandbox

    async with RealSandbox(real_plane, build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
        await _run(sb, "real")

        def ready():
            svc = sb.get("llmservices", "llama-8b-gw", NS)
            return svc if svc and is_true((svc.get("status") or {}).get("conditions", []), "Ready") else None
        await sb.wait_for(ready, what="llama-8b-gw Ready")
        deployment = sb.get("deployments", "llama-8b-gw-epp", NS)
        config_map = sb.get("configmaps", "llama-8b-gw-epp", NS)
        [pool] = sb.objects("inferencepools")
        [pod] = [p for p in sb.objects("pods") if p["metadata"]["labels"].get("app.kubernetes.io/component") == "server"]
        # Where the pool's target port is on the pod: the picker scrapes /metrics there.
        page = f"http://{pod['status']['podIP']}:{pool['spec']['targetPorts'][0]['number']}/metrics"
        sb.cluster.load["llama-8b-gw"] = 0.5  # some of the KV cache in use, so the figure is not 0
        with EndpointPicker(epp_binary, real_plane, deployment, config_map) as picker:
            assert await asyncio.to_thread(picker.serving), f"the picker did not become ready:\n{picker.log.read_text()[-3000:]}"
            pool_label = (("name", pool["metadata"]["name"]),)

            kv_series = ("inference_pool_average_kv_cache_utilization", pool_label)

            async def page_fraction():
                # Served by the simulated kubelet on this event loop: read from another thread.
                text = (await asyncio.to_thread(requests.get, page, timeout=5)).text
                return next(sample.value for family in text_string_to_metric_families(text)
                            for sample in family.samples if sample.labels.get("kv_cache_block_type") == "fraction")

            # The picker's figure follows the page's (it reads every 100 ms; the load settles).
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                fraction = await page_fraction()
                metrics = picker.metrics()
                if (metrics.get(("inference_pool_ready_pods", pool_label)) == 1
                        and metrics.get(kv_series) == pytest.approx(fraction, abs=0.01) and fraction > 0):
                    break
                assert asyncio.get_running_loop().time() < deadline, (fraction, metrics.get(kv_series))
                await asyncio.sleep(0.3)
            assert metrics[("inference_pool_average_queue_size", pool_label)] >= 0
            log = picker.log.read_text()
            # No series it looked for was missing (with vLLM's engine it logs "extract failed"
            # at every scrape). Its controller config logs an absent optional CRD (here
            # InferenceModelRewrite) at error level too, and goes on without it.
            errors = [line for line in log.splitlines() if '"level":"error"' in line
                      and '"logger":"controllerConfig"' not in line]
            assert not errors, errors[:3]
            assert picker.exited() is None
        await sb.stop_operator()
        await sb.stop_kubelet()
