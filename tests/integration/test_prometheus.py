"""The builtin autoscaler on a real Prometheus (``metricsSource: prometheus``), and keda mode's
query evaluated by it.

The chain is real from the pods to the decision: the chart's ``PodMonitor`` turned into scrape
jobs by the Prometheus Operator itself (``tests/support/prometheus.py``), Prometheus
(``tests/prometheus``, both built from their Go modules) discovering the serving pods through the real control plane's API
and scraping their Triton metrics pages where the simulated kubelet serves them, the
operator's PromQL evaluated by Prometheus's engine, and the law scaling on what comes back.
Runs on the real back-end only: Prometheus's Kubernetes discovery needs a real API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json

import pytest
import requests

from kiln.api import parse_service_spec
from kiln.autoscale.metrics import KV_METRIC, parse_triton_metrics
from kiln.controller.prometheus import PrometheusMetrics
from kiln.decide.conditions import is_true
from kiln.render.scaling import scaled_object

from ..support.cluster import chart_manifests
from ..support.prometheus import PrometheusServer, operator_metrics, serving_pod_monitor, until
from ..support.real_cluster import RealSandbox
from .test_operator import FAST_SCALING, MISTRAL, NS

NAME = "mistral-7b"


def _dashboard() -> list[str]:
    """The chart's Grafana dashboard's queries, with its variables at "All" (``.*``)."""
    [config_map] = [obj for obj in chart_manifests({"dashboard": {"enabled": True}})
                    if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-dashboard")]
    panels = json.loads(config_map["data"]["kiln.json"])["panels"]
    return [target["expr"].replace("$namespace", ".*").replace("$service", ".*")
            for panel in panels for target in panel["targets"]]


def _ready(sb) -> bool:
    svc = sb.get("llmservices", NAME, NS)
    return svc is not None and is_true((svc.get("status") or {}).get("conditions", []), "Ready")


async def test_the_builtin_law_scales_on_what_a_real_prometheus_scraped(real_plane, prometheus_binaries,
                                                                         prometheus_operator):
    timing = {**FAST_SCALING, "autoscale_period": 0.5,
              "autoscale_timing": {"window_seconds": 1.0, "stale_seconds": 5.0}}
    async with RealSandbox(real_plane, build_seconds=0.2, start_seconds=0.2, retry_delay=0.2, **timing) as sb:
        sb.add_namespace(NS)
        namespace = sb.ns(NS)
        monitor = serving_pod_monitor(namespace)
        await sb.start_operator()
        await sb.wait_for(lambda: sb.operator_context is not None, what="the operator's context")
        servers = contextlib.ExitStack()  # the operator's metrics endpoint and Prometheus
        _, address = servers.enter_context(operator_metrics(sb.operator_context.telemetry.registry))
        prometheus = servers.enter_context(PrometheusServer(prometheus_binaries, [
            *prometheus_operator.scrape_jobs(monitor, real_plane.kubeconfig),
            {"job_name": "kiln-metrics", "static_configs": [{"targets": [address]}]}]))
        try:
            manifest = copy.deepcopy(MISTRAL)
            manifest["spec"]["autoscaling"] = {
                "mode": "builtin", "minReplicas": 1, "maxReplicas": 3, "targetKVCacheUtilization": 0.75,
                "scaleDownStabilizationSeconds": 2, "metricsSource": "prometheus",
                "prometheusUrl": prometheus.url}
            sb.start_kubelet()
            await sb.create(manifest)
            await sb.wait_for(lambda: _ready(sb), what="Ready")

            # Discovered through the API server and scraped where the pod listens, with the
            # labels the operator's queries select on.
            def scraped():
                return prometheus.query(f'{KV_METRIC}{{llmservice="{NAME}",kv_cache_block_type="max"}}')
            [series] = await until(scraped, 60, "the serving pod scraped")
            labels = series["metric"]
            [pod] = [p for p in sb.objects("pods") if p["metadata"]["name"] == labels["pod"]]
            assert labels["namespace"] == namespace and labels["container"] == "server"
            assert labels["job"] == f"kiln-system/{monitor['metadata']['name']}" and labels["endpoint"] == "metrics"
            targets = await asyncio.to_thread(prometheus.targets)
            [target] = [t for t in targets if t["labels"].get("pod") == labels["pod"]]
            assert target["health"] == "up" and target["scrapeUrl"].startswith(f"http://{pod['status']['podIP']}:")

            # The operator's source reads, through Prometheus, what the pod's own page says.
            page = (await asyncio.to_thread(requests.get, target["scrapeUrl"], timeout=5)).text
            direct = parse_triton_metrics(page)
            source = PrometheusMetrics(prometheus.url)
            try:
                [sample] = await source.kv_samples(namespace, f"app.kubernetes.io/instance={NAME}")
            finally:
                await source.close()
            assert sample.replica == labels["pod"]
            assert (sample.max_blocks, sample.tokens_per_block) == (direct.max_blocks, direct.tokens_per_block)

            # keda mode's query, as KEDA would send it: the sum of the pods' KV fractions (the
            # simulated kubelet's default load keeps a third of the blocks in use).
            spec = parse_service_spec({**manifest["spec"], "autoscaling": {"mode": "keda"}})
            query = scaled_object(spec, NAME, namespace, None)["spec"]["triggers"][0]["metadata"]["query"]
            [keda] = await asyncio.to_thread(prometheus.query, query)
            assert float(keda["value"][1]) == pytest.approx(direct.used_blocks / direct.max_blocks, abs=0.05)

            # The law scales on it: load for 2.4 replicas' worth of KV blocks.
            sb.cluster.load[NAME] = 2.4
            await sb.wait_for(lambda: sb.objects("deployments")[0]["spec"]["replicas"] == 3, timeout=60,
                              what="3 replicas from Prometheus's figures")
            await until(lambda: len(scraped()) == 3, 60, "the new pods scraped")
            sb.cluster.load[NAME] = 0.2
            await sb.wait_for(lambda: sb.objects("deployments")[0]["spec"]["replicas"] == 1, timeout=60,
                              what="back to 1 replica")

            # The chart's dashboard, on what was scraped: every panel's query evaluates, and
            # each returns series but those of families the simulated pods do not export.
            queries = await asyncio.to_thread(lambda: {expr: prometheus.query(expr) for expr in _dashboard()})
            unexported = ("nv_inference_pending_request_count", "nv_inference_first_response_histogram_ms",
                          "kiln_reconcile_errors_total")  # the first two: Triton's own, not simulated
            empty = [expr for expr, result in queries.items()
                     if not result and not any(name in expr for name in unexported)]
            assert empty == []
            assert sb.operator_error is None
            await sb.stop_operator()
            await sb.stop_kubelet()
        finally:
            servers.close()
