"""`kiln demo`: the real operator, in-process, against the API emulator and a simulated cluster."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml
from ..api.validation import parse_service_manifest
from ..controller.conditions import get_condition, is_true
from ..errors import SpecInvalid
from .kubelet import GPU_NODES
from .sandbox import Sandbox

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


async def run_demo(examples: Path, out: TextIO = sys.stdout, timeout: float = 90.0) -> int:
    # kopf's own log is for operators of the operator; KILN_DEBUG=1 shows it.
    logging.getLogger("kopf").setLevel(logging.DEBUG if os.environ.get("KILN_DEBUG") else logging.CRITICAL)
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

    # No autoscaling ticks in this run (its services start at their minimum and stay idle):
    # the first would come after the demo ends. An operator stopped while a kopf timer is
    # mid-patch leaks that patch's HTTP session inside kopf (a warning at exit).
    async with Sandbox(on_event=lambda m: say(f"  [cluster] {m}"), autoscale_period=120.0) as sandbox:
        namespaces = sorted({m["metadata"].get("namespace", "default") for m in services})
        for namespace in namespaces:
            sandbox.add_namespace(namespace)
        secrets = sorted({(m["metadata"].get("namespace", "default"),
                           (m["spec"]["model"].get("credentials") or {}).get("secretName"))
                          for m in services} - {(ns, None) for ns in namespaces})
        for namespace, secret in secrets:
            await sandbox.add_secret(namespace, secret, {"HF_TOKEN": "simulated-token"})
            say(f"  created Secret {namespace}/{secret} with a placeholder token (simulated)")
        await sandbox.start_operator()
        sandbox.start_kubelet()
        for manifest in services:
            await sandbox.create(manifest)
            say(f"applied llmservice/{manifest['metadata']['name']} "
                f"({manifest['spec']['model']['source']}, {manifest['spec'].get('precision', 'bf16')}, "
                f"{manifest['spec'].get('gpus', 1)} GPU)")
        seen: dict[str, str] = {}
        deadline = asyncio.get_running_loop().time() + timeout
        all_ready = False
        while asyncio.get_running_loop().time() < deadline:
            current = sandbox.objects("llmservices")
            for svc in current:
                conditions = (svc.get("status") or {}).get("conditions", [])
                ready = get_condition(conditions, "Ready")
                if ready is None:
                    continue  # not yet seen by the operator
                line = f"{ready['status']}: {ready.get('reason', '')} — {ready.get('message', '')}"
                name = svc["metadata"]["name"]
                if seen.get(name) != line:
                    seen[name] = line
                    say(f"  llmservice/{name} Ready={line}")
            all_ready = bool(current) and all(
                is_true((s.get("status") or {}).get("conditions", []), "Ready") for s in current)
            if all_ready:
                break
            await asyncio.sleep(0.25)
        # The KV-UTIL column: the operator's observer scrapes each Ready service's pods.
        observed_by = asyncio.get_running_loop().time() + 5.0
        while all_ready and asyncio.get_running_loop().time() < observed_by and not all(
                "kvCacheUtilization" in (s.get("status") or {}) for s in sandbox.objects("llmservices")):
            await asyncio.sleep(0.25)
        await sandbox.stop_operator()
        await sandbox.stop_kubelet()
        say("\n$ kubectl get llms -A")
        say(table(sandbox.objects("llmservices")))
        engines = sandbox.objects("llmengines")
        say(f"\n{len(engines)} engines built (simulated) into the content-addressed cache; "
            f"every service {'is' if all_ready else 'is NOT'} Ready.")
    return 0 if all_ready else 1
