"""``autoscaling.mode: keda`` on a cluster that does not serve KEDA's ScaledObject: the service
stalls naming the field and the install command, before it applies anything, as keda-http, a
Gateway and LeaderWorkerSet do (kiln/decide/decide.py ``_check_dependencies``). Without the
check the apply of the ScaledObject failed with a 404 on every retry, the Deployment and its
neighbours applied, and the status kept saying the engine was building."""

from __future__ import annotations

import yaml

from kiln.decide.conditions import get_condition

from ..conftest import ROOT

NS = "llm"


async def test_keda_mode_without_keda_stalls_naming_the_field_and_the_install(make_sandbox, backend):
    service = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    service["metadata"]["namespace"] = NS
    service["spec"]["autoscaling"] = {"mode": "keda", "minReplicas": 1, "maxReplicas": 3}
    async with make_sandbox(build_seconds=0.2, start_seconds=0.1, retry_delay=0.2,
                            missing_apis=("keda.sh/v1alpha1/scaledobjects",)) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        await sb.create(service)
        name = service["metadata"]["name"]

        def stalled():
            svc = sb.get("llmservices", name, NS)
            condition = svc and get_condition((svc.get("status") or {}).get("conditions", []), "Stalled")
            return condition if condition and condition["status"] == "True" else None
        condition = await sb.wait_for(stalled, what="Stalled")
        assert condition["reason"] == "MissingDependency"
        assert condition["message"].startswith("spec.autoscaling.mode: keda needs ScaledObject (keda.sh/v1alpha1)")
        assert "helm install keda kedacore/keda" in condition["message"]
        assert sb.objects("deployments") == []
        assert sb.operator_error is None
        await sb.stop_operator()
        await sb.stop_kubelet()

