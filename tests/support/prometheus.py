"""A real Prometheus server (``tests/prometheus``, built from its Go module) for the tests.

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
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

__all__ = ["prometheus_binary", "pod_monitor_scrape_config", "PrometheusServer"]

_ENDPOINT_FIELDS = {"port", "interval", "relabelings"}
_SPEC_FIELDS = {"selector", "namespaceSelector", "podMetricsEndpoints"}
_RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex",
                 "replacement": "replacement", "action": "action", "separator": "separator"}


def prometheus_binary(root: Path) -> Path | None:
    """The binary ``tests/prometheus/build`` made for the current sources, else None."""
    result = subprocess.run([str(root / "tests" / "prometheus" / "build")], capture_output=True,
                            text=True, env={**os.environ, "KILN_PROMETHEUS_BUILD": "never"})
    return Path(result.stdout.strip()) if result.returncode == 0 else None


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """``prometheus`` on a free loopback port with ``jobs``; ``url`` is its base URL."""

    def __init__(self, binary: Path, jobs: list[dict[str, Any]], ready_timeout: float = 60.0) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-prometheus-")
        work = Path(self._dir.name)
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                          "scrape_configs": jobs}))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = work / "prometheus.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(binary), f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}"],
                stdout=log, stderr=subprocess.STDOUT)
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

    def targets(self) -> list[dict[str, Any]]:
        body = requests.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return list(body["data"]["activeTargets"])

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._dir.cleanup()
