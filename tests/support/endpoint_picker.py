"""The Gateway API Inference Extension's endpoint picker (``tests/gateway``: EPP v1.5.0 built from
its Go module) run on this machine as the pod the operator rendered would run it.

:class:`EndpointPicker` takes the picker's Deployment and ConfigMap as the operator wrote them
on the real control plane and runs the binary with that Deployment's arguments and
environment, its plugins file, and the identity of its ServiceAccount (a token from the
TokenRequest API, so the Role the operator wrote is what it may read). Only its own listening
ports move to free ones. It scrapes each serving pod at its address and the pool's target port,
where the simulated kubelet serves the pod's Triton page (each pod has its own loopback
address on the real control plane, :mod:`kiln.demo.apikubelet`).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .real_cluster import ControlPlane, free_port, stop_process, tied_to_parent

__all__ = ["epp_binary", "EndpointPicker", "health"]

CONFIG_MOUNT = "/config/"


def epp_binary(root: Path) -> Path | None:
    """Where ``tests/gateway/build`` put the picker for the current sources, else None."""
    result = subprocess.run([str(root / "tests" / "gateway" / "build")], capture_output=True,
                            text=True, env={**os.environ, "KILN_GATEWAY_BUILD": "never"})
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def health(address: str, service: str, timeout: float = 5.0) -> int:
    """The gRPC health status (grpc.health.v1: 1 SERVING, 2 NOT_SERVING) a kubelet's grpc
    probe reads, by hand: HealthCheckRequest is field 1, the service name; the response's
    field 1 is the status."""
    name = service.encode()
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda body: body,
                                    response_deserializer=lambda body: body)
        answer = check(b"\n" + bytes([len(name)]) + name, timeout=timeout)
    return answer[1] if len(answer) == 2 and answer[0] == 0x08 else 0


class EndpointPicker:
    def __init__(self, binary: Path, plane: ControlPlane, deployment: dict[str, Any],
                 config_map: dict[str, Any]) -> None:
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        namespace = deployment["metadata"]["namespace"]
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-epp-")
        work = Path(self._dir.name)
        for key, text in config_map["data"].items():
            (work / key).write_text(text)
        token = plane.http.post(
            f"{plane.server}/api/v1/namespaces/{namespace}/serviceaccounts/{pod['serviceAccountName']}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                  "spec": {"expirationSeconds": 3600}}, timeout=10)
        token.raise_for_status()
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "epp",
            "clusters": [{"name": "plane", "cluster": {"server": plane.server,
                                                        "certificate-authority": plane.ca_file}}],
            "users": [{"name": "epp", "user": {"token": token.json()["status"]["token"]}}],
            "contexts": [{"name": "epp", "context": {"cluster": "plane", "user": "epp",
                                                      "namespace": namespace}}]}))
        fields = {"metadata.namespace": namespace, "metadata.name": f"{deployment['metadata']['name']}-0"}
        env = {item["name"]: item["value"] if "value" in item
               else fields[item["valueFrom"]["fieldRef"]["fieldPath"]] for item in container.get("env", [])}
        self.health_port, self.metrics_port, grpc_port = free_port(), free_port(), free_port()
        args = [arg.replace(CONFIG_MOUNT, f"{work}/") for arg in container["args"]]
        self.log = work / "epp.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(binary), *args, f"--grpc-port={grpc_port}", f"--grpc-health-port={self.health_port}",
                 f"--metrics-port={self.metrics_port}"],
                env={**os.environ, **env, "KUBECONFIG": str(kubeconfig)}, cwd=work,
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)

    def serving(self, timeout: float = 60.0) -> bool:
        """Until its health service says SERVING (as the Deployment's readiness probe asks it),
        or it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                if health(f"127.0.0.1:{self.health_port}", "inference-extension") == 1:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.3)
        return False

    def exited(self) -> int | None:
        return self._process.poll()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Its own metrics page (port 9090 in the pod), parsed with prometheus_client."""
        text = requests.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def stop(self) -> None:
        stop_process(self._process, 10)
        self._dir.cleanup()

    def __enter__(self) -> EndpointPicker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
