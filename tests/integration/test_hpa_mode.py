"""``autoscaling.mode: hpa`` with every moving part real but the GPUs: the HPA Kiln renders,
scaled by the kube-controller-manager's own HPA controller through the LLMService's ``/scale``
subresource, on the custom metrics API served by prometheus-adapter (v0.12.0, with the rules
of ``docs/operations/prometheus-adapter-values.yaml``) through the control plane's aggregation
layer, from a Prometheus that discovered and scraped the serving pods as the chart's
PodMonitor has it. Real back-end only."""

from __future__ import annotations

import asyncio
import copy

import yaml

from kiln.autoscale.metrics import KV_METRIC
from kiln.decide.conditions import is_true

from ..conftest import ROOT
from ..support.prometheus import PrometheusAdapter, PrometheusServer, serving_pod_monitor, until
from ..support.real_cluster import RealSandbox
from .test_operator import MISTRAL, NS

NAME = "mistral-7b"
ADAPTER_RULES = yaml.safe_load((ROOT / "docs" / "operations" / "prometheus-adapter-values.yaml").read_text())


def _replicas(sb) -> tuple[int | None, int | None]:
    svc = sb.get("llmservices", NAME, NS) or {}
    deployments = sb.objects("deployments")
    return ((svc.get("spec") or {}).get("replicas"),
            deployments[0]["spec"]["replicas"] if deployments else None)


async def test_the_hpa_controller_scales_the_service_on_the_adapters_kv_fraction(real_plane, prometheus_binaries,
                                                                                  prometheus_operator):
    async with RealSandbox(real_plane, build_seconds=0.2, start_seconds=0.2, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        namespace = sb.ns(NS)
        prometheus = PrometheusServer(prometheus_binaries, prometheus_operator.scrape_jobs(
            serving_pod_monitor(namespace), real_plane.kubeconfig))
        adapter = None
        try:
            adapter = await asyncio.to_thread(PrometheusAdapter, prometheus_binaries, real_plane, prometheus.url,
                                              ADAPTER_RULES["rules"]["custom"])
            manifest = copy.deepcopy(MISTRAL)
            manifest["spec"]["autoscaling"] = {"mode": "hpa", "minReplicas": 1, "maxReplicas": 3,
                                               "targetKVCacheUtilization": 0.75,
                                               "scaleDownStabilizationSeconds": 2}
            await sb.start_operator()
            sb.start_kubelet()
            await sb.create(manifest)
            await sb.wait_for(lambda: (svc := sb.get("llmservices", NAME, NS)) is not None and is_true(
                (svc.get("status") or {}).get("conditions", []), "Ready"), what="Ready")
            [pod] = [p for p in sb.objects("pods") if p["metadata"]["name"].startswith(f"{NAME}-server-")]

            # The metric the HPA asks for, as it asks: the pods of the scale subresource's
            # selector, the metric selector of the HPA's spec.
            hpa = sb.get("horizontalpodautoscalers", NAME, NS)
            metric = hpa["spec"]["metrics"][0]["pods"]["metric"]
            selector = sb.get("llmservices", NAME, NS)["status"]["selector"]
            metric_selector = ",".join(f"{k}={v}" for k, v in metric["selector"]["matchLabels"].items())
            assert metric["name"] == KV_METRIC

            def served():
                items = adapter.metric(namespace, metric["name"], selector, metric_selector).get("items") or []
                return items if len(items) == 1 else None
            [item] = await until(served, 90, "the adapter serving the pod's KV fraction")
            assert item["describedObject"]["name"] == pod["metadata"]["name"]

            # Load for 2.4 replicas' worth of KV blocks: the HPA controller writes the service's
            # spec.replicas through /scale, and the operator follows with the Deployment.
            sb.cluster.load[NAME] = 2.4
            await sb.wait_for(lambda: _replicas(sb) == (3, 3), timeout=90,
                              what="the HPA controller scaling the service to 3")
            status = sb.get("horizontalpodautoscalers", NAME, NS)["status"]
            conditions = {c["type"]: c for c in status["conditions"]}
            assert conditions["AbleToScale"]["status"] == "True"
            assert conditions["ScalingActive"]["status"] == "True", conditions["ScalingActive"]
            [current] = status["currentMetrics"]
            assert current["type"] == "Pods" and current["pods"]["metric"]["name"] == KV_METRIC

            sb.cluster.load[NAME] = 0.2
            await sb.wait_for(lambda: _replicas(sb) == (1, 1), timeout=90, what="back to 1 replica")
            assert sb.operator_error is None
            await sb.stop_operator()
            await sb.stop_kubelet()
        finally:
            if adapter is not None:
                await asyncio.to_thread(adapter.stop)
            prometheus.stop()
