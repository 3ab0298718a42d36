"""The simulated kubelet for a real API server, as kwok does it: Nodes, Pod binding and Pod status.

On a real control plane the Job, Deployment and ReplicaSet controllers create the Pods; this
module does only what a scheduler and a kubelet would. It registers the GPU nodes, binds each
unscheduled Pod to one, and after a delay reports it as a kubelet would: a build Job's Pod
``Succeeded`` (or ``Failed`` with kiln-runtime's termination message), a serving Pod ``Running``
and ``Ready`` on its own loopback address (``127.0.x.y``), where a :class:`SimulatedTriton` serves
its ``/metrics`` on the Pod's ``metrics`` port and, for the model the Pod serves, the simulated
OpenAI API (:mod:`kiln.demo.openai_sim`) on its ``openai`` port, so that a client reaches it
through the rendered Service (:mod:`kiln.demo.network`). Like a kubelet, it leaves alone the Pods
bound to nodes other than its own. The real controllers then complete the Job and
roll the Deployment out. Deleting Pods is confirmed as a kubelet does once the containers stop
(a zero-grace delete). With no LeaderWorkerSet controller in the control plane, the group's
leader Pods and the LeaderWorkerSet's status are written here (see tests/controlplane/README.md).
"""

from __future__ import annotations

import datetime
import errno
import itertools
import json
import random
from collections.abc import Callable
from typing import Any

from ..controller.kube import ApiException, KubeApi
from .kubelet import GPU_NODES, SimulatedCluster, SimulatedTriton, served_model

__all__ = ["ApiKubelet"]

_JOB_LABEL = "batch.kubernetes.io/job-name"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _port(pod: dict[str, Any], name: str) -> int | None:
    """The container port named ``name``."""
    for container in pod["spec"].get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


