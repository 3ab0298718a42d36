"""A simulated kubelet and controllers for the demo: honest stand-ins for what runs GPUs.

It finishes build Jobs after a delay (as if ``kiln-runtime build`` ran), marks Deployment
replicas ready and creates their Pods (as if Triton loaded the engine and passed its
probes), and serves each Pod's Triton ``/metrics`` page over real HTTP on 127.0.0.1, in
Triton's format, with a KV capacity near the planner's prediction and either a steady load
or a recorded trace's (:mod:`kiln.demo.replay`), and on the same port a simulated
OpenAI-compatible API for the served model (:mod:`kiln.demo.openai_sim`). It writes through the emulator's API, like
the real components, so the operator sees only ordinary watch events and scrapes metrics as
it would in a cluster. Nothing here runs a model.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp.web
from kmock import resource

from ..autoscale.metrics import INPUT_TOKENS_METRIC, KV_METRIC, REQUEST_METRIC
from ..controller.kube import KubeApi
from ..render.meta import LABEL_COMPONENT, LABEL_ENGINE, LABEL_INSTANCE
from .openai_sim import add_openai_routes
from .replay import PodLoad, TraceReplay

__all__ = ["build_terminated", "crash_looping", "SimulatedCluster", "GPU_NODES", "served_model"]

GPU_NODES = [
    {"name": f"gpu-node-{i}", "product": "NVIDIA-H100-80GB-HBM3", "gpus": 8} for i in range(4)
]


def served_model(template: dict[str, Any]) -> str | None:
    """The served model name the pod's ``kiln-runtime serve`` would give the OpenAI frontend."""
    for container in template.get("spec", {}).get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == "KILN_SERVE_SPEC":
                try:
                    name = json.loads(env.get("value") or "{}").get("servedModelName")
                except ValueError:
                    return None
                return name if isinstance(name, str) else None
    return None


def crash_looping(pod: dict[str, Any], last_words: str) -> dict[str, Any]:
    """The status of a pod whose containers exited with code 2 and were restarted three
    times, as the kubelet writes it: waiting in CrashLoopBackOff, the last termination in
    ``lastState`` with the tail of the log as its message (``terminationMessagePolicy:
    FallbackToLogsOnError``)."""
    now = _now()
    return {
        "conditions": [{"type": t, "status": s, "lastTransitionTime": now}
                       for t, s in (("PodScheduled", "True"), ("ContainersReady", "False"), ("Ready", "False"))],
        "containerStatuses": [{
            "name": c["name"], "ready": False, "started": False, "restartCount": 3,
            "image": c.get("image", ""), "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                                  "message": f"back-off 40s restarting failed container={c['name']}"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": last_words,
                                         "startedAt": now, "finishedAt": now}}}
            for c in pod["spec"].get("containers") or []]}


