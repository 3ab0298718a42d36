"""A real Prometheus server and prometheus-adapter (``tests/prometheus``, built from their Go
modules) for the tests.

:func:`pod_monitor_scrape_config` turns the chart's ``PodMonitor`` into the scrape job the
Prometheus Operator would write for it, rule for rule as ``generatePodMonitorConfig`` does
(prometheus-operator/prometheus-operator, ``pkg/prometheus/promcfg.go``: the
``__tmp_prometheus_job_name`` rule of ``initRelabelings``, ``generateRunningFilter``'s drop of
Failed and Succeeded pods, a keep per ``matchLabels`` key on the label and its
``labelpresent`` twin, a keep on the port's name, then ``namespace``, ``container``, ``pod``,
``job`` = ``<namespace>/<name>``, ``endpoint`` = the port, and the endpoint's own
``relabelings`` last). It refuses a field of the PodMonitor it does not translate, so a chart
change that this stand-in for the Prometheus Operator would miss fails the test instead.
:class:`PrometheusServer` runs the binary with that job, discovering pods through the
Kubernetes API (the real control plane) and scraping them where they listen.
:class:`PrometheusAdapter` serves the custom metrics API from it with the rules of
``docs/operations/prometheus-adapter-values.yaml``, registered with the control plane's
aggregation layer as the prometheus-community chart registers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from .cluster import chart_manifests
from .real_cluster import ControlPlane, stop_process, tied_to_parent

__all__ = ["prometheus_binaries", "serving_pod_monitor", "pod_monitor_scrape_config", "PrometheusServer",
           "PrometheusAdapter", "until", "free_port", "operator_metrics"]

_ENDPOINT_FIELDS = {"port", "interval", "relabelings"}
_SPEC_FIELDS = {"selector", "namespaceSelector", "podMetricsEndpoints"}
_RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex",
                 "replacement": "replacement", "action": "action", "separator": "separator"}


def prometheus_binaries(root: Path) -> Path | None:
    """The directory ``tests/prometheus/build`` built ``prometheus`` and ``adapter`` into for
    the current sources, else None."""
    result = subprocess.run([str(root / "tests" / "prometheus" / "build")], capture_output=True,
                            text=True, env={**os.environ, "KILN_PROMETHEUS_BUILD": "never"})
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def serving_pod_monitor(namespace: str) -> dict[str, Any]:
    """The chart's ``servingPodMonitor`` for a release watching ``namespace``, scraping every
    second."""
    [monitor] = [obj for obj in chart_manifests({"metrics": {"servingPodMonitor": {"enabled": True, "interval": "1s"}},
                                                 "watchNamespaces": [namespace]})
                 if obj["kind"] == "PodMonitor"]
    return monitor


async def until(check: Any, timeout: float, what: str) -> Any:
    """``check()`` (blocking: an HTTP API) off the event loop, where the simulated pods that
    Prometheus scrapes are served, until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await asyncio.to_thread(check):
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _label_name(name: str) -> str:
    # promcfg.go sanitizeLabelName: every character outside [a-zA-Z0-9_] becomes "_".
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_monitor_scrape_config(monitor: dict[str, Any], kubeconfig: Path) -> list[dict[str, Any]]:
    """The scrape jobs for ``monitor``, one per ``podMetricsEndpoints`` entry, discovering pods
    through the API server ``kubeconfig`` names."""
    spec = monitor["spec"]
    if set(spec) - _SPEC_FIELDS or set(spec["selector"]) - {"matchLabels"}:
        raise ValueError(f"PodMonitor fields this translation does not know: {sorted(spec)}")
    meta = monitor["metadata"]
    namespaces = spec.get("namespaceSelector") or {}
    sd: dict[str, Any] = {"role": "pod", "kubeconfig_file": str(kubeconfig)}
    if not namespaces.get("any"):
        sd["namespaces"] = {"names": list(namespaces.get("matchNames") or [meta["namespace"]])}
    jobs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        if set(endpoint) - _ENDPOINT_FIELDS:
            raise ValueError(f"podMetricsEndpoints fields this translation does not know: {sorted(endpoint)}")
        relabel: list[dict[str, Any]] = [
            {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"}]
        for key, value in sorted(spec["selector"]["matchLabels"].items()):
            relabel.append({"action": "keep", "regex": f"({value});true", "source_labels": [
                f"__meta_kubernetes_pod_label_{_label_name(key)}",
                f"__meta_kubernetes_pod_labelpresent_{_label_name(key)}"]})
        relabel += [
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": endpoint["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            {"target_label": "endpoint", "replacement": endpoint["port"]}]
        for rule in endpoint.get("relabelings") or []:
            relabel.append({_RELABEL_KEYS[k]: v for k, v in rule.items()})
        job: dict[str, Any] = {"job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{index}",
                               "kubernetes_sd_configs": [sd], "relabel_configs": relabel}
        if "interval" in endpoint:
            job["scrape_interval"] = endpoint["interval"]
        jobs.append(job)
    return jobs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def operator_metrics(registry: CollectorRegistry) -> Iterator[tuple[Any, str]]:
    """The operator's metrics on a free loopback port, served by the same
    ``prometheus_client.start_http_server`` as its ``--metrics-port``: ``(server, "host:port")``."""
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


class PrometheusServer:
    """``prometheus`` on a free loopback port with ``jobs`` (and ``rule_files``, evaluated
    every second); ``url`` is its base URL."""

    def __init__(self, binaries: Path, jobs: list[dict[str, Any]], ready_timeout: float = 60.0,
                 rule_files: Sequence[Path] = ()) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-prometheus-")
        work = Path(self._dir.name)
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                          "rule_files": [str(path) for path in rule_files],
                                          "scrape_configs": jobs}))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = work / "prometheus.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(binaries / "prometheus"), f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prometheus did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector, as ``/api/v1/query`` returns it."""
        body = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {promql!r}: {body}")
        return list(body["data"]["result"])

    def api(self, path: str) -> Any:
        """``/api/v1/<path>``'s data (targets, rules, alerts)."""
        body = requests.get(f"{self.url}/api/v1/{path}", timeout=10).json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus answered /api/v1/{path} with {body}")
        return body["data"]

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def stop(self) -> None:
        stop_process(self._process, 30)
        self._dir.cleanup()


