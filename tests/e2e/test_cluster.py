"""Opt-in end-to-end suite against the cluster in KUBECONFIG, driven with kubectl.

    KILN_E2E=1 python -m pytest tests/e2e                 # kind, or any cluster
    KILN_E2E=1 KILN_E2E_GPU=1 python -m pytest tests/e2e  # also waits for Ready on real GPUs

It applies what ``helm template`` renders from ``charts/kiln`` (rendered by the real Helm engine,
helm-python-sdk: the CRDs, the ServiceAccount, its ClusterRole and binding, the operator's
Deployment at ``replicaCount: 0``) with ``kubectl apply --server-side``, checks the CRDs'
CEL admission, and runs the operator in this process with the chart's Deployment arguments,
authenticated as the chart's ServiceAccount (a token from ``kubectl create token``), so its
rights are exactly the chart's. Each test works in a throwaway namespace.

Without GPUs nothing serves, so every example can reach Ready only with the simulated kubelet
(:mod:`kiln.demo.apikubelet`: GPU nodes, Pod binding and status, simulated Triton and OpenAI
servers on loopback). It runs when the cluster has no nodes of its own (the control plane of
``tests/controlplane``, as CI runs this suite) or when ``KILN_E2E_KUBELET=simulated`` says so;
it registers its nodes and removes them afterwards. On a cluster with nodes, the examples test
is skipped and the rest checks each service up to its build Job. The third-party CRDs the
examples use (LeaderWorkerSet, KEDA, Prometheus operator, Gateway API, Inference Extension) are
installed from ``tests/support/schemas`` where the cluster lacks them. ``KILN_E2E_KUBECTL``
names the kubectl to run (default: ``kubectl`` on PATH).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import shlex
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config

from kiln.cli import parser, run_policy
from kiln.controller.context import OperatorContext
from kiln.controller.kube import KubeApi
from kiln.controller.models import ModelResolver
from kiln.controller.operator import run_operator
from kiln.demo.apikubelet import ApiKubelet
from kiln.demo.connections import require_connections_closed
from kiln.demo.login import TokenLogin
from kiln.demo.watch import ListWatch
from kiln.demo.kubelet import GPU_NODES

from ..conftest import EXAMPLES, ROOT
from ..support.cluster import third_party_crds

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("KILN_E2E") != "1", reason="set KILN_E2E=1 to run against KUBECONFIG"),
]

RELEASE, OPERATOR_NAMESPACE = "kiln", "kiln-system"
SIMULATED_NODES = {node["name"] for node in GPU_NODES}
# Where the examples run: the chart grants it what multi-node and gateway services need, as a
# platform team does (values multiNode.namespaces and gateway.namespaces).
EXAMPLES_NAMESPACE = f"kiln-e2e-examples-{uuid.uuid4().hex[:6]}"
VALUES = {"replicaCount": 0, "multiNode": {"namespaces": [EXAMPLES_NAMESPACE]},
          "gateway": {"namespaces": [EXAMPLES_NAMESPACE]}}


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [*shlex.split(os.environ.get("KILN_E2E_KUBECTL", "kubectl")), *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def kubectl_json(*args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def _wait(fetch, predicate, timeout: float, what: str, period: float = 1.0):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if predicate(value):
            return value
        time.sleep(period)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; last seen: {str(value)[:2000]}")


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def _ready(obj: dict[str, Any]) -> bool:
    return (_condition(obj, "Ready") or {}).get("status") == "True"


def _create_namespace(name: str) -> None:
    kubectl("create", "namespace", name)
    # Pods are refused until the namespace's default ServiceAccount exists.
    _wait(lambda: kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode,
          lambda code: code == 0, 60, f"the default ServiceAccount of {name}")


@pytest.fixture(scope="module")
def chart():
    """The chart as ``helm template kiln charts/kiln -n kiln-system -f VALUES`` renders it,
    applied; and the third-party CRDs the examples use, where missing."""
    rendered = helm.Chart.load(ROOT / "charts" / "kiln").render(
        VALUES, name=RELEASE, namespace=OPERATOR_NAMESPACE, is_install=True)
    objects = [d for path, text in sorted(rendered.items()) if path.endswith(".yaml")
               for d in yaml.safe_load_all(text) if d]
    kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}))
    _create_namespace(EXAMPLES_NAMESPACE)  # the chart's Roles there need it
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(objects))
    crds = [o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"]
    missing = [c for c in third_party_crds()
               if kubectl("get", "crd", c["metadata"]["name"], check=False).returncode != 0]
    if missing:
        kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(missing))
    for name in crds + [c["metadata"]["name"] for c in missing]:
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    yield objects
    kubectl("delete", "namespace", EXAMPLES_NAMESPACE, "--wait=false")


@pytest.fixture(scope="module")
def simulated_kubelet(chart: list[dict[str, Any]]):
    """The simulated kubelet, where the cluster has no nodes of its own (or it is asked for)."""
    own = [n["metadata"]["name"] for n in kubectl_json("get", "nodes")["items"]
           if n["metadata"]["name"] not in SIMULATED_NODES]
    if os.environ.get("KILN_E2E_KUBELET") != "simulated" and own:
        yield False
        return
    started, failed, loops = threading.Event(), [], []
    stop = asyncio.Event()

    async def main() -> None:
        configuration = aio_client.Configuration()
        await aio_config.load_kube_config(client_configuration=configuration)
        api = KubeApi(aio_client.ApiClient(configuration))
        try:
            kubelet = ApiKubelet(api, ListWatch.from_configuration(configuration))
            await kubelet.register_nodes()
            started.set()
            await kubelet.run(stop)
        finally:
            await api.close()
        await require_connections_closed("the simulated kubelet")

    def run() -> None:
        # A Runner closes as asyncio.run does (cancels what is left, finalizes async
        # generators), so no connection outlives the loop for the garbage collector to find
        # unclosed at some later point of the session.
        try:
            with asyncio.Runner() as runner:
                loops.append(runner.get_loop())
                runner.run(main())
        except BaseException as error:  # reported below
            failed.append(error)
            started.set()

    thread = threading.Thread(target=run, name="simulated-kubelet", daemon=True)
    thread.start()
    started.wait(60)
    assert not failed, failed
    yield True
    loops[0].call_soon_threadsafe(stop.set)
    thread.join(60)
    assert not thread.is_alive(), "the simulated kubelet did not stop within 60 s"
    for node in sorted(SIMULATED_NODES):
        kubectl("delete", "node", node, "--ignore-not-found", "--wait=false")
    assert not failed, failed


@pytest.fixture(scope="module")
def operator(chart: list[dict[str, Any]]):
    """The operator as the chart's Deployment runs it (its arguments), authenticated as the
    chart's ServiceAccount, in a thread of this process."""
    [deployment] = [o for o in chart if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    args = parser().parse_args(container["args"])
    token = kubectl("create", "token", account, "-n", OPERATOR_NAMESPACE, "--duration=2h").stdout.strip()
    config = kubectl_json("config", "view", "--minify", "--raw")
    cluster = config["clusters"][0]["cluster"]
    ca_file = None
    with tempfile.TemporaryDirectory(prefix="kiln-e2e-") as work:
        if "certificate-authority-data" in cluster:
            ca_file = str(Path(work) / "ca.crt")
            Path(ca_file).write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        elif "certificate-authority" in cluster:
            ca_file = cluster["certificate-authority"]
        stop, failed = threading.Event(), []

        def run() -> None:
            async def main() -> None:
                ctx = OperatorContext(
                    api=KubeApi.for_url(cluster["server"], token=token, ca_file=ca_file),
                    models=ModelResolver(), policy=run_policy(args))
                async with TokenLogin(cluster["server"], token, ca_file) as login:
                    try:
                        await run_operator(ctx, stop, args.namespace or None, login=login.handler)
                    finally:
                        await ctx.api.close()
                await require_connections_closed("the operator")
            try:
                asyncio.run(main())
            except BaseException as error:  # reported below
                failed.append(error)

        thread = threading.Thread(target=run, name="kiln-operator", daemon=True)
        thread.start()
        yield f"system:serviceaccount:{OPERATOR_NAMESPACE}:{account}"
        stop.set()
        thread.join(120)
    assert not thread.is_alive(), "the operator did not stop within 120 s"
    assert not failed, failed


@pytest.fixture
def namespace(chart: list[dict[str, Any]]):
    name = f"kiln-e2e-{uuid.uuid4().hex[:6]}"
    _create_namespace(name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def _manifest(path: Path, namespace: str) -> list[dict[str, Any]]:
    services = []
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "LLMService":
            document = copy.deepcopy(document)
            document["metadata"]["namespace"] = namespace
            services.append(document)
    return services


def _service(namespace: str, **spec_changes: Any) -> dict[str, Any]:
    [manifest] = _manifest(ROOT / "examples" / "mistral-7b-fp16.yaml", namespace)
    manifest["spec"].update(spec_changes)
    return manifest


def test_the_cluster_admits_the_chart_with_a_standby_operator(chart):
    """``replicaCount: 2`` (a standby waiting for the Lease): its Deployment, with the pods'
    anti-affinity, and its PodDisruptionBudget pass the API server's validation (a
    server-side dry run: nothing is made)."""
    rendered = helm.Chart.load(ROOT / "charts" / "kiln").render(
        {**VALUES, "replicaCount": 2}, name=RELEASE, namespace=OPERATOR_NAMESPACE, is_install=True)
    objects = [d for path, text in sorted(rendered.items()) if path.endswith(".yaml")
               for d in yaml.safe_load_all(text) if d and d["kind"] in ("Deployment", "PodDisruptionBudget")]
    assert sorted(o["kind"] for o in objects) == ["Deployment", "PodDisruptionBudget"]
    out = kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
                  stdin=yaml.safe_dump_all(objects)).stdout
    assert "poddisruptionbudget.policy/kiln serverside-applied (server dry run)" in out, out
    assert kubectl("get", "poddisruptionbudget", "-n", OPERATOR_NAMESPACE, "-o", "name").stdout.strip() == ""


def test_the_chart_installs_the_crds_and_the_operators_rbac(chart):
    for name in ("llmservices.serving.kiln.dev", "llmengines.serving.kiln.dev"):
        crd = kubectl_json("get", "crd", name)
        assert {"type": "Established", "status": "True"}.items() <= _condition(crd, "Established").items()
    account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}"
    for verb, resource in (("create", "jobs.batch"), ("patch", "llmservices.serving.kiln.dev/status"),
                           ("create", "llmengines.serving.kiln.dev")):
        assert kubectl("auth", "can-i", verb, resource, "--as", account, "-A").stdout.strip() == "yes"
    # A Secret only by the name the chart grants (modelCredentials.secretNames).
    assert kubectl("auth", "can-i", "list", "secrets", "--as", account, "-A", check=False).stdout.strip() == "no"
    # The operator's Lease, by name, in the release's namespace only.
    for verb in ("get", "patch"):
        assert kubectl("auth", "can-i", verb, "leases.coordination.k8s.io/kiln-operator", "--as", account,
                       "-n", OPERATOR_NAMESPACE).stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "patch", "leases.coordination.k8s.io/kube-scheduler", "--as", account,
                   "-n", OPERATOR_NAMESPACE, check=False).stdout.strip() == "no"
    assert kubectl("auth", "can-i", "create", "leases.coordination.k8s.io", "--as", account,
                   "-n", "default", check=False).stdout.strip() == "no"


