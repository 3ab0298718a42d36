"""The demo's second act: a recorded trace drives the operator's builtin autoscaler.

The demo and the operator take turns on a simulated clock (:mod:`kiln.demo.clock`): every
autoscaler period of trace time, the demo moves the simulated pods and their metrics to that
time, then waits for the operator's decision and for the workload to follow it. Nothing
depends on how fast the machine is, so two runs print the same lines.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api.validation import parse_service_manifest
from ..controller.autoscaler import AUTOSCALE_PERIOD_SECONDS
from ..planner import lookup_gpu
from ..planner.perf import PerfModel
from ..render.serving import workload_ref
from ..sim.traces import load_trace
from .clock import DemoClock
from .replay import TraceReplay
from .sandbox import Sandbox

__all__ = ["Replay", "replay_act"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class Replay:
    """A bursty slice of a recorded trace against one example service."""

    trace: str = "traces/azure-code-36-52min.csv"
    about: str = "the Azure LLM inference trace 2023 (code, CC BY 4.0)"
    service: str = "llama-8b"
    rate_scale: float = 6.0        # each recorded request sent 6 times
    cold_start: float = 90.0       # trace seconds from scale-up to a serving pod
    stabilization: int = 300       # the HPA's default scale-down stabilisation
    max_replicas: int = 4
    row_every: float = 120.0       # trace seconds between timeline rows
    linger: float = 900.0          # quiet trace seconds after the slice to come back down in


def _wrapped(line: str) -> str:
    """A timeline line within 100 columns, continued under its text."""
    return textwrap.fill(line, width=100, subsequent_indent=" " * 9)


def _clock(second: float) -> str:
    return f"{int(second // 60):02d}:{int(second % 60):02d}"


async def replay_act(sandbox: Sandbox, clock: DemoClock, r: Replay, examples: Path,
                     services: list[dict[str, Any]], say: Say, detail: Say) -> bool:
    """Turn on builtin autoscaling for one example service and replay a trace through its
    pods' metrics; True when it scaled up and came back down to its minimum."""
    manifest = next((m for m in services if m["metadata"]["name"] == r.service), None)
    trace = examples / r.trace
    if manifest is None or not trace.is_file():
        say(f"\n(no autoscaling act: {examples} has no llmservice/{r.service} or no {r.trace})")
        return True
    namespace = manifest["metadata"].get("namespace", "default")
    _, spec = parse_service_manifest(manifest)
    perf = PerfModel.for_catalog_model(spec, lookup_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch))
    replay = TraceReplay(load_trace(trace, rate_scale=r.rate_scale), perf)
    scaling = {"mode": "builtin", "maxReplicas": r.max_replicas,
               "scaleDownStabilizationSeconds": r.stabilization}
    say("\n" + textwrap.fill(
        f"Autoscaling llmservice/{r.service} on {round(replay.seconds / 60)} minutes of {r.about}, "
        f"each request sent {r.rate_scale:g} times, through its pods' simulated Triton metrics.",
        width=92))
    say("$ kubectl patch llms " + f"{r.service} -n {namespace} --type=merge -p \\\n  '"
        + json.dumps({"spec": {"autoscaling": scaling}}, separators=(",", ":")) + "'")
    say(f"Time is simulated and compressed: every {AUTOSCALE_PERIOD_SECONDS:.0f} s of trace time "
        f"the operator decides, a new pod\nserves {r.cold_start:.0f} s after it is asked for, "
        "and the whole replay takes seconds. Times are trace time.")
    await sandbox.patch_spec(namespace, r.service, {"autoscaling": scaling})
    cluster = sandbox.cluster
    cluster.clock, cluster.start_seconds = clock, r.cold_start
    cluster.replays[r.service] = replay
    peak = max(replay.requests_per_minute(t) for t in range(0, replay.seconds + 60, 10))
    say(f"  {'TRACE':>5s}  {'REQ/MIN':>7s}  {'':30s}  REPLICAS (■ serving, □ starting)")
    _, _, workload = workload_ref(spec, r.service)  # a Deployment: the example is single-node

    def replicas() -> tuple[int, int]:
        deployment = sandbox.get("deployments", workload, namespace) or {}
        return (int((deployment.get("spec") or {}).get("replicas", 1)),
                int((deployment.get("status") or {}).get("readyReplicas") or 0))

    second, highest, came_down = 0.0, 1, False
    while second <= replay.seconds + r.linger:
        clock.now = second
        await cluster.step()
        pods = cluster.pods(r.service)
        replay.advance(second, pods)
        current, ready = replicas()
        if second < replay.seconds and second % r.row_every == 0:
            rate = replay.requests_per_minute(second)
            bar = "█" * round(30 * rate / max(peak, 1))
            say(f"  {_clock(second)}  {rate:7,d}  {bar:30s}  {'■' * pods}{'□' * max(0, current - pods)}")
        clock.expect(namespace, r.service, current, ready)
        decided = await clock.decision(namespace, r.service)
        desired = decided.decision.desired
        if desired != current:
            await sandbox.wait_for(lambda: replicas()[0] == desired, timeout=30,
                                   what=f"deployment/{workload} at {desired} replicas")
            await cluster.step()  # the new pods start, or the removed ones stop, now
            kind = "ScaledUp" if desired > current else "ScaledDown"
            say(_wrapped(f"  {_clock(second)}  {kind}: {decided.decision.reason}"))
        else:
            detail(_wrapped(f"  {_clock(second)}  {decided.decision.reason}"))
        highest = max(highest, desired)
        if second >= replay.seconds and desired == 1 and highest > 1:
            came_down = True
            break
        second += AUTOSCALE_PERIOD_SECONDS
    cluster.replays.pop(r.service, None)
    say(f"{r.service} went from 1 up to {highest} replicas on the bursts and "
        f"{'back down to 1' if came_down else 'did NOT come back down to 1'} once the trace went quiet.")
    return came_down