class PrometheusAdapter:
    """prometheus-adapter on a free loopback port, reading ``prometheus`` with ``rules`` (the
    chart's ``rules.custom``), registered as ``v1beta1.custom.metrics.k8s.io`` with ``plane``
    until :meth:`stop`.

    The APIService names a Service, as the prometheus-community chart's does
    (``templates/custom-metrics-apiservice.yaml``: v1beta1, ``insecureSkipTLSVerify`` without
    its TLS values). The control plane has no kube-proxy, so the Service is an ExternalName
    for localhost, which the aggregator dials at the APIService's port
    (k8s.io/apiserver ``pkg/util/proxy/proxy.go``, ``ResolveCluster``)."""

    def __init__(self, binaries: Path, plane: ControlPlane, prometheus: str,
                 rules: list[dict[str, Any]], ready_timeout: float = 90.0) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-adapter-")
        work = Path(self._dir.name)
        config = work / "config.yaml"
        config.write_text(yaml.safe_dump({"rules": rules}))
        port = free_port()
        kubeconfig = str(plane.kubeconfig)
        self.log = work / "adapter.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(binaries / "adapter"), f"--secure-port={port}", "--bind-address=127.0.0.1",
                 f"--cert-dir={work / 'certs'}", f"--prometheus-url={prometheus}", f"--config={config}",
                 "--metrics-relist-interval=2s", f"--lister-kubeconfig={kubeconfig}",
                 f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}"],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        self._plane = plane
        self._objects = [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "kiln-test-prometheus-adapter", "namespace": "kube-system"},
             "spec": {"type": "ExternalName", "externalName": "localhost"}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
             "spec": {"service": {"name": "kiln-test-prometheus-adapter", "namespace": "kube-system",
                                  "port": port},
                      "group": "custom.metrics.k8s.io", "version": "v1beta1",
                      "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100, "versionPriority": 100}}]
        deadline = time.monotonic() + ready_timeout
        try:
            while not self._answers(f"https://127.0.0.1:{port}/readyz"):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prometheus-adapter did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.2)
            for obj in self._objects:
                plane.apply(obj)
            while not self._available():
                if time.monotonic() > deadline:
                    raise RuntimeError("v1beta1.custom.metrics.k8s.io not Available: "
                                       f"{self.log.read_text()[-2000:]}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _answers(url: str) -> bool:
        # Its serving certificate is self-signed at start, as the APIService's
        # insecureSkipTLSVerify has it; only readiness is asked here.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                return requests.get(url, verify=False, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def _available(self) -> bool:
        found = self._plane.http.get(f"{self._plane.server}/apis/apiregistration.k8s.io/v1/apiservices/"
                                     "v1beta1.custom.metrics.k8s.io", timeout=10).json()
        return any(c["type"] == "Available" and c["status"] == "True"
                   for c in (found.get("status") or {}).get("conditions") or [])

    def metric(self, namespace: str, name: str, selector: str, metric_selector: str) -> dict[str, Any]:
        """The custom metrics API's answer for ``name`` of the pods ``selector`` picks, through
        the API server, as the HPA controller asks for it."""
        return self._plane.http.get(
            f"{self._plane.server}/apis/custom.metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/*/{name}",
            params={"labelSelector": selector, "metricLabelSelector": metric_selector}, timeout=10).json()

    def stop(self) -> None:
        for obj in reversed(self._objects):
            self._plane.delete(obj)
        stop_process(self._process, 30)
        self._dir.cleanup()
