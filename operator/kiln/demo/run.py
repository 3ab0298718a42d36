"""`kiln demo`: the real operator, in-process, against the API emulator and a simulated cluster."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml
from kmock import Server, resource

from ..api import API_VERSION
from ..api.crd import crds
from ..api.validation import parse_service_manifest
from ..controller.conditions import get_condition
from ..controller.handlers import OperatorContext
from ..controller.kube import KubeApi
from ..controller.models import ModelResolver
from ..controller.operator import run_operator
from ..errors import SpecInvalid
from .emulator import KilnEmulator
from .kubelet import GPU_NODES, SimulatedCluster

__all__ = ["run_demo", "load_manifests", "table"]


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def table(services: list[dict[str, Any]]) -> str:
    """The `kubectl get llms` view."""
    rows = [("NAMESPACE", "NAME", "READY", "REPLICAS", "GPUS", "PRECISION", "TPxPP", "KV-UTIL")]
    for svc in services:
        status = svc.get("status") or {}
        ready = get_condition(status.get("conditions", []), "Ready") or {}
        rows.append((svc["metadata"]["namespace"], svc["metadata"]["name"], ready.get("status", "-"),
                     f"{status.get('readyReplicas', 0)}/{svc['spec'].get('replicas', 1)}",
                     str(svc["spec"].get("gpus", 1)), svc["spec"].get("precision", "bf16"),
                     status.get("tpPp", "-"), status.get("kvCacheUtilization", "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _services(emulator: KilnEmulator) -> list[dict[str, Any]]:
    return sorted((obj.raw for (res, _, _), obj in list(emulator.objects.items())
                   if res.plural == "llmservices" and not obj.deleted),
                  key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


async def _create(emulator: Any, url: str, path: str, body: dict[str, Any]) -> None:
    async with emulator.servers[0].client.post(path, json=body) as response:
        if response.status >= 300:
            raise RuntimeError(f"creating {body['kind']} {body['metadata']['name']}: "
                               f"{response.status} {await response.text()}")


async def run_demo(examples: Path, out: TextIO = sys.stdout, timeout: float = 90.0) -> int:
    logging.getLogger("kopf").setLevel(logging.CRITICAL if not __import__("os").environ.get("KILN_DEBUG") else logging.DEBUG)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    manifests = load_manifests(examples)
    services = [m for m in manifests if m.get("kind") == "LLMService"]
    if not services:
        say(f"no LLMService manifests in {examples}")
        return 2
    for manifest in services:
        try:
            parse_service_manifest(manifest)
        except SpecInvalid as error:
            say(f"{manifest.get('metadata', {}).get('name', '?')}: {error.message}")
            return 2

    say("Kiln demo — the real operator against an in-process Kubernetes API emulator.")
    say("Simulated: the API server (kmock), "
        f"{len(GPU_NODES)} GPU nodes x 8 H100-80GB, the engine build Jobs (they complete after a "
        "pause, no TensorRT-LLM runs) and the serving pods (marked ready, no Triton runs).")
    say("Real: validation, the planner, rendering, server-side apply, kopf, status and events.\n")

    stop = asyncio.Event()
    async with KilnEmulator() as emulator, Server(emulator) as server:
        url = str(server.url).rstrip("/")
        api = KubeApi.for_url(url)
        ctx = OperatorContext(api=api, models=ModelResolver(allow_download=False), login_url=url,
                              max_retry_delay=0.5)
        cluster = SimulatedCluster(emulator, api, on_event=lambda m: say(f"  [cluster] {m}"))
        cluster.add_nodes()
        for crd in crds():
            await _create(emulator, url, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        namespaces = sorted({m["metadata"].get("namespace", "default") for m in services})
        for namespace in namespaces:
            # kmock cannot route POST /api/v1/namespaces: seed the namespaces directly.
            emulator.objects[resource("v1/namespaces"), None, namespace] = {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        secrets = sorted({(m["metadata"].get("namespace", "default"),
                           (m["spec"]["model"].get("credentials") or {}).get("secretName"))
                          for m in services} - {(ns, None) for ns in namespaces})
        for namespace, secret in secrets:
            if secret:
                await _create(emulator, url, f"/api/v1/namespaces/{namespace}/secrets", {
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": namespace},
                    "data": {"HF_TOKEN": base64.b64encode(b"simulated-token").decode()}})
                say(f"  created Secret {namespace}/{secret} with a placeholder token (simulated)")
        operator = asyncio.create_task(run_operator(ctx, stop))
        kubelet = asyncio.create_task(cluster.run(stop))
        for manifest in services:
            namespace = manifest["metadata"].get("namespace", "default")
            await _create(emulator, url, f"/apis/{API_VERSION}/namespaces/{namespace}/llmservices",
                          {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}})
            say(f"applied llmservice/{manifest['metadata']['name']} "
                f"({manifest['spec']['model']['source']}, {manifest['spec'].get('precision', 'bf16')}, "
                f"{manifest['spec'].get('gpus', 1)} GPU)")
        seen: dict[str, str] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        all_ready = False
        while asyncio.get_running_loop().time() < deadline:
            current = _services(emulator)
            for svc in current:
                conditions = (svc.get("status") or {}).get("conditions", [])
                ready = get_condition(conditions, "Ready") or {}
                line = f"{ready.get('status', '-')}: {ready.get('reason', 'Pending')} — {ready.get('message', '')}"
                name = svc["metadata"]["name"]
                if seen.get(name) != line:
                    seen[name] = line
                    say(f"  llmservice/{name} Ready={line}")
            all_ready = bool(current) and all(
                (get_condition((s.get("status") or {}).get("conditions", []), "Ready") or {})
                .get("status") == "True" for s in current)
            if all_ready:
                break
            await asyncio.sleep(0.25)
        stop.set()
        for result in await asyncio.gather(operator, kubelet, return_exceptions=True):
            if isinstance(result, BaseException):
                say(f"operator stopped with an error: {type(result).__name__}: {result}")
        await api.close()
        say("\n$ kubectl get llms -A")
        say(table(_services(emulator)))
        engines = [obj.raw for (res, _, _), obj in list(emulator.objects.items())
                   if res.plural == "llmengines" and not obj.deleted]
        say(f"\n{len(engines)} engines built (simulated) into the content-addressed cache; "
            f"every service {'is' if all_ready else 'is NOT'} Ready.")
    return 0 if all_ready else 1
