"""A simulated kubelet and controllers for the demo: honest stand-ins for what runs GPUs.

It finishes build Jobs after a delay (as if ``kiln-runtime build`` ran) and marks
Deployment replicas ready (as if Triton loaded the engine and passed its readiness probe).
It writes through the emulator's API, like the real components, so the operator sees only
ordinary watch events. Nothing here runs a model.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

from kmock import resource

from ..controller.kube import KubeApi

__all__ = ["SimulatedCluster", "GPU_NODES"]

GPU_NODES = [
    {"name": f"gpu-node-{i}", "product": "NVIDIA-H100-80GB-HBM3", "gpus": 8} for i in range(4)
]


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

    def _live(self, plural: str) -> list[dict[str, Any]]:
        return [obj.raw for (resource, _, _), obj in list(self.emulator.objects.items())
                if resource.plural == plural and not obj.deleted]

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

    async def step(self, now: float) -> None:
        for job in self._live("jobs"):
            key = ("job", job["metadata"]["namespace"], job["metadata"]["name"])
            if (job.get("status") or {}).get("conditions"):
                continue
            started = self._seen.setdefault(key, now)
            if now - started < self.build_seconds:
                continue
            failed = self.fail_builds(job)
            kind = "Failed" if failed else "Complete"
            await self.api.patch_status(job, {
                "succeeded": 0 if failed else 1, "failed": 1 if failed else 0,
                "conditions": [{"type": kind, "status": "True", "lastTransitionTime": _now()}]})
            self.on_event(f"job/{job['metadata']['name']} {'failed' if failed else 'completed'}"
                          " (simulated build)")
        for deployment in self._live("deployments"):
            meta = deployment["metadata"]
            want = int(deployment["spec"].get("replicas", 1))
            status = deployment.get("status") or {}
            target = {"replicas": want, "readyReplicas": want, "availableReplicas": want,
                      "updatedReplicas": want, "observedGeneration": meta.get("generation")}
            if all(status.get(k) == v for k, v in target.items()):
                continue
            key = ("deploy", meta["namespace"], f"{meta['name']}@{meta.get('generation')}")
            started = self._seen.setdefault(key, now)
            if now - started < self.start_seconds:
                continue
            await self.api.patch_status(deployment, target)
            self.on_event(f"deployment/{meta['name']} {want} replica(s) ready (simulated pods)")

    async def run(self, stop: asyncio.Event, period: float = 0.1) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            await self.step(loop.time())
            try:
                await asyncio.wait_for(stop.wait(), timeout=period)
            except TimeoutError:
                pass
