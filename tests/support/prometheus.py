"""A real Prometheus server, prometheus-adapter and Prometheus Operator (``tests/prometheus``,
built from their Go modules) for the tests.

:class:`PrometheusOperator` runs the Prometheus Operator against the real control plane with
its own CRDs and one ``Prometheus`` resource that selects every PodMonitor; it writes the
scrape configuration for the chart's ``PodMonitor`` into that resource's Secret, as in a
cluster, and :meth:`PrometheusOperator.scrape_jobs` reads it back as the Prometheus pod's
config-reloader would (gunzipped, ``$(VAR)`` expanded). The Prometheus resource has no
replicas: :class:`PrometheusServer` runs the binary on this machine with those jobs,
discovering pods through the Kubernetes API (the real control plane) and scraping them where
they listen. :class:`PrometheusAdapter` serves the custom metrics API from it with the rules of
``docs/operations/prometheus-adapter-values.yaml``, registered with the control plane's
aggregation layer as the prometheus-community chart registers it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from .cluster import chart_manifests
from .real_cluster import ControlPlane, answers, free_port, path_of, stop_process, tied_to_parent

__all__ = ["prometheus_binaries", "serving_pod_monitor", "PrometheusOperator", "PrometheusServer",
           "PrometheusAdapter", "until", "free_port", "operator_metrics"]


def prometheus_binaries(root: Path) -> Path | None:
    """The directory ``tests/prometheus/build`` built its servers into (``prometheus``,
    ``adapter``, ``prometheus-operator`` with ``crds/``, ``interceptor``) for the current
    sources, else None."""
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


class _CrdLoader(yaml.SafeLoader):
    """YAML 1.1's ``=`` "value" tag, which PyYAML cannot construct, read as the string it is
    (the Prometheus Operator's CRDs list ``=`` among a matcher's operators)."""


_CrdLoader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:value"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

# The config-reloader beside Prometheus expands ``$(VAR)`` from the pod's environment before
# Prometheus reads the file (thanos-io/thanos pkg/reloader/reloader.go, ``envRe`` and
# ``expandEnv``: an unset variable is an error); the operator sets SHARD and POD_NAME there
# (prometheus-operator pkg/operator/config_reloader.go).
_ENV_REFERENCE = re.compile(r"\$\(([a-zA-Z_0-9]+)\)")


class PrometheusOperator:
    """The Prometheus Operator on ``plane`` until :meth:`stop`: its CRDs installed, the binary
    running as the admin, and a ``Prometheus`` named ``kiln-test`` in ``kiln-system`` that
    selects every PodMonitor, with no replicas (a pod would find no kubelet here)."""

    NAME, NAMESPACE = "kiln-test", "kiln-system"

    def __init__(self, binaries: Path, plane: ControlPlane, ready_timeout: float = 60.0) -> None:
        self._plane = plane
        crds = [yaml.load(path.read_text(), Loader=_CrdLoader) for path in sorted((binaries / "crds").glob("*.yaml"))]
        for crd in crds:
            plane.apply(crd)
        for crd in crds:
            plane.wait_established(crd["metadata"]["name"], timeout=ready_timeout)
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-prometheus-operator-")
        self.log = Path(self._dir.name) / "operator.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(binaries / "prometheus-operator"), f"--web.listen-address=127.0.0.1:{free_port()}"],
                env={**os.environ, "KUBECONFIG": str(plane.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        plane.apply({"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
                     "metadata": {"name": self.NAME, "namespace": self.NAMESPACE},
                     "spec": {"replicas": 0, "podMonitorSelector": {}, "podMonitorNamespaceSelector": {}}},
                    plural="prometheuses")

    def scrape_jobs(self, monitor: dict[str, Any], kubeconfig: Path, timeout: float = 60.0) -> list[dict[str, Any]]:
        """``monitor`` applied, and the scrape jobs the operator wrote for it once they name its
        namespaces, each discovering pods through the API server ``kubeconfig`` names (in its
        pod, Prometheus would use its ServiceAccount)."""
        self._plane.apply(monitor)
        meta = monitor["metadata"]
        wanted = (monitor["spec"].get("namespaceSelector") or {}).get("matchNames")
        secret = self._plane.server + path_of("secrets", self.NAMESPACE, f"prometheus-{self.NAME}")
        env = {"SHARD": "0", "POD_NAME": f"prometheus-{self.NAME}-0"}
        deadline = time.monotonic() + timeout
        while True:
            response = self._plane.http.get(secret, timeout=10)
            if response.status_code == 200:
                text = gzip.decompress(base64.b64decode(response.json()["data"]["prometheus.yaml.gz"])).decode()
                config = yaml.safe_load(_ENV_REFERENCE.sub(lambda m: env[m.group(1)], text))
                jobs = [job for job in config.get("scrape_configs") or []
                        if job["job_name"].startswith(f"podMonitor/{meta['namespace']}/{meta['name']}/")]
                if jobs and all(sd.get("namespaces", {}).get("names") == wanted
                                for job in jobs for sd in job["kubernetes_sd_configs"]):
                    for job in jobs:
                        for sd in job["kubernetes_sd_configs"]:
                            sd["kubeconfig_file"] = str(kubeconfig)
                    return jobs
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prometheus Operator wrote no scrape job for {meta['name']}: "
                                   f"{self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self._process, 30)
        self._dir.cleanup()


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

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
            while not answers(f"https://127.0.0.1:{port}/readyz"):
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