def build_terminated(engine_key: str, failed: bool) -> dict[str, Any]:
    """How a simulated build container ended: exit code 0, or what kiln-runtime writes to its
    termination log when trtllm-build runs out of GPU memory (a summary with the step and its
    output tail)."""
    finished = _now()
    if not failed:
        return {"exitCode": 0, "reason": "Completed", "startedAt": finished, "finishedAt": finished}
    summary = {"engineKey": engine_key, "result": "failed", "step": "engine",
               "message": "step 'engine' failed: trtllm-build exited with 1; last output: "
                          "[TensorRT-LLM][INFO] Total activation memory: 71.20 GiB | "
                          "[TensorRT-LLM][ERROR] CUDA runtime error in cudaMalloc: out of memory | "
                          "RuntimeError: [TensorRT-LLM][ERROR] Assertion failed: engine build failed"}
    return {"exitCode": 1, "reason": "Error", "message": json.dumps(summary, sort_keys=True),
            "startedAt": finished, "finishedAt": finished}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class SimulatedCluster:
    """Polls the emulator's objects and moves Jobs and Deployments forward."""

    def __init__(self, emulator: Any, api: KubeApi, build_seconds: float = 1.0,
                 start_seconds: float = 0.5, fail_builds: Callable[[dict[str, Any]], bool] | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.emulator = emulator
        self.api = api
        self.build_seconds = build_seconds
        self.start_seconds = start_seconds
        self.fail_builds = fail_builds or (lambda job: False)
        self.on_event = on_event or (lambda message: None)
        self._seen: dict[tuple[str, str, str], float] = {}
        self._triton: dict[tuple[str, str], SimulatedTriton] = {}
        self._pods: dict[str, int] = {}  # serving pods per service instance
        # Demand per service in replica-equivalents of KV blocks (0.35 = a third of one
        # replica's blocks), spread over its pods; the autoscaling tests drive it.
        self.load: dict[str, float] = {}
        # Services whose pods report a recorded trace's demand instead (the demo's replay).
        self.replays: dict[str, TraceReplay] = {}
        # Services whose metrics endpoints answer 503, to show that the autoscaler holds.
        self.metrics_outage: set[str] = set()
        # Services whose serving containers exit at start and restart, by instance: the last
        # lines each prints (see :func:`crash_looping`).
        self.crashing: dict[str, str] = {}
        # False: LeaderWorkerSets' status as a controller before LWS v0.9.0 writes it, without
        # observedGeneration (kubernetes-sigs/lws v0.8.0, config/crd/bases).
        self.group_observes_generation = True
        # The time the kubelet and the metrics pages go by: the event loop's, or the demo's
        # simulated clock (in trace seconds) while it replays a trace.
        self.clock: Callable[[], float] | None = None
        self._stepping = asyncio.Lock()

    def add_nodes(self) -> None:
        """Register the simulated GPU nodes, as their kubelets would."""
        for node in GPU_NODES:
            self.emulator.objects[resource("v1/nodes"), None, node["name"]] = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node["name"],
                             "labels": {"nvidia.com/gpu.product": node["product"]}},
                "status": {"capacity": {"nvidia.com/gpu": str(node["gpus"])},
                           "allocatable": {"nvidia.com/gpu": str(node["gpus"])}},
            }

    def now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    async def step(self, now: float | None = None) -> None:
        """Move Jobs and workloads forward to ``now`` (default: :meth:`now`); one at a time,
        so that a step the demo takes and the background loop's never interleave."""
        async with self._stepping:
            await self._step(self.now() if now is None else now)

    async def _step(self, now: float) -> None:
        for job in self.emulator.live("jobs"):
            key = ("job", job["metadata"]["namespace"], job["metadata"]["name"])
            if (job.get("status") or {}).get("conditions"):
                continue
            started = self._seen.setdefault(key, now)
            if now - started < self.build_seconds:
                continue
            failed = self.fail_builds(job)
            kind = "Failed" if failed else "Complete"
            finished = _now()
            await self._finish_build_pods(job, failed)
            await self.api.patch_status(job, {
                "startTime": job["metadata"].get("creationTimestamp", finished),
                **({} if failed else {"completionTime": finished}),
                "succeeded": 0 if failed else 1, "failed": 1 if failed else 0,
                "conditions": [{"type": kind, "status": "True", "lastTransitionTime": finished}]})
            self.on_event(f"job/{job['metadata']['name']} {'failed' if failed else 'completed'}"
                          " (simulated build)")
        # A LeaderWorkerSet replica is a group; only its leader (rank 0) serves and exposes
        # metrics, so the simulation runs one pod per group, named as LWS names leaders.
        workloads = [(d, d["spec"]["template"], "deployment") for d in self.emulator.live("deployments")]
        workloads += [(g, g["spec"]["leaderWorkerTemplate"]["leaderTemplate"], "leaderworkerset")
                      for g in self.emulator.live("leaderworkersets")]
        for workload, template, kind in workloads:
            meta = workload["metadata"]
            want = int(workload["spec"].get("replicas", 1))
            status = workload.get("status") or {}
            ready = 0 if self._crashing(template) is not None else want
            target = {"replicas": want, "readyReplicas": ready, "updatedReplicas": want}
            if kind == "deployment" or self.group_observes_generation:
                target["observedGeneration"] = meta.get("generation")
            if kind == "deployment":
                target["availableReplicas"] = ready
            if all(status.get(k) == v for k, v in target.items()):
                continue
            key = (kind, meta["namespace"], f"{meta['name']}@{meta.get('generation')}")
            started = self._seen.setdefault(key, now)
            # New pods take start_seconds to load the engine; removed ones stop serving at once
            # (they leave the Service's endpoints and the operator's scrapes when deleted).
            if now - started < self.start_seconds and want >= len(self._running(meta)):
                continue
            # Only serving pods are simulated as Triton; other Deployments (a gateway's endpoint
            # picker) are just marked ready.
            if template["metadata"].get("labels", {}).get(LABEL_COMPONENT, "server") == "server":
                await self._sync_pods(workload, template, want)
            await self.api.patch_status(workload, target)
            self.on_event(f"{kind}/{meta['name']} {want} replica(s) ready (simulated pods)")

    async def _finish_build_pods(self, job: dict[str, Any], failed: bool) -> None:
        """The Job's pod (the emulator made it with the Job, as the Job controller does)
        terminated, as :func:`build_terminated` says."""
        meta = job["metadata"]
        terminated = build_terminated(job["spec"]["template"]["metadata"]["labels"].get(LABEL_ENGINE, ""), failed)
        for pod in self.emulator.live("pods"):
            if (pod["metadata"].get("labels") or {}).get("controller-uid") != meta["uid"]:
                continue
            containers = (pod.get("spec") or {}).get("containers") or [{"name": "build"}]
            await self.api.patch_status(pod, {"phase": "Failed" if failed else "Succeeded", "containerStatuses": [{
                "name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""), "imageID": "",
                "state": {"terminated": terminated}} for c in containers]})

    def _predicted_tokens(self, namespace: str, instance: str) -> int:
        service = self.emulator.get_live("llmservices", namespace, instance) or {}
        return int(((service.get("status") or {}).get("plan") or {}).get("kvCacheTokens") or 65536)

    def pods(self, instance: str) -> int:
        """Serving pods of a service instance."""
        return self._pods.get(instance, 0)

    def _per_pod_load(self, instance: str) -> PodLoad:
        if instance in self.replays:
            return self.replays[instance].pod_load()
        return PodLoad.steady(self.load.get(instance, 0.35) / max(1, self.pods(instance)),
                              SimulatedTriton.INPUT_TOKENS_PER_S_AT_FULL_LOAD)

    def _running(self, meta: dict[str, Any]) -> dict[int, SimulatedTriton]:
        """A workload's simulated pods (``<workload>-<index>``), by index."""
        prefix = f"{meta['name']}-"
        return {int(name[len(prefix):]): triton for (namespace, name), triton in self._triton.items()
                if namespace == meta["namespace"] and name.startswith(prefix)}

    async def _sync_pods(self, workload: dict[str, Any], template: dict[str, Any], want: int) -> None:
        meta = workload["metadata"]
        namespace = meta["namespace"]
        instance = template["metadata"]["labels"].get(LABEL_INSTANCE, meta["name"])
        for index in range(want):
            name = f"{meta['name']}-{index}"
            key = (namespace, name)
            if (last_words := self._crashing(template)) is not None and key not in self._triton:
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": namespace, "labels": dict(template["metadata"]["labels"])},
                       "spec": {"containers": [{"name": "server", "image": "simulated"}]}}
                await self.api.apply(pod)
                await self.api.patch_status(pod, {"phase": "Running", "podIP": "127.0.0.1",
                                                  **crash_looping(pod, last_words)})
                continue
            if key not in self._triton:
                predicted = self._predicted_tokens(namespace, instance)
                triton = SimulatedTriton(instance, predicted, lambda i=instance: self._per_pod_load(i),
                                         lambda i=instance: i in self.metrics_outage,
                                         served_model=served_model(template),
                                         clock=lambda: self.clock() if self.clock else time.monotonic())
                await triton.start()
                self._triton[key] = triton
                self._pods[instance] = self._pods.get(instance, 0) + 1
            triton = self._triton[key]
            # One simulated server answers both, as the real frontend's port serves /metrics too.
            ports = [{"name": "metrics", "containerPort": triton.port}]
            if triton.served_model:
                ports.append({"name": "openai", "containerPort": triton.port})
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": name, "namespace": namespace,
                                "labels": dict(template["metadata"]["labels"])},
                   "spec": {"containers": [{"name": "server", "image": "simulated",
                                            "ports": ports}]}}
            await self.api.apply(pod)
            await self.api.patch_status(pod, {
                "phase": "Running", "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _now()}]})
        for index, triton in self._running(meta).items():
            if index >= want:
                name = f"{meta['name']}-{index}"
                await self.api.delete({"apiVersion": "v1", "kind": "Pod",
                                       "metadata": {"name": name, "namespace": namespace}})
                await triton.stop()
                del self._triton[(namespace, name)]
                self._pods[triton.instance_of] -= 1

    def _crashing(self, template: dict[str, Any]) -> str | None:
        """What a serving pod of ``template`` prints last before it exits, if it does."""
        labels = (template.get("metadata") or {}).get("labels") or {}
        return self.crashing.get(labels.get(LABEL_INSTANCE, ""))

    async def close(self) -> None:
        for triton in self._triton.values():
            await triton.stop()
        self._triton.clear()
        self._pods.clear()

    async def run(self, stop: asyncio.Event, period: float = 0.1) -> None:
        while not stop.is_set():
            await self.step()
            try:
                await asyncio.wait_for(stop.wait(), timeout=period)
            except TimeoutError:
                pass
        await self.close()


class SimulatedTriton:
    """One pod's Triton metrics endpoint: the TensorRT-LLM backend's KV block and request
    gauges, as the real server prints them on port 8002."""

    TOKENS_PER_BLOCK = 32
    # A steady load's prompt tokens: far below an H100's prefill speed, so KV leads.
    INPUT_TOKENS_PER_S_AT_FULL_LOAD = 2000.0

    def __init__(self, instance: str, predicted_tokens: int, load: Callable[[], PodLoad],
                 outage: Callable[[], bool] = lambda: False,
                 served_model: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.served_model = served_model
        # The engine allocates within a few percent of the prediction (deterministic per size).
        skew = int(hashlib.sha256(str(predicted_tokens).encode()).hexdigest(), 16) % 9 - 4
        self.max_blocks = max(1, round(predicted_tokens * (1 + skew / 100) / self.TOKENS_PER_BLOCK))
        self.load = load
        self.outage = outage
        self.instance_of = instance
        self.input_tokens = 0.0
        self.clock = clock
        self._read_at = clock()
        self.port = 0
        self._runner: aiohttp.web.AppRunner | None = None

    def page(self) -> str:
        load = self.load()
        used = min(self.max_blocks, round(self.max_blocks * load.kv_fraction))
        labels = 'model="tensorrt_llm",version="1"'
        lines = [f"# HELP {KV_METRIC} TRT LLM KV cache block metrics", f"# TYPE {KV_METRIC} gauge"]
        # "fraction" is used / max, as the backend's WaitForStats computes it (kiln.autoscale.metrics);
        # keda mode's query and the Gateway's endpoint picker read it.
        for kind, value in (("max", self.max_blocks), ("used", used), ("free", self.max_blocks - used),
                            ("tokens_per", self.TOKENS_PER_BLOCK), ("fraction", used / self.max_blocks)):
            lines.append(f'{KV_METRIC}{{kv_cache_block_type="{kind}",{labels}}} {value}')
        # "waiting" is active - scheduled as the backend's WaitForStats computes it
        # (kiln.autoscale.metrics); the Gateway's endpoint picker reads "scheduled" as running.
        requests = {"waiting": load.waiting, "active": load.active,
                    "scheduled": max(0, load.active - load.waiting)}
        if load.max_requests:
            requests["max"] = load.max_requests
        lines += [f"# HELP {REQUEST_METRIC} TRT LLM request metrics", f"# TYPE {REQUEST_METRIC} gauge"]
        lines += [f'{REQUEST_METRIC}{{{labels},request_type="{kind}"}} {value}' for kind, value in requests.items()]
        # Prompt tokens taken in so far (a histogram's sum, a counter).
        now = self.clock()
        if load.input_tokens_total is not None:
            self.input_tokens = load.input_tokens_total
        else:  # a clock that moved back (the demo switching to its simulated one) counts nothing
            self.input_tokens += load.input_tokens_per_s * max(0.0, now - self._read_at)
        self._read_at = now
        histogram, series = INPUT_TOKENS_METRIC, 'model="tensorrt_llm",response_metric_type="total_input_tokens",version="1"'
        lines += [f"# HELP {histogram} Input token length", f"# TYPE {histogram} histogram",
                  f'{histogram}_bucket{{{series},le="+Inf"}} {int(self.input_tokens // 512)}',
                  f'{histogram}_count{{{series}}} {int(self.input_tokens // 512)}',
                  f'{histogram}_sum{{{series}}} {self.input_tokens:.0f}']
        return "\n".join(lines) + "\n"

    async def start(self, host: str = "127.0.0.1", port: int = 0, *more_ports: int) -> None:
        """Serve on ``host:port`` (any free port by default; a real server's simulated Pods
        each have their own loopback address and the Pod's ports: metrics, and OpenAI)."""
        async def metrics(request: aiohttp.web.Request) -> aiohttp.web.Response:
            if self.outage():
                return aiohttp.web.Response(status=503, text="metrics unavailable (simulated outage)")
            return aiohttp.web.Response(text=self.page())

        app = aiohttp.web.Application()
        app.router.add_get("/metrics", metrics)
        if self.served_model:
            add_openai_routes(app, self.served_model)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for other in more_ports:
            await aiohttp.web.TCPSite(self._runner, host, other).start()

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            server = runner.server
            await runner.cleanup()
            # A scrape accepted as the listener closed is connected after the shutdown above,
            # which closes only the connections the server held by then (aiohttp 3.14,
            # web_server.py ``Server.shutdown``): let it connect, and close it too.
            await asyncio.sleep(0.05)
            for handler in server.connections if server is not None else []:
                handler.force_close()
                if handler.transport is not None:
                    handler.transport.close()
