"""`kiln demo`: the real operator, in-process, against the API emulator and a simulated cluster.

The output is written for someone meeting Kiln for the first time: it fits 100 columns,
stays under 60 lines, and is the same on every run (simulated clock, objects in name
order); ``verbose`` adds every status change, cluster event and autoscaler decision.
"""

from __future__ import annotations

import asyncio
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from ..api.crd import crds
from ..api.loading import read_yaml_file
from ..api.validation import parse_service_manifest
from ..decide.conditions import get_condition, is_true
from ..errors import SpecInvalid
from .autoscaling import Replay, replay_act
from .clock import DemoClock
from .emulator import KilnEmulator
from .kubelet import GPU_NODES
from .openai_act import openai_act
from .sandbox import Sandbox
from .table import printer_table

__all__ = ["BUNDLED_EXAMPLES", "Replay", "load_manifests", "run_demo"]

# The examples ship inside the package, so that the demo runs from any directory.
BUNDLED_EXAMPLES = Path(str(resources.files("kiln") / "examples"))
# The operator polls its autoscaler this often (wall seconds); the simulated clock decides
# when a poll becomes a decision.
_AUTOSCALER_POLL_SECONDS = 0.02


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    """Every document of every *.yaml file in ``directory``; SpecInvalid names the file, line
    and column of the first that does not parse."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in read_yaml_file(path) if d)
    return docs


def _summary(manifest: dict[str, Any]) -> str:
    spec, meta = manifest["spec"], manifest["metadata"]
    gpus = spec.get("gpus", 1)
    return (f"  llmservice/{meta['name']:<14s} {spec['model']['source']:<42s} "
            f"{spec.get('precision', 'bf16'):<9s} {gpus} GPU{'s' if gpus > 1 else ''}")


def _settled(sandbox: Sandbox) -> bool:
    """Every service's status has caught up with its workload and has a KV-UTIL reading."""
    for svc in sandbox.objects("llmservices"):
        status = svc.get("status") or {}
        if "kvCacheUtilization" not in status:
            return False
        workloads = [w for kind in ("deployments", "leaderworkersets") for w in sandbox.objects(kind)
                     if w["metadata"]["namespace"] == svc["metadata"]["namespace"]
                     and any(o.get("uid") == svc["metadata"]["uid"]
                             for o in w["metadata"].get("ownerReferences", []))]
        if any((w.get("status") or {}).get("readyReplicas") != status.get("readyReplicas")
               for w in workloads):
            return False
    return True