class ApiKubelet(SimulatedCluster):
    """Scheduler and kubelet for the simulated GPU nodes, through the API only."""

    def __init__(self, api: KubeApi, build_seconds: float = 1.0, start_seconds: float = 0.5,
                 fail_builds: Callable[[dict[str, Any]], bool] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        super().__init__(None, api, build_seconds=build_seconds, start_seconds=start_seconds,
                         fail_builds=fail_builds, on_event=on_event)
        self._node_names = {n["name"] for n in GPU_NODES}
        self._nodes = itertools.cycle(sorted(self._node_names))
        # Loopback addresses for the Pods (127.0.0.0/8 is all loopback on Linux), from a random
        # start so that two simulated clusters on one machine rarely meet; a taken one is skipped.
        first = random.randrange(1 << 20)
        self._addresses = (f"127.{1 + (i >> 16) % 254}.{(i >> 8) % 256}.{1 + i % 254}"
                           for i in itertools.count(first))
        self._ip: dict[str, str] = {}  # pod uid -> its loopback address
        self._uids: dict[str, tuple[str, str]] = {}  # pod uid -> (namespace, name)

    async def register_nodes(self) -> None:
        """Register the simulated GPU nodes, as their kubelets would."""
        for node in GPU_NODES:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node["name"],
                                 "labels": {"nvidia.com/gpu.product": node["product"]}}}
            try:
                await self.api.request("POST", "/api/v1/nodes", body)
            except ApiException as error:
                if error.status != 409:
                    raise
            gpus = str(node["gpus"])
            await self.api.request("PATCH", f"/api/v1/nodes/{node['name']}/status", {"status": {
                "capacity": {"nvidia.com/gpu": gpus, "cpu": "96", "memory": "1Ti", "pods": "110"},
                "allocatable": {"nvidia.com/gpu": gpus, "cpu": "96", "memory": "1Ti", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]}},
                content_type="application/merge-patch+json")

    async def step(self, now: float | None = None) -> None:
        try:
            async with self._stepping:
                await self._step(self.now() if now is None else now)
        except ApiException as error:
            # As a kubelet does: a refused or throttled call (a 429 while a new CRD's storage
            # initialises, a 409 on a stale write) is tried again at the next tick.
            self.on_event(f"kubelet: {error.status} from the API server; retrying")

    async def _step(self, now: float) -> None:
        await self._lead_worker_sets(now)
        jobs = {(j["metadata"]["namespace"], j["metadata"]["name"]): j
                for j in await self.api.list("batch/v1", "Job")}
        pods = await self.api.list("v1", "Pod")
        for pod in pods:
            await self._advance(pod, jobs, now)
        live = {p["metadata"]["uid"] for p in pods}
        for uid in [uid for uid in self._uids if uid not in live]:
            await self._forget(uid)

    async def _advance(self, pod: dict[str, Any], jobs: dict[tuple[str, str], dict[str, Any]],
                       now: float) -> None:
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        where = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            # The containers are stopped: confirm the deletion, as the kubelet does.
            await self._forget(meta["uid"])
            if not meta.get("finalizers"):
                try:
                    await self.api.request("DELETE", where, {"gracePeriodSeconds": 0})
                except ApiException as error:
                    if error.status != 404:
                        raise
            return
        if status.get("phase") in ("Succeeded", "Failed") or _is_ready(status):
            return
        if spec.get("nodeName") and spec["nodeName"] not in self._node_names:
            return  # another node's kubelet runs it
        if not spec.get("nodeName"):
            await self.api.request("POST", f"{where}/binding", {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": next(self._nodes)}})
            self._seen[("pod", meta["namespace"], meta["uid"])] = now
            return
        started = self._seen.setdefault(("pod", meta["namespace"], meta["uid"]), now)
        job_name = (meta.get("labels") or {}).get(_JOB_LABEL)
        if job_name is not None:
            if now - started >= self.build_seconds:
                job = jobs.get((meta["namespace"], job_name))
                await self._finish_build(pod, job is not None and self.fail_builds(job))
            return
        if now - started >= self.start_seconds:
            await self._serve(pod)

    async def _finish_build(self, pod: dict[str, Any], failed: bool) -> None:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]["name"]
        finished = _now()
        terminated: dict[str, Any] = {"exitCode": 0, "reason": "Completed",
                                      "startedAt": finished, "finishedAt": finished}
        if failed:
            summary = {"engineKey": "", "result": "failed", "step": "engine",
                       "message": "step 'engine' failed: trtllm-build exited with 1; last output: "
                                  "[TensorRT-LLM][ERROR] CUDA runtime error in cudaMalloc: out of memory"}
            terminated = {**terminated, "exitCode": 1, "reason": "Error",
                          "message": json.dumps(summary, sort_keys=True)}
        await self._patch_pod_status(pod, {
            "phase": "Failed" if failed else "Succeeded", "startTime": finished,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted",
                            "lastTransitionTime": finished}],
            "containerStatuses": [{"name": container, "ready": False, "restartCount": 0,
                                   "image": pod["spec"]["containers"][0].get("image", ""),
                                   "imageID": "", "state": {"terminated": terminated}}]})
        self.on_event(f"pod/{meta['name']} {'failed' if failed else 'succeeded'} (simulated build)")

    async def _serve(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        instance = (meta.get("labels") or {}).get("app.kubernetes.io/instance", meta["name"])
        if uid not in self._ip:
            predicted = await self._predicted_tokens_of(meta["namespace"], instance)
            triton = SimulatedTriton(instance, predicted, lambda i=instance: self._per_pod_load(i),
                                     lambda i=instance: i in self.metrics_outage,
                                     served_model=served_model(pod))
            openai = _port(pod, "openai") if triton.served_model else None
            ports = [_port(pod, "metrics") or 8002, *([openai] if openai else [])]
            for _ in range(100):
                ip = next(self._addresses)
                try:
                    await triton.start(ip, *ports)
                    break
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
                    await triton.stop()
            self._ip[uid] = ip
            self._triton[(meta["namespace"], uid)] = triton
            self._uids[uid] = (meta["namespace"], meta["name"])
            self._pods[instance] = self._pods.get(instance, 0) + 1
        now = _now()
        containers = pod["spec"].get("containers") or []
        await self._patch_pod_status(pod, {
            "phase": "Running", "podIP": self._ip[uid], "podIPs": [{"ip": self._ip[uid]}],
            "hostIP": "10.0.0.1", "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c["name"], "ready": True, "started": True,
                                   "restartCount": 0, "image": c.get("image", ""), "imageID": "",
                                   "state": {"running": {"startedAt": now}}} for c in containers]})
        self.on_event(f"pod/{meta['name']} ready (simulated Triton on {self._ip[uid]})")

    async def _patch_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            await self.api.request(
                "PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"status": status}, content_type="application/merge-patch+json")
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile
                raise

    async def _forget(self, uid: str) -> None:
        where = self._uids.pop(uid, None)
        self._ip.pop(uid, None)
        if where is None:
            return
        triton = self._triton.pop((where[0], uid), None)
        if triton is not None:
            await triton.stop()
            self._pods[triton.instance_of] -= 1

    async def _predicted_tokens_of(self, namespace: str, instance: str) -> int:
        service = await self.api.get("serving.kiln.dev/v1alpha1", "LLMService", instance, namespace) or {}
        return int(((service.get("status") or {}).get("plan") or {}).get("kvCacheTokens") or 65536)

    async def _lead_worker_sets(self, now: float) -> None:
        """What LWS's controller does that Kiln observes: one leader Pod per group (named
        ``<lws>-<group>`` as LWS names leaders) and the ready count in the status."""
        if not await self.api.serves("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"):
            return
        for group in await self.api.list("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"):
            meta = group["metadata"]
            want = int(group["spec"].get("replicas", 1))
            template = group["spec"]["leaderWorkerTemplate"].get("leaderTemplate") or \
                group["spec"]["leaderWorkerTemplate"]["workerTemplate"]
            labels = {**(template.get("metadata") or {}).get("labels", {}),
                      "leaderworkerset.sigs.k8s.io/name": meta["name"]}
            ready = 0
            for index in range(want):
                name = f"{meta['name']}-{index}"
                pod = await self.api.get("v1", "Pod", name, meta["namespace"])
                if pod is None:
                    await self.api.apply({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels,
                                     "ownerReferences": [{
                                         "apiVersion": group["apiVersion"], "kind": group["kind"],
                                         "name": meta["name"], "uid": meta["uid"],
                                         "controller": True, "blockOwnerDeletion": True}]},
                        "spec": template["spec"]})
                elif _is_ready(pod.get("status") or {}):
                    ready += 1
            status = group.get("status") or {}
            target = {"replicas": want, "readyReplicas": ready, "updatedReplicas": want,
                      "observedGeneration": meta.get("generation")}
            if any(status.get(k) != v for k, v in target.items()):
                await self.api.patch_status(group, target)


def _is_ready(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])
