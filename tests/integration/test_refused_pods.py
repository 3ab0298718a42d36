"""Serving pods the namespace refuses are said in the service's status (real back-end).

A ResourceQuota, a LimitRange or an admission policy refuses a pod when the ReplicaSet
controller creates it, not when Kiln applies the Deployment: the service waited in RollingOut
(or said "1/2 replicas ready") without a word of why. The real controllers carry the refusal
up: the ReplicaSet's ``ReplicaFailure`` condition (reason ``FailedCreate``, the API server's
message), copied to the Deployment's (kubernetes/kubernetes, pkg/controller/deployment/sync.go,
``getReplicaFailures``), which Kiln reads. Here the quota is a real one, enforced by the API
server's ResourceQuota admission with the usage kube-controller-manager's resourcequota
controller counts.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from kiln.decide.conditions import get_condition

from ..conftest import ROOT

NS = "llm"
MISTRAL = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
NAME = MISTRAL["metadata"]["name"]


def _ready(sb):
    return get_condition((sb.get("llmservices", NAME, NS) or {}).get("status", {}).get("conditions", []),
                         "Ready") or {}


async def test_a_replica_the_namespace_quota_refuses_is_said_in_the_status(make_sandbox, backend):
    if backend != "real":
        pytest.skip("the ReplicaSet controller and the quota's admission are the real API server's")
    async with make_sandbox(build_seconds=0.2, start_seconds=0.2, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        await sb.start_operator()
        sb.start_kubelet()
        manifest = copy.deepcopy(MISTRAL)
        manifest["metadata"]["namespace"] = NS
        manifest["spec"]["replicas"] = 1
        await sb.create(manifest)
        await sb.wait_for(lambda: _ready(sb).get("status") == "True", timeout=60, what="one replica Ready")
        sb.plane.apply({"apiVersion": "v1", "kind": "ResourceQuota",
                        "metadata": {"name": "team-pods", "namespace": sb.ns(NS)}, "spec": {"hard": {"pods": "1"}}},
                       plural="resourcequotas")
        await sb.wait_for(lambda: (sb.plane.http.get(
            sb.plane.server + f"/api/v1/namespaces/{sb.ns(NS)}/resourcequotas/team-pods", timeout=30).json()
            .get("status") or {}).get("used"), what="the quota's usage counted")
        await sb.patch_spec(NS, NAME, {"replicas": 2})
        ready = await sb.wait_for(lambda: (c := _ready(sb)) and "exceeded quota" in c.get("message", "") and c,
                                  timeout=60, what="the refusal in the Ready condition")
        assert ready["status"] == "True" and ready["message"].startswith("1/2 replicas ready"), ready
        assert "team-pods" in ready["message"] and "spec.replicas" in ready["message"], ready
        assert sb.operator_error is None


async def test_a_build_pod_the_namespace_quota_refuses_is_said_in_the_status(make_sandbox, backend):
    """A build Job's pod refused by a quota: the Job controller records it only in an Event
    (``FailedCreate``), and the service said "waiting for engine ... to build" for ever. Now
    it says the API server's reason, and builds once the quota allows the pod."""
    if backend != "real":
        pytest.skip("the Job controller and the quota's admission are the real API server's")
    async with make_sandbox(build_seconds=0.2, start_seconds=0.2, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "team-gpus", "namespace": sb.ns(NS)},
                 "spec": {"hard": {"requests.nvidia.com/gpu": "0"}}}
        sb.plane.apply(quota)
        await sb.start_operator()
        sb.start_kubelet()
        manifest = copy.deepcopy(MISTRAL)
        manifest["metadata"]["namespace"] = NS
        await sb.create(manifest)
        ready = await sb.wait_for(lambda: (c := _ready(sb)) and c.get("reason") == "PodsRefused" and c,
                                  timeout=60, what="the refused build pod said")
        assert "its build pod cannot be created: Error creating: pods" in ready["message"], ready
        assert "exceeded quota: team-gpus" in ready["message"] and "requests.nvidia.com/gpu" in ready["message"], ready
        sb.plane.delete(quota)
        await sb.wait_for(lambda: _ready(sb).get("status") == "True", timeout=120, what="Ready once the quota is gone")
        assert sb.operator_error is None


RDMA = yaml.safe_load((ROOT / "examples" / "llama-3.1-70b-bf16-4gpu-nodes-rdma.yaml").read_text())


async def test_a_multi_node_group_the_namespace_pod_security_refuses_is_said_in_the_status(make_sandbox, backend):
    """A group over RDMA (IPC_LOCK) in a namespace that enforces the restricted Pod Security
    level: the StatefulSet controller's create of the leader is refused, which it records only
    in an Event on the LeaderWorkerSet's StatefulSet. The service said "0/1 replicas ready";
    now it says the API server's reason."""
    if backend != "real":
        pytest.skip("the LeaderWorkerSet and StatefulSet controllers and PodSecurity admission are the real ones")
    async with make_sandbox(build_seconds=0.2, start_seconds=0.2, retry_delay=0.2) as sb:
        sb.add_namespace(NS)
        sb.grant_chart_roles(NS, multi_node=True)
        sb.plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": sb.ns(NS), "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        await sb.add_secret(NS, "hf-token", {"HF_TOKEN": "hf_test"})
        await sb.start_operator()
        sb.start_kubelet()
        manifest = copy.deepcopy(RDMA)
        manifest["metadata"]["namespace"] = NS
        await sb.create(manifest)
        name = manifest["metadata"]["name"]

        def said():
            ready = get_condition((sb.get("llmservices", name, NS) or {}).get("status", {}).get("conditions", []),
                                  "Ready") or {}
            return ready if "violates PodSecurity" in ready.get("message", "") else None
        ready = await sb.wait_for(said, timeout=90, what="the refused group said")
        assert (ready["status"], ready["reason"]) == ("False", "PodsRefused"), ready
        assert ready["message"].startswith("0/1 replicas ready; a serving pod cannot be created: "), ready
        assert "IPC_LOCK" in ready["message"] and "pod-security.kubernetes.io/enforce" in ready["message"], ready
        assert sb.operator_error is None
