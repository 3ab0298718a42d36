"""Kiln's pods placed by the real kube-scheduler (real back-end).

Elsewhere the simulated kubelet binds each Pod itself. Here kube-scheduler v1.35, from the
control plane's own binary, places them on GPU nodes of the test's own (two A100 nodes of two
GPUs each, tainted ``nvidia.com/gpu:NoSchedule`` as GPU node pools are, and one untainted node
without GPUs), so what decides placement is what Kiln renders: the GPU request, the GPU
product's node selector (``nvidia.com/gpu.product``, GPU feature discovery's label), the
toleration of the GPU taint and the engine cache's volume (a bound PersistentVolumeClaim).
The engine's build Job's Pod is placed the same way, and so are a multi-node group's leader
and worker, which the LeaderWorkerSet controller makes. A replica no node can take stays
Pending, and the service's status says so with the scheduler's own reason.
"""

from __future__ import annotations

import copy
import uuid

import pytest
import yaml

from kiln.decide.conditions import get_condition

from ..conftest import ROOT
from ..support.real_cluster import RealSandbox

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
NAME = MISTRAL["metadata"]["name"]
PRODUCT = "NVIDIA-A100-SXM4-80GB"  # kiln.planner.gpus: A100-80GB's product label
TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture
def gpu_node_count() -> int:
    """How many two-GPU A100 nodes the test gets."""
    return 2


@pytest.fixture
async def placed(real_plane, gpu_node_count):
    suffix = uuid.uuid4().hex[:6]
    gpu_nodes = [{"name": f"a100-{suffix}-{i}", "product": PRODUCT, "gpus": 2, "taints": [TAINT]}
                 for i in range(gpu_node_count)]
    cpu_node = {"name": f"cpu-{suffix}", "product": "none", "gpus": 0}
    nodes = [*gpu_nodes, cpu_node]
    async with RealSandbox(real_plane, build_seconds=0.2, start_seconds=0.3, retry_delay=0.2,
                           timings={"resync_period": 0.5}) as sb:
        sb.cluster.binds = False
        await sb.cluster.register_nodes(nodes)
        sb.add_namespace(NS)
        sb.grant_chart_roles(NS, multi_node=True)
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "simulated"})
        _engine_cache(real_plane, sb.ns(NS), suffix)
        try:
            with real_plane.scheduler():
                await sb.start_operator()
                sb.start_kubelet()
                yield sb, [n["name"] for n in gpu_nodes]
                await sb.stop_operator()
                await sb.stop_kubelet()
        finally:
            for node in nodes:
                real_plane.http.delete(f"{real_plane.server}/api/v1/nodes/{node['name']}", timeout=30)
            real_plane.http.delete(f"{real_plane.server}/api/v1/persistentvolumes/cache-{suffix}", timeout=30)


def _engine_cache(plane, namespace: str, suffix: str) -> None:
    """The engine cache's claim, bound to a volume as the PV controller would leave it (the
    scheduler reads a claim with a volume and ``bind-completed`` as bound:
    k8s.io/kubernetes v1.35.4 ``pkg/scheduler/framework/plugins/volumebinding/binder.go``,
    ``isPVCFullyBound``)."""
    claim = MISTRAL["spec"].get("engine", {}).get("cache", {}).get("claimName", "kiln-engine-cache")
    plane.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"cache-{suffix}"},
                 "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadWriteMany"],
                          "persistentVolumeReclaimPolicy": "Retain", "nfs": {"server": "nfs.example", "path": "/"},
                          "claimRef": {"namespace": namespace, "name": claim}}}, plural="persistentvolumes")
    plane.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": claim, "namespace": namespace,
                              "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                 "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Ti"}},
                          "volumeName": f"cache-{suffix}", "storageClassName": ""}},
                plural="persistentvolumeclaims")


def _service(replicas: int) -> dict:
    manifest = copy.deepcopy(MISTRAL)
    manifest["spec"]["replicas"] = replicas
    manifest["spec"]["gpu"] = {"type": "A100-80GB", "perNode": 2}
    return manifest


def _pods(sb, component: str | None = None) -> list[dict]:
    return [p for p in sb.objects("pods") if p["metadata"]["namespace"] == sb.ns(NS)
            and (component is None or p["metadata"]["labels"].get("app.kubernetes.io/component") == component)]


async def _until(sb, predicate, what: str):
    """``predicate``'s value once it has one; on a timeout, what the pods and the service say."""
    try:
        return await sb.wait_for(predicate, timeout=90, what=what)
    except TimeoutError as error:
        pods = {p["metadata"]["name"]: (p["spec"].get("nodeName"), (p.get("status") or {}).get("conditions"))
                for p in _pods(sb)}
        status = (sb.get("llmservices", NAME, NS) or {}).get("status", {}).get("conditions")
        raise AssertionError(f"{error}; pods: {pods}; service: {status}") from None


