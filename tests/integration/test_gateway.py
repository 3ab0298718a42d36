"""spec.gateway on both back-ends: the operator applies the route, the pool and its
endpoint picker, owned by the service; without the Gateway API / Inference Extension CRDs
the service stalls with the install commands and nothing of it is deployed."""

from __future__ import annotations

import copy

import yaml

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


async def test_the_gateway_objects_are_applied_and_owned(make_sandbox, backend):
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2) as sb:
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
        assert "gateway-api-inference-extension/releases/download/v1.6.0" in condition["message"]
        assert sb.objects("deployments") == [] and sb.objects("httproutes") == []
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()