async def run_demo(examples: Path, out: TextIO | None = None, timeout: float = 90.0,
                   replay: Replay | None = None, verbose: bool = False,
                   shown_as: str | None = None) -> int:
    """Apply every LLMService in ``examples`` (shown as ``shown_as``), wait for each to be
    Ready, replay a trace against one; 0 when all were Ready and it scaled up and down.
    ``out``: where to print, standard output as it is at the call if None (a default bound at
    import would keep whatever stream was standard output then)."""
    def say(message: str) -> None:
        print(message, file=out or sys.stdout, flush=True)

    def detail(message: str) -> None:
        if verbose:
            say(message)

    services = [m for m in load_manifests(examples) if m.get("kind") == "LLMService"]
    if not services:
        raise SpecInvalid(f"--examples: no LLMService manifests in {examples}")
    for manifest in services:
        try:
            parse_service_manifest(manifest)
        except SpecInvalid as error:
            name = (manifest.get("metadata") or {}).get("name", "?")
            raise SpecInvalid(f"llmservice/{name}: {error.message}") from None
    services.sort(key=lambda m: (m["metadata"].get("namespace", "default"), m["metadata"]["name"]))

    say("Kiln demo: the real operator (kopf, planner, rendering, server-side apply, status) "
        f"against an\nin-process Kubernetes API with {len(GPU_NODES)} simulated nodes of "
        "8 x H100-80GB. Engine builds and serving\npods are simulated: no TensorRT-LLM or "
        "Triton runs. -v shows every step.\n")
    clock = DemoClock()
    replay = replay or Replay()
    async with Sandbox(on_event=lambda m: detail(f"  [cluster] {m}"),
                       autoscale_period=_AUTOSCALER_POLL_SECONDS,
                       decision_clock=clock,
                       emulator=KilnEmulator(clock=clock.wall)) as sandbox:
        for namespace in sorted({m["metadata"].get("namespace", "default") for m in services}):
            sandbox.add_namespace(namespace)
        secrets = sorted({(m["metadata"].get("namespace", "default"), secret) for m in services
                          if (secret := (m["spec"]["model"].get("credentials") or {}).get("secretName"))})
        for namespace, secret in secrets:
            await sandbox.add_secret(namespace, secret, {"HF_TOKEN": "simulated-token"})
            detail(f"  created Secret {namespace}/{secret} with a placeholder token")
        await sandbox.start_operator()
        sandbox.start_kubelet()
        say(f"$ kubectl apply -f {shown_as or examples}")
        for manifest in services:
            await sandbox.create(manifest)
            say(_summary(manifest))
        all_ready = await _wait_ready(sandbox, timeout, detail)
        engines = len(sandbox.objects("llmengines"))
        stalled = _stalled(sandbox)
        if not all_ready and stalled:
            say("\nNot every service became Ready; it cannot go on without a change to its manifest:")
            for line in stalled:
                say(f"  {line}")
        elif not all_ready:
            say(f"\nNot every service became Ready within {timeout:.0f} s; -v shows where each stopped.")
        else:
            say(f"Every service is Ready: {engines} engines built (simulated) into the "
                "content-addressed cache.")
        answered = all_ready and await openai_act(sandbox.api, sandbox.objects("llmservices"), say)
        scaled = answered and await replay_act(sandbox, clock, replay, examples, services, say, detail)
        if all_ready:
            await sandbox.wait_for(lambda: _settled(sandbox), timeout=30, what="every status to settle")
        namespaces = sorted({m["metadata"].get("namespace", "default") for m in services})
        one = namespaces[0] if len(namespaces) == 1 else None
        say(f"\n$ kubectl get llms {f'-n {one}' if one else '-A'}")
        service_crd = next(c for c in crds() if c["spec"]["names"]["kind"] == "LLMService")
        say(printer_table(service_crd, sandbox.objects("llmservices"), clock.wall(),
                          all_namespaces=one is None))
        await sandbox.stop_operator()
        await sandbox.stop_kubelet()
    return 0 if all_ready and scaled else 1


async def _wait_ready(sandbox: Sandbox, timeout: float, detail: Any) -> bool:
    """Wait for every service to be Ready; each change of its Ready condition goes to ``detail``."""
    seen: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        current = sandbox.objects("llmservices")
        for svc in current:
            ready = get_condition((svc.get("status") or {}).get("conditions", []), "Ready")
            if ready is None:
                continue  # not yet seen by the operator
            line = f"{ready['status']}: {ready.get('reason', '')} — {ready.get('message', '')}"
            if seen.get(svc["metadata"]["name"]) != line:
                seen[svc["metadata"]["name"]] = line
                detail(f"  llmservice/{svc['metadata']['name']} Ready={line}")
        if current and all(is_true((s.get("status") or {}).get("conditions", []), "Ready")
                           for s in current):
            return True
        if current and all(is_true(conditions := (s.get("status") or {}).get("conditions", []), "Ready")
                           or is_true(conditions, "Stalled") for s in current):
            return False  # a stalled service waits for a change to its manifest, not for time
        await asyncio.sleep(0.1)
    return False


def _stalled(sandbox: Sandbox) -> list[str]:
    """``name (Reason): message`` of every stalled service."""
    out = []
    for svc in sandbox.objects("llmservices"):
        stalled = get_condition((svc.get("status") or {}).get("conditions", []), "Stalled")
        if stalled and stalled["status"] == "True":
            out.append(f"llmservice/{svc['metadata']['name']} ({stalled.get('reason')}): {stalled.get('message')}")
    return out