def _ready(sb):
    ready = get_condition((sb.get("llmservices", NAME, NS) or {}).get("status", {}).get("conditions", []), "Ready")
    return ready if ready and ready["status"] == "True" else None


async def test_the_real_scheduler_places_kilns_pods_on_the_gpu_nodes_they_fit(placed):
    sb, gpu_nodes = placed
    await sb.create(_service(replicas=3))
    await _until(sb, lambda: _ready(sb), f"{NAME} Ready with three replicas")

    serving = _pods(sb, "server")
    assert len(serving) == 3
    # Every Pod, the build's among them, was placed by the scheduler on the GPU nodes, within
    # their two GPUs each; nothing went to the node without GPUs.
    placed_on = [p["spec"]["nodeName"] for p in _pods(sb)]
    assert set(placed_on) <= set(gpu_nodes) and len(_pods(sb)) > len(serving)
    for node in gpu_nodes:
        assert sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for p in serving
                   if p["spec"]["nodeName"] == node for c in p["spec"]["containers"]) <= 2
    for pod in serving:
        [scheduled] = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"]
        assert scheduled["status"] == "True"


async def test_a_replica_no_node_can_take_is_said_in_the_status(placed):
    sb, gpu_nodes = placed
    await sb.create(_service(replicas=5))  # five one-GPU replicas, four GPUs

    def said(reason: str, start: str):
        def check():
            status = (sb.get("llmservices", NAME, NS) or {}).get("status") or {}
            ready = get_condition(status.get("conditions", []), "Ready")
            reconciling = get_condition(status.get("conditions", []), "Reconciling")
            for condition in (ready, reconciling):
                if condition and condition["status"] == "True" and condition["reason"] == reason \
                        and condition["message"].startswith(start):
                    return condition
            return None
        return check
    # The four replicas that fit serve (Ready), and the condition says why the fifth does not.
    ready = await _until(sb, said("ReplicasReady", "4/5 replicas ready at "), f"{NAME} Ready with four of five")
    pending = [p for p in _pods(sb, "server") if not p["spec"].get("nodeName")]
    assert len(pending) == 1
    [scheduled] = [c for c in pending[0]["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled["reason"] == "Unschedulable" and "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert f"pod {pending[0]['metadata']['name']} cannot be scheduled: {scheduled['message']}" in ready["message"]
    assert "lower spec.replicas" in ready["message"]

    # Moved to two GPUs per replica, the new engine's build needs two free GPUs on one node,
    # and the four replicas serving meanwhile hold all four: the build's pod is the one that
    # cannot be placed, and the service says so.
    await sb.patch_spec(NS, NAME, {"gpus": 2, "parallelism": {"tensor": 2, "pipeline": 1}, "replicas": 2})
    building = await _until(sb, said("Unschedulable", "waiting for engine "), f"{NAME} saying its build cannot be placed")
    [build] = [p for p in _pods(sb) if not p["spec"].get("nodeName")
               and "job-name" in p["metadata"]["labels"]]
    [scheduled] = [c for c in build["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert f"its build pod {build['metadata']['name']} cannot be scheduled: {scheduled['message']}" in building["message"]
    assert "the previous engine keeps serving" in building["message"]
    assert "a node with 2 free GPUs" in building["message"]


@pytest.mark.parametrize("gpu_node_count", [3])
async def test_a_multi_node_group_whose_worker_no_node_can_take_is_said_in_the_status(placed):
    """Two groups of a leader and a worker (two GPUs each, one node each) on three two-GPU
    nodes: the first group is placed whole, the second's leader on the third node, and its
    worker nowhere. The LeaderWorkerSet controller makes the pods; the scheduler places them."""
    sb, gpu_nodes = placed
    manifest = _service(replicas=2)
    manifest["spec"].update(gpus=4, parallelism={"tensor": 2, "pipeline": 2})
    await sb.create(manifest)

    def said():
        status = (sb.get("llmservices", NAME, NS) or {}).get("status") or {}
        ready = get_condition(status.get("conditions", []), "Ready")
        return ready if ready and ready["status"] == "True" and "cannot be scheduled" in ready["message"] else None
    ready = await _until(sb, said, f"{NAME} Ready on one group, saying why the other is not")
    [worker] = [p for p in _pods(sb, "worker") if not p["spec"].get("nodeName")]
    [scheduled] = [c for c in worker["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert ready["message"].startswith("1/2 replicas ready at ")
    assert f"pod {worker['metadata']['name']} cannot be scheduled: {scheduled['message']}" in ready["message"]
    assert {p["spec"]["nodeName"] for p in _pods(sb) if p["spec"].get("nodeName")} <= set(gpu_nodes)
