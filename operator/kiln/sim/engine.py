"""Replay requests against a fleet of simulated replicas under an autoscaling policy.

**Replica model** (first order; not calibrated against a measured TensorRT-LLM run, so read
the results as a comparison between policies on the same model, not as absolute latencies):

- Capacity comes from the planner: ``kvCacheTokens`` per replica and ``maxBatchSize``.
  Admission reserves a request's whole sequence (input + output tokens), as Triton's default
  ``guaranteed_no_evict`` scheduler does.
- Decode is memory-bandwidth bound: one step reads the replica's weights once plus the KV
  cache of every running sequence, at 70 % of the GPU's HBM bandwidth, plus 2 ms overhead.
- Prefill is compute bound: 2 FLOPs per parameter per token at 40 % of the GPU's dense
  16-bit peak (twice that for 8-bit and 4-bit precisions).
- A new replica serves ``cold_start`` seconds after it is requested (image cached, engine
  loaded from the cache: 90 s by default, in the 1–2 minute range typical of 7–70B pods).
- Metrics (KV fraction, waiting requests) are sampled every ``period`` seconds, as Triton's
  ``/metrics`` is scraped; a metrics outage blanks them.

Every policy sees the same metrics the operator would and returns desired replicas; ``kiln``
calls :func:`kiln.autoscale.decide`, the operator's own law.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..api import LLMServiceSpec, Precision
from ..autoscale import Sample
from ..planner import GPU, Plan
from ..planner.memory import WEIGHT_BYTES
from .traces import Request

__all__ = ["PerfModel", "Fleet", "SimResult", "simulate", "FleetView"]

# Dense 16-bit tensor throughput (FLOP/s) by GPU architecture.
_PEAK_FLOPS = {"sm80": 312e12, "sm89": 362e12, "sm90": 989e12, "sm100": 2250e12, "sm120": 419e12}


@dataclass(frozen=True)
class PerfModel:
    kv_tokens: int
    max_batch: int
    weight_bytes: float          # per GPU
    kv_bytes_per_token: float    # per GPU
    bandwidth: float             # bytes/s per GPU
    prefill_tokens_per_s: float  # per replica

    @classmethod
    def from_plan(cls, plan: Plan, spec: LLMServiceSpec, gpu: GPU) -> PerfModel:
        weight = float(plan.weight_bytes_per_gpu or 0)
        bytes_per_param = WEIGHT_BYTES[Precision(spec.precision)]
        speedup = 1.0 if bytes_per_param >= 2 else 2.0  # 8- and 4-bit tensor cores
        flops = _PEAK_FLOPS.get(gpu.arch, 300e12) * 0.4 * speedup
        return cls(kv_tokens=int(plan.kv_cache_tokens or 0), max_batch=spec.engine.max_batch_size,
                   weight_bytes=weight, kv_bytes_per_token=float(plan.kv_bytes_per_token_per_gpu or 0),
                   bandwidth=gpu.bandwidth_tbs * 1e12,
                   prefill_tokens_per_s=flops / (2 * weight / bytes_per_param))

    def step_seconds(self, kv_tokens_in_use: int) -> float:
        return (self.weight_bytes + kv_tokens_in_use * self.kv_bytes_per_token) / (self.bandwidth * 0.7) + 0.002


@dataclass
class _Running:
    request: Request
    generated: float = 0.0
    prefill_left: float = 0.0


@dataclass
class _Replica:
    ready_at: float
    running: list[_Running] = field(default_factory=list)
    draining: bool = False

    def reserved(self) -> int:
        return sum(r.request.input_tokens + r.request.output_tokens for r in self.running)


@dataclass(frozen=True)
class FleetView:
    """What a policy sees at a decision: the scraped samples and the replica counts."""

    now: float
    samples: list[Sample]
    current: int
    ready: int
    starting: int


Policy = Callable[[FleetView], int]


@dataclass
class SimResult:
    gpu_hours: float
    slo_attainment: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p99_ms: float
    scale_events: int
    max_replicas: int
    timeline: list[tuple[float, int, int, float]]  # (time, replicas, arrivals/min, mean TTFT s)

    def wire(self) -> dict[str, float | int]:
        return {"gpuHours": round(self.gpu_hours, 3), "sloAttainment": round(self.slo_attainment, 4),
                "ttftP50Ms": round(self.ttft_p50_ms, 1), "ttftP99Ms": round(self.ttft_p99_ms, 1),
                "tpotP99Ms": round(self.tpot_p99_ms, 1), "scaleEvents": self.scale_events,
                "maxReplicas": self.max_replicas}


@dataclass
class Fleet:
    perf: PerfModel
    gpus_per_replica: int
    initial: int = 1
    cold_start: float = 90.0
    period: float = 15.0
    dt: float = 1.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.ceil(q * len(ordered))) - 1)]


def simulate(requests: Sequence[Request], fleet: Fleet, policy: Policy, slo_ttft_s: float,
             outage: tuple[float, float] | None = None,
             progress: Callable[[float], None] | None = None) -> SimResult:
    perf = fleet.perf
    replicas = [_Replica(ready_at=0.0) for _ in range(fleet.initial)]
    queue: deque[Request] = deque()
    pending = deque(requests)
    end = (requests[-1].arrival if requests else 0.0) + 600.0
    ttfts: list[float] = []
    tpots: list[float] = []
    gpu_seconds = 0.0
    events = 0
    peak = len(replicas)
    next_decision = fleet.period
    timeline: list[tuple[float, int, int, float]] = []
    window_arrivals = 0
    window_ttft: list[float] = []
    now = 0.0
    while now < end or queue or any(r.running for r in replicas):
        while pending and pending[0].arrival <= now:
            queue.append(pending.popleft())
            window_arrivals += 1
        serving = [r for r in replicas if r.ready_at <= now and not r.draining]
        # Admission: least-loaded ready replica first, whole sequence reserved.
        while queue and serving:
            target = min(serving, key=lambda r: r.reserved())
            request = queue[0]
            need = request.input_tokens + request.output_tokens
            if len(target.running) >= perf.max_batch or target.reserved() + need > perf.kv_tokens:
                if need > perf.kv_tokens:
                    queue.popleft()  # can never fit: dropped, counted as an SLO miss
                    ttfts.append(float("inf"))
                    continue
                break
            queue.popleft()
            target.running.append(_Running(request, prefill_left=request.input_tokens / perf.prefill_tokens_per_s))
        for replica in replicas:
            if not replica.running:
                continue
            step = perf.step_seconds(replica.reserved())
            still = []
            for item in replica.running:
                if item.prefill_left > 0:
                    item.prefill_left -= fleet.dt
                    if item.prefill_left <= 0:
                        ttft = now + fleet.dt + item.prefill_left - item.request.arrival
                        ttfts.append(ttft)
                        window_ttft.append(ttft)
                        tpots.append(step)
                    still.append(item)
                    continue
                item.generated += fleet.dt / step
                if item.generated < item.request.output_tokens:
                    still.append(item)
            replica.running = still
        replicas = [r for r in replicas if not (r.draining and not r.running)]
        gpu_seconds += len(replicas) * fleet.gpus_per_replica * fleet.dt
        if now >= next_decision:
            next_decision += fleet.period
            blank = outage is not None and outage[0] <= now < outage[0] + outage[1]
            live = [r for r in replicas if not r.draining]
            ready = [r for r in live if r.ready_at <= now]
            samples = [] if blank else [
                Sample(now, f"r{i}", r.reserved() / perf.kv_tokens,
                       waiting=len(queue) // max(1, len(ready)), active=len(r.running))
                for i, r in enumerate(ready)]
            view = FleetView(now, samples, len(live), len(ready), len(live) - len(ready))
            desired = max(0, policy(view))
            if desired > len(live):
                replicas += [_Replica(ready_at=now + fleet.cold_start) for _ in range(desired - len(live))]
                events += 1
            elif desired < len(live):
                # Remove the replicas still starting first, then the least loaded.
                for replica in sorted(live, key=lambda r: (r.ready_at <= now, r.reserved()))[:len(live) - desired]:
                    replica.draining = True
                events += 1
            peak = max(peak, len([r for r in replicas if not r.draining]))
            if int(now) % 60 < fleet.period:
                mean_ttft = sum(window_ttft) / len(window_ttft) if window_ttft else 0.0
                timeline.append((now, len([r for r in replicas if not r.draining]), window_arrivals,
                                 mean_ttft))
                window_arrivals, window_ttft = 0, []
            if progress is not None:
                progress(min(1.0, now / end))
        now += fleet.dt
        if now > end + 7200:  # a policy that never serves the backlog
            ttfts += [float("inf")] * (len(queue) + len(pending))
            break
    finite = [t for t in ttfts if math.isfinite(t)]
    met = sum(1 for t in ttfts if t <= slo_ttft_s)
    return SimResult(gpu_hours=gpu_seconds / 3600, slo_attainment=met / max(1, len(ttfts)),
                     ttft_p50_ms=_percentile(finite, 0.5) * 1000, ttft_p99_ms=_percentile(finite, 0.99) * 1000,
                     tpot_p99_ms=_percentile(tpots, 0.99) * 1000, scale_events=events, max_replicas=peak,
                     timeline=timeline)