def test_admission_rejects_what_the_crd_rules_forbid(namespace):
    bad = _service(namespace, gpus=2, parallelism={"tensor": 4, "pipeline": 1})
    result = kubectl("create", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert "is invalid" in result.stderr and "spec.parallelism" in result.stderr, result.stderr
    assert kubectl("get", "llms", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_operator_plans_and_starts_the_build(namespace, operator):
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(_service(namespace)))
    svc = _wait(lambda: kubectl_json("get", "llms", "mistral-7b", "-n", namespace),
                lambda s: _condition(s, "EngineReady") is not None, 120, "EngineReady")
    assert _condition(svc, "Fits")["status"] == "True"
    assert svc["status"]["observedGeneration"] == svc["metadata"]["generation"]
    job = kubectl_json("get", "job", svc["status"]["engine"]["buildJob"], "-n", namespace)
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "kiln-runtime" in image and "trtllm1.2.1" in image
    engine = kubectl_json("get", "llmengine", svc["status"]["engine"]["name"])
    assert engine["spec"]["key"] == svc["status"]["engine"]["key"]


def test_every_example_becomes_ready(operator, simulated_kubelet):
    namespace = EXAMPLES_NAMESPACE
    if not simulated_kubelet:
        pytest.skip("the cluster has nodes of its own: set KILN_E2E_KUBELET=simulated to use the "
                    "simulated kubelet instead (it registers simulated GPU nodes), or see the GPU test")
    services = [s for path in EXAMPLES for s in _manifest(path, namespace)]
    secrets = sorted({s["spec"]["model"]["credentials"]["secretName"] for s in services
                      if s["spec"]["model"].get("credentials")})
    for secret in secrets:
        kubectl("create", "secret", "generic", secret, "-n", namespace, "--from-literal=HF_TOKEN=placeholder")
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(services))
    names = sorted(s["metadata"]["name"] for s in services)

    def not_ready():
        items = kubectl_json("get", "llms", "-n", namespace)["items"]
        return {s["metadata"]["name"]: (_condition(s, "Ready") or {}).get("message", "no Ready condition yet")
                for s in items if not _ready(s)}
    _wait(not_ready, lambda left: left == {}, 300, f"{len(names)} services Ready", period=2.0)
    table = kubectl("get", "llms", "-n", namespace).stdout
    assert sorted(line.split()[0] for line in table.splitlines()[1:]) == names
    assert all(line.split()[1] == "True" for line in table.splitlines()[1:]), table


@pytest.mark.skipif(os.environ.get("KILN_E2E_GPU") != "1", reason="set KILN_E2E_GPU=1 on a GPU cluster")
def test_ready_and_serving_on_gpus(namespace, operator):
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "kiln-engine-cache", "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "200Gi"}}}}))
    kubectl("create", "-f", "-", stdin=yaml.safe_dump(_service(namespace)))
    svc = _wait(lambda: kubectl_json("get", "llms", "mistral-7b", "-n", namespace), _ready, 3600, "Ready",
                period=10.0)
    proxy = f"/api/v1/namespaces/{namespace}/services"
    kubectl("get", "--raw", f"{proxy}/mistral-7b-server:8000/proxy/v2/health/ready")
    assert svc["status"]["readyReplicas"] >= 1
    # The OpenAI-compatible API at the URL status reports, serving the service's name.
    assert svc["status"]["endpoints"]["openai"] == f"http://mistral-7b-server.{namespace}.svc:9000/v1"
    assert "mistral-7b" in kubectl("get", "--raw", f"{proxy}/mistral-7b-server:9000/proxy/v1/models").stdout
