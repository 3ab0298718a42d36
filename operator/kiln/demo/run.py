"""`kiln demo`: the real operator, in-process, against the API emulator and a simulated cluster."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..api.common import Reason
from ..api.loading import read_yaml_file
from ..api.validation import parse_service_manifest
from ..autoscale import LawParams
from ..controller.conditions import get_condition, is_true
from ..controller.autoscaler import AUTOSCALE_PERIOD_SECONDS
from ..errors import SpecInvalid
from ..planner import lookup_gpu
from ..planner.perf import PerfModel
from ..render.serving import workload_ref
from ..sim.traces import load_trace
from .kubelet import GPU_NODES
from .openai_act import openai_act
from .replay import TraceReplay
from .sandbox import Sandbox

__all__ = ["run_demo", "load_manifests", "table"]


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    """Every document of every *.yaml file in ``directory``; SpecInvalid names the file, line
    and column of the first that does not parse."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in read_yaml_file(path) if d)
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


async def run_demo(examples: Path, out: TextIO = sys.stdout, timeout: float = 90.0,
                   replay: Replay | None = None) -> int:
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
        "pause, no TensorRT-LLM runs) and the serving pods (marked ready, no Triton runs; their "
        "metrics pages report a steady load, then a recorded trace's).")
    say("Real: validation, the planner, rendering, server-side apply, kopf, status and events.\n")

    replay = replay or Replay()
    # The operator's autoscaling periods run replay.speed times faster, for the second act.
    speed = replay.speed
    law = LawParams()
    async with Sandbox(on_event=lambda m: say(f"  [cluster] {m}"),
                       autoscale_period=AUTOSCALE_PERIOD_SECONDS / speed,
                       autoscale_timing={"window_seconds": law.window_seconds / speed,
                                         "stale_seconds": law.stale_seconds / speed,
                                         "headroom_horizon": law.headroom_horizon / speed,
                                         "headroom_memory": law.headroom_memory / speed}
                       ) as sandbox:
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
        say("\n$ kubectl get llms -A")
        say(table(sandbox.objects("llmservices")))
        engines = sandbox.objects("llmengines")
        say(f"\n{len(engines)} engines built (simulated) into the content-addressed cache; "
            f"every service {'is' if all_ready else 'is NOT'} Ready.")
        answered = all_ready and await openai_act(sandbox.api, sandbox.objects("llmservices"), say)
        scaled = answered and await replay_act(sandbox, replay, examples, services, say)
        await sandbox.stop_operator()
        await sandbox.stop_kubelet()
    return 0 if all_ready and scaled else 1


@dataclass(frozen=True)
class Replay:
    """The demo's second act: a bursty slice of a recorded trace against one example."""

    trace: str = "traces/azure-code-36-52min.csv"
    about: str = ("16 minutes of the Azure LLM inference trace 2023 (code completion, minutes "
                  "36-52; CC BY 4.0)")
    service: str = "llama-8b"
    rate_scale: float = 6.0       # each recorded request sent 6 times
    speed: float = 30.0           # trace seconds per real second
    cold_start: float = 90.0      # trace seconds from scale-up to a serving pod
    stabilization: float = 300.0  # trace seconds, the HPA's default
    max_replicas: int = 4
    linger: float = 600.0         # trace seconds replayed after the slice, quiet


async def replay_act(sandbox: Sandbox, r: Replay, examples: Path, services: list[dict[str, Any]],
                     say: Callable[[str], None]) -> bool:
    """Turn on builtin autoscaling for one example service and replay a trace through its
    pods' metrics; True when it scaled up and came back down to its minimum."""
    manifest = next((m for m in services if m["metadata"]["name"] == r.service), None)
    trace = examples / r.trace
    if manifest is None or not trace.is_file():
        say(f"\n(no autoscaling replay: {examples} has no llmservice/{r.service} or no {r.trace})")
        return True
    namespace = manifest["metadata"].get("namespace", "default")
    _, spec = parse_service_manifest(manifest)
    perf = PerfModel.for_catalog_model(spec, lookup_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch))
    replay = TraceReplay(load_trace(trace, rate_scale=r.rate_scale), perf)
    scaling = {"mode": "builtin", "minReplicas": 1, "maxReplicas": r.max_replicas,
               "scaleDownStabilizationSeconds": round(r.stabilization / r.speed)}
    say(f"\nAutoscaling: {r.about},\neach request sent {r.rate_scale:g} times, replayed {r.speed:g}x "
        f"faster than real time through llmservice/{r.service}'s simulated Triton metrics.\n"
        f"The operator's timing runs {r.speed:g}x faster too: its control period, metric window, "
        f"{r.stabilization:.0f} s scale-down stabilisation\nand the {LawParams().headroom_memory / 60:.0f} "
        "minutes over which it learns "
        f"how fast the load grows. A new pod serves {r.cold_start:.0f} s after it is asked "
        "for.\nTimes are trace time.")
    say(f"$ kubectl patch llmservice {r.service} -n {namespace} --type=merge "
        f"-p '{json.dumps({'spec': {'autoscaling': scaling}}, separators=(',', ':'))}'")
    await sandbox.patch_spec(namespace, r.service, {"autoscaling": scaling})
    sandbox.cluster.start_seconds = r.cold_start / r.speed
    sandbox.cluster.replays[r.service] = replay
    peak = max(replay.requests_per_minute(t) for t in range(0, replay.seconds + 60, 10))
    say(f"\n  {'TRACE':>5s}  {'REQ/MIN':>7s}  {'':30s}  REPLICAS (■ serving, □ starting)")
    loop = asyncio.get_running_loop()
    started, shown, printed = loop.time(), 0.0, 0
    highest, end = 1, replay.seconds + r.linger
    _, _, workload = workload_ref(spec, r.service)  # a Deployment: the example is single-node
    while (second := (loop.time() - started) * r.speed) < end:
        pods = sandbox.cluster.pods(r.service)
        replay.advance(second, pods)
        desired = int(((sandbox.get("deployments", workload, namespace) or {}).get("spec") or {})
                      .get("replicas", 1))
        highest = max(highest, desired)
        events = sandbox.events("events")
        for _, event in events[printed:]:
            if event.get("involvedObject", {}).get("name") == r.service and \
                    event.get("reason") in (Reason.SCALED_UP.value, Reason.SCALED_DOWN.value):
                say(f"  {_clock(second)}  event {event['reason']}: {event.get('message', '')}")
        printed = len(events)
        if second >= shown:
            shown += 30.0
            rate = replay.requests_per_minute(second)
            bar = "█" * round(30 * rate / max(peak, 1))
            say(f"  {_clock(second)}  {rate:7,d}  {bar:30s}  {'■' * pods}{'□' * max(0, desired - pods)}")
        if second > replay.seconds + r.stabilization and desired == 1 and highest > 1:
            break  # back at the minimum after the slice
        await asyncio.sleep(0.05)
    sandbox.cluster.replays.pop(r.service, None)
    came_down = highest > 1 and desired == 1
    say(f"\nllmservice/{r.service} scaled from 1 up to {highest} replicas on the bursts and "
        f"{'back down to 1' if came_down else f'ended at {desired}'} once the trace went quiet.")
    return came_down


def _clock(second: float) -> str:
    return f"{int(second // 60):02d}:{int(second % 60):02d}"

