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
(a zero-grace delete). Where a LeaderWorkerSet controller runs (its webhooks registered), it
makes each group's Pods, and only the leaders (worker index 0) serve; where the API is served
and no controller runs, the group's leader Pods and the LeaderWorkerSet's status are written
here.

Like a kubelet and kwok, it learns of Pods from a watch (:mod:`kiln.demo.watch`), not by
listing them: a list of every Pod per tick grows with the cluster and, at a thousand services,
cost the API server and this process more than everything else the benchmark measures. Each
watch event queues its object; a few workers (:data:`WORKERS`) make the calls, one object at a
time each, so a burst of new Pods queues here rather than in the API server.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp

from ..controller.kube import ApiException, KubeApi
from ..render.meta import LABEL_ENGINE
from .kubelet import GPU_NODES, SimulatedCluster, SimulatedTriton, build_terminated, crash_looping, served_model
from .watch import LISTED, ListWatch

__all__ = ["ApiKubelet", "WORKERS"]

# Calls to the API server in flight at once, as a kubelet's client is rate-limited; enough to
# keep up with the Job and ReplicaSet controllers' Pod creations.
WORKERS = 8

_JOB_LABEL = "batch.kubernetes.io/job-name"
_LWS = ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
_LWS_LABEL = "leaderworkerset.sigs.k8s.io/name"
_LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
_LWS_GROUP_KEY = "leaderworkerset.sigs.k8s.io/group-key"
_LWS_SIZE = "leaderworkerset.sigs.k8s.io/size"  # an annotation
# The name LWS's manifests give its mutating webhooks (kubernetes-sigs/lws, pkg/cert/cert.go
# ``mutatingWebhookConfName``): their registration is how a controller is seen to run.
_LWS_WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/lws-mutating-webhook-configuration"
# A queued object: ("pod", uid) or ("group", (namespace, name)).
_Key = tuple[str, Any]


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

    def __init__(self, api: KubeApi, watch: ListWatch, build_seconds: float = 1.0,
                 start_seconds: float = 0.5,
                 fail_builds: Callable[[dict[str, Any]], bool] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        super().__init__(None, api, build_seconds=build_seconds, start_seconds=start_seconds,
                         fail_builds=fail_builds, on_event=on_event)
        self._watch = watch
        self._cache: dict[str, dict[str, Any]] = {}  # pod uid -> the Pod as last watched
        self._names: dict[tuple[str, str], str] = {}  # (namespace, name) -> pod uid
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}  # LeaderWorkerSets
        self._started: dict[str, float] = {}  # pod uid -> when it was bound
        # Pods whose final status (Succeeded, Failed, Ready) or deletion this kubelet wrote: a
        # worker may see the Pod again before the watch brings that write back.
        self._reported: set[str] = set()
        self._confirmed: set[str] = set()
        self._queue: asyncio.Queue[_Key] = asyncio.Queue()
        self._queued: set[_Key] = set()
        self._busy: set[_Key] = set()  # being handled by a worker
        self._again: set[_Key] = set()  # changed while being handled: queued once it is done
        self._node_names = {n["name"] for n in GPU_NODES}
        self._nodes = itertools.cycle(sorted(self._node_names))
        # Whether this kubelet binds an unbound Pod to a node itself (round robin over the
        # GPU nodes, as kwok's does); a test that runs kube-scheduler turns it off.
        self.binds = True
        # The addresses the next Pods get, in turn: loopback ones (127.0.0.0/8 is all loopback
        # on Linux), from a random start so that two simulated clusters on one machine rarely
        # meet; one whose ports are taken is skipped. A caller may put another address first
        # (one a program outside the simulation can reach a Pod at).
        first = random.randrange(1 << 20)
        self.addresses: Iterator[str] = (f"127.{1 + (i >> 16) % 254}.{(i >> 8) % 256}.{1 + i % 254}"
                           for i in itertools.count(first))
        self._ip: dict[str, str] = {}  # pod uid -> its address
        self._crashed: set[str] = set()  # pods whose crash loop this kubelet wrote
        self._uids: dict[str, tuple[str, str]] = {}  # pod uid -> (namespace, name)

    async def register_nodes(self, nodes: list[dict[str, Any]] | None = None) -> None:
        """Register ``nodes`` (name, product, gpus, and optional taints; the simulated GPU
        nodes by default) as their kubelets would, and run the pods bound to them."""
        for node in GPU_NODES if nodes is None else nodes:
            body = {"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": node["name"],
                                 "labels": {"nvidia.com/gpu.product": node["product"]}},
                    "spec": {"taints": node.get("taints") or []}}
            try:
                await self.api.request("POST", "/api/v1/nodes", body)
            except ApiException as error:
                if error.status != 409:
                    raise
            # An 8-GPU server's: 96 cores, 1 TiB of memory and local NVMe (8 TB on an AWS
            # p4d.24xlarge), which the build Job's scratch requests.
            capacity = {"nvidia.com/gpu": str(node["gpus"]), "cpu": "96", "memory": "1Ti",
                        "ephemeral-storage": "7Ti", "pods": "110"}
            await self.api.request("PATCH", f"/api/v1/nodes/{node['name']}/status", {"status": {
                "capacity": capacity, "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]}},
                content_type="application/merge-patch+json")
            # The API server's NodeTaint admission gives a new Node the not-ready taint
            # (k8s.io/kubernetes plugin/pkg/admission/nodetaint/admission.go), which the node
            # lifecycle controller removes once the Node is Ready (pkg/controller/nodelifecycle,
            # ``doNoScheduleTaintingPass``). That controller would also take a Node whose kubelet
            # renews no Lease for unreachable, so it is not run, and this kubelet does its part.
            await self.api.request("PATCH", f"/api/v1/nodes/{node['name']}",
                                   {"spec": {"taints": node.get("taints") or None}},
                                   content_type="application/merge-patch+json")
            self._node_names.add(node["name"])

    async def run(self, stop: asyncio.Event, period: float = 0.1) -> None:
        """Watch Pods and LeaderWorkerSets and move each forward as its events arrive, with
        :data:`WORKERS` calls to the API server at most in flight, until ``stop``."""
        tasks = [asyncio.create_task(self._follow("/api/v1/pods", self._on_pod)),
                 *[asyncio.create_task(self._work()) for _ in range(WORKERS)]]
        if await self.api.serves(*_LWS) and not await self._groups_have_a_controller():
            tasks.append(asyncio.create_task(self._follow(
                "/apis/leaderworkerset.x-k8s.io/v1/leaderworkersets", self._on_group)))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._watch.close()
            await self.close()

    async def _groups_have_a_controller(self) -> bool:
        try:
            await self.api.request("GET", _LWS_WEBHOOKS)
        except ApiException as error:
            if error.status in (403, 404):
                return False
            raise
        return True

    async def _step(self, now: float) -> None:
        """Everything known moved forward once, in this task (no watch, no workers)."""
        for key in [("pod", uid) for uid in self._cache] + [("group", g) for g in self._groups]:
            await self._handle(key, now)

    # --- the watches ----------------------------------------------------------------------

    async def _follow(self, path: str, on_event: Callable[[str, Any], None]) -> None:
        async for kind, obj in self._watch.events(path):
            on_event(kind, obj)

    def _on_pod(self, kind: str, obj: Any) -> None:
        if kind == LISTED:
            live = {pod["metadata"]["uid"] for pod in obj}
            for uid in [uid for uid in self._cache if uid not in live]:
                self._on_pod("DELETED", self._cache[uid])
            for pod in obj:
                self._on_pod("ADDED", pod)
            return
        meta = obj["metadata"]
        uid, where = meta["uid"], (meta["namespace"], meta["name"])
        if kind == "DELETED":  # the worker finds it gone and stops its simulated Triton
            self._cache.pop(uid, None)
            if self._names.get(where) == uid:
                del self._names[where]
        else:
            self._cache[uid] = obj
            self._names[where] = uid
        self._enqueue(("pod", uid))
        group = (meta.get("labels") or {}).get(_LWS_LABEL)
        if group is not None:
            self._enqueue(("group", (meta["namespace"], group)))

    def _on_group(self, kind: str, obj: Any) -> None:
        if kind == LISTED:
            self._groups = {(g["metadata"]["namespace"], g["metadata"]["name"]): g for g in obj}
            for key in self._groups:
                self._enqueue(("group", key))
            return
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if kind == "DELETED":
            self._groups.pop(key, None)
        else:
            self._groups[key] = obj
            self._enqueue(("group", key))

    # --- the work queue: each object handled by one worker at a time ------------------------

    def _enqueue(self, key: _Key) -> None:
        if key in self._busy:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _later(self, delay: float, key: _Key) -> None:
        asyncio.get_running_loop().call_later(delay, self._enqueue, key)

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._busy.add(key)
            try:
                await self._handle(key, self.now())
            except (ApiException, aiohttp.ClientError) as error:
                # As a kubelet does: a refused or throttled call (a 429 while a new CRD's
                # storage initialises, a 409 on a stale write) is tried again shortly.
                self.on_event(f"kubelet: {getattr(error, 'status', error)} from the API server; retrying")
                self._later(1.0, key)
            finally:
                self._busy.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self._enqueue(key)

    async def _handle(self, key: _Key, now: float) -> None:
        if key[0] == "group":
            group = self._groups.get(key[1])
            if group is not None:
                await self._lead_worker_set(group)
            return
        uid = key[1]
        pod = self._cache.get(uid)
        if pod is None:
            await self._gone(uid)
            return
        due = await self._advance(pod, now)
        if due is not None:
            self._later(due - now, key)

    # --- what a scheduler and a kubelet do to one Pod -------------------------------------------

    async def _advance(self, pod: dict[str, Any], now: float) -> float | None:
        """Move the Pod one step forward; the time it is next due, if it waits for one."""
        meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        uid = meta["uid"]
        where = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            # The containers are stopped: confirm the deletion, as the kubelet does.
            await self._forget(uid)
            if not meta.get("finalizers") and uid not in self._confirmed:
                try:
                    await self.api.request("DELETE", where, {"gracePeriodSeconds": 0})
                except ApiException as error:
                    if error.status != 404:
                        raise
                self._confirmed.add(uid)
            return None
        # What this kubelet wrote last is known here before its watch event arrives.
        if uid in self._reported or status.get("phase") in ("Succeeded", "Failed") or _is_ready(status):
            return None
        if spec.get("nodeName") and spec["nodeName"] not in self._node_names:
            return None  # another node's kubelet runs it
        if not spec.get("nodeName") and not self.binds:
            return None  # a scheduler binds it
        if not spec.get("nodeName") and uid not in self._started:
            try:
                await self.api.request("POST", f"{where}/binding", {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": next(self._nodes)}})
            except ApiException as error:
                if error.status != 409:  # bound already
                    raise
            self._started[uid] = now
        started = self._started.setdefault(uid, now)
        job_name = (meta.get("labels") or {}).get(_JOB_LABEL)
        due = started + (self.build_seconds if job_name is not None else self.start_seconds)
        if now < due:
            return due
        if job_name is not None:
            job = await self.api.get("batch/v1", "Job", job_name, meta["namespace"])
            await self._finish_build(pod, job is not None and self.fail_builds(job))
        elif not self._workers_run(pod):
            return now + 0.2
        elif (last_words := self._crashing(pod)) is not None:
            if uid not in self._crashed:  # and looked at again until it starts
                await self._patch_pod_status(pod, {"phase": "Running", "podIP": next(self.addresses),
                                                   **crash_looping(pod, last_words)})
                self._crashed.add(uid)
            return now + 0.2
        else:
            await self._serve(pod)
        self._reported.add(uid)
        return None

    def _workers_run(self, pod: dict[str, Any]) -> bool:
        """Whether ``pod``, a group's leader, has every worker of its group running (as this
        kubelet reported them): only then is it Ready, as Kiln's leader waits for each worker
        before it starts serving. LeaderWorkerSet v0.8.0 counts a group ready on its leader's
        readiness and its worker StatefulSet's created replicas, not their readiness
        (``pkg/controllers/leaderworkerset_controller.go``, ``updateConditions``;
        ``pkg/utils/statefulset``, ``StatefulsetReady``), so the leader's is what says a
        worker cannot run. Any other pod: True."""
        meta = pod["metadata"]
        labels, size = meta.get("labels") or {}, (meta.get("annotations") or {}).get(_LWS_SIZE, "1")
        if labels.get(_LWS_WORKER_INDEX) != "0" or not size.isdigit() or int(size) <= 1:
            return True
        workers = [uid for uid, other in self._cache.items()
                   if other["metadata"].get("namespace") == meta.get("namespace")
                   and (other["metadata"].get("labels") or {}).get(_LWS_GROUP_KEY) == labels.get(_LWS_GROUP_KEY)
                   and (other["metadata"].get("labels") or {}).get(_LWS_WORKER_INDEX, "0") != "0"]
        return len(workers) >= int(size) - 1 and all(uid in self._reported for uid in workers)

    async def _finish_build(self, pod: dict[str, Any], failed: bool) -> None:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]["name"]
        finished = _now()
        terminated = build_terminated((meta.get("labels") or {}).get(LABEL_ENGINE, ""), failed)
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
        labels = meta.get("labels") or {}
        instance = labels.get("app.kubernetes.io/instance", meta["name"])
        if labels.get(_LWS_WORKER_INDEX, "0") != "0":
            # A group's worker: it runs the ranks the leader's mpirun starts, and serves nothing.
            if uid not in self._ip:
                self._ip[uid] = next(self.addresses)
                self._uids[uid] = (meta["namespace"], meta["name"])
        elif uid not in self._ip:
            predicted = await self._predicted_tokens_of(meta["namespace"], instance)
            triton = SimulatedTriton(instance, predicted, lambda i=instance: self._per_pod_load(i),
                                     lambda i=instance: i in self.metrics_outage,
                                     served_model=served_model(pod))
            openai = _port(pod, "openai") if triton.served_model else None
            ports = [_port(pod, "metrics") or 8002, *([openai] if openai else [])]
            for _ in range(100):
                ip = next(self.addresses)
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
        self.on_event(f"pod/{meta['name']} ready (simulated Triton on {self._ip[uid]})"
                      if (meta["namespace"], uid) in self._triton else f"pod/{meta['name']} ready")

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
        """The Pod's containers stopped: its simulated Triton stops serving."""
        where = self._uids.pop(uid, None)
        self._ip.pop(uid, None)
        if where is None:
            return
        triton = self._triton.pop((where[0], uid), None)
        if triton is not None:
            await triton.stop()
            self._pods[triton.instance_of] -= 1

    async def _gone(self, uid: str) -> None:
        """The Pod was deleted: nothing about it is kept."""
        await self._forget(uid)
        self._started.pop(uid, None)
        self._reported.discard(uid)
        self._confirmed.discard(uid)

    async def _predicted_tokens_of(self, namespace: str, instance: str) -> int:
        service = await self.api.get("serving.kiln.dev/v1alpha1", "LLMService", instance, namespace) or {}
        return int(((service.get("status") or {}).get("plan") or {}).get("kvCacheTokens") or 65536)

    async def _lead_worker_set(self, group: dict[str, Any]) -> None:
        """What LWS's controller does that Kiln observes: one leader Pod per group (named
        ``<lws>-<group>`` as LWS names leaders) and the ready count in the status."""
        meta = group["metadata"]
        want = int(group["spec"].get("replicas", 1))
        template = group["spec"]["leaderWorkerTemplate"].get("leaderTemplate") or \
            group["spec"]["leaderWorkerTemplate"]["workerTemplate"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), _LWS_LABEL: meta["name"]}
        ready = 0
        for index in range(want):
            name = f"{meta['name']}-{index}"
            pod = self._cache.get(self._names.get((meta["namespace"], name), ""))
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
        target = {"replicas": want, "readyReplicas": ready, "updatedReplicas": want}
        if self.group_observes_generation:
            target["observedGeneration"] = meta.get("generation")
        if any(status.get(k) != v for k, v in target.items()):
            written = await self.api.patch_status(group, target)
            key = (meta["namespace"], meta["name"])
            if key in self._groups:
                self._groups[key] = {"apiVersion": group["apiVersion"], "kind": group["kind"], **written}


def _is_ready(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])
