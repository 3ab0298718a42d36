"""Replay requests against a fleet of simulated replicas under an autoscaling policy.

**Replica model.** Capacity comes from the planner: ``kvCacheTokens`` per replica and the
engine's ``maxBatchSize``, ``maxNumTokens``, ``maxInputLen`` and ``maxSeqLen``. A request over
the engine's limits is refused at once, as the executor refuses it, and counted apart
(``rejected``), not in the SLO. The serving entrance sends each request to a ready pod at once:
the least loaded behind the Gateway's endpoint picker, one at random behind a plain Service
(:attr:`Fleet.routing`); there it waits in the engine's queue until a batch slot and its whole
sequence's KV are free (Triton's default ``guaranteed_no_evict`` scheduler). Each engine
iteration advances every generating sequence by one token and fills the rest of
``maxNumTokens`` with context chunks, first prompt first (in-flight batching with chunked
context); iteration times come from :class:`kiln.planner.perf.PerfModel` (weights and KV read,
linear and attention FLOPs), calibrated there against published TensorRT-LLM figures. Time
advances in steps of ``dt``, each a whole number of iterations in the fluid limit.

**Fleet.** A new replica serves ``cold_start`` seconds after it is requested (image cached,
engine loaded from the cache: 90 s by default, in the 1–2 minute range typical of 7–70B pods).
Metrics are scraped every ``period`` seconds with the meaning the TensorRT-LLM backend gives
them (:func:`_scrape`); a metrics outage blanks them. Scaled-down replicas stop taking new
requests and finish what they hold, as the rendered preStop and grace period make them do.

Every policy sees the same metrics the operator would and returns desired replicas; ``kiln``
calls :func:`kiln.autoscale.decide`, the operator's own law.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..autoscale import KVSample, Sample
from ..autoscale.metrics import FIRST_RESPONSE_BUCKETS_MS
from ..planner.perf import PerfModel
from .traces import Request

__all__ = ["PerfModel", "Fleet", "SimResult", "simulate", "FleetView", "routing_for", "ROUTINGS"]


# The first-response histogram's bucket bounds, in seconds (Triton's defaults).
_BOUNDS = tuple(ms / 1000.0 for ms in FIRST_RESPONSE_BUCKETS_MS)


@dataclass
class _Running:
    request: Request
    prefill_left: float           # input tokens still to prefill
    generated: float = 0.0
    first_token_at: float = 0.0


@dataclass
class _Replica:
    """One replica: the executor's queue (requests routed to it, not yet holding KV) and
    its batch (requests holding their whole sequence's KV, as guaranteed_no_evict reserves)."""

    ident: int
    ready_at: float
    running: list[_Running] = field(default_factory=list)
    queue: deque[Request] = field(default_factory=deque)
    draining: bool = False
    reserved: int = 0  # KV tokens reserved by the running requests, to their last token
    scraped_input: int = 0  # ``finished_input`` at the last scrape
    scheduled: int = 0      # requests the last iteration ran
    # Requests finished and their prompt and generated tokens (counters, as the backend's
    # token-length histograms count them: once per request, when it finishes).
    finished: int = 0
    finished_input: int = 0
    finished_output: int = 0
    # First responses per bucket of Triton's first-response histogram (the last: +Inf).
    first_responses: list[int] = field(default_factory=lambda: [0] * (len(_BOUNDS) + 1))

    @property
    def held(self) -> int:
        return len(self.running) + len(self.queue)

    @property
    def allocated(self) -> float:
        """KV tokens the running requests hold now: each its whole prompt from admission and
        its output so far (``KVCacheManager::addSequence`` allocates the prompt's blocks,
        ``updateToken`` one more each time generation crosses a block)."""
        return sum(i.request.input_tokens + i.generated for i in self.running)

    def admit(self, perf: PerfModel) -> None:
        """Schedule queued requests in order while a batch slot and their KV are free."""
        while self.queue and len(self.running) < perf.max_batch:
            request = self.queue[0]
            need = request.input_tokens + request.output_tokens
            if self.reserved + need > perf.kv_tokens:
                break
            self.queue.popleft()
            self.running.append(_Running(request, prefill_left=float(request.input_tokens)))
            self.reserved += need

    def advance(self, now: float, dt: float, perf: PerfModel, ttfts: list[float],
                tpots: list[float]) -> None:
        """Spend ``dt`` seconds of engine iterations. Each iteration advances every generating
        sequence by a token and gives the rest of ``maxNumTokens`` to context chunks, first
        prompt first (chunked context); its time is the weights and KV read plus the chunks'
        compute (:class:`PerfModel`)."""
        generating = [i for i in self.running if i.prefill_left <= 0]
        contexts = [i for i in self.running if i.prefill_left > 0]
        kv = sum(i.request.input_tokens + i.generated for i in generating)
        budget = max(1.0, perf.max_num_tokens - len(generating))
        step = perf.step_seconds(kv, len(generating) + min(len(contexts), 1))
        remaining, iterations = dt, 0.0
        chunk, self.scheduled = budget, len(generating)
        for item in contexts:
            if chunk > 0:  # the prompts the first iteration's budget reaches
                self.scheduled += 1
                chunk -= item.prefill_left
            if remaining <= 0:
                continue
            done = item.request.input_tokens - item.prefill_left
            cost = item.prefill_left / budget * step + perf.context_seconds(done, item.request.input_tokens)
            if cost <= remaining:
                remaining -= cost
                iterations += item.prefill_left / budget
                item.prefill_left = 0.0
                item.first_token_at = now + dt - remaining
                item.generated = 1.0
                ttfts.append(item.first_token_at - item.request.arrival)
                self.first_responses[bisect.bisect_left(_BOUNDS, ttfts[-1])] += 1
            else:
                tokens = item.prefill_left * remaining / cost
                iterations += tokens / budget
                item.prefill_left -= tokens
                remaining = 0.0
        if generating:
            iterations += remaining / perf.step_seconds(kv, len(generating))
            for item in generating:
                item.generated += iterations
        still = []
        for item in self.running:
            out = item.request.output_tokens
            if item.prefill_left <= 0 and item.generated >= out:
                if out > 1:
                    done = now + dt - max(0.0, item.generated - out) * (dt / max(iterations, 1e-9))
                    tpots.append(max(0.0, done - item.first_token_at) / (out - 1))
                self.reserved -= item.request.input_tokens + out
                self.finished += 1
                self.finished_input += item.request.input_tokens
                self.finished_output += out
            else:
                still.append(item)
        self.running = still


@dataclass(frozen=True)
class FleetView:
    """What a policy sees at a decision: the scraped samples and the replica counts."""

    now: float
    samples: list[Sample]
    current: int
    ready: int
    starting: int
    # Requests in flight at the serving entrance (queued or running), as KEDA's HTTP add-on
    # interceptor counts them: known with no replica at all, unlike the pods' metrics.
    pending: int = 0


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
    # Requests that arrived with no replica ready: each waits for one to start (held by the
    # interceptor in keda-http mode, which marks them X-KEDA-HTTP-Cold-Start: true).
    cold_starts: int = 0
    rejected: int = 0  # requests over the engine's limits, refused at once (not in the SLO)
    # The p99 TTFT of each timeline minute, in seconds (the SLO is on the p99).
    ttft_p99_timeline: list[float] = field(default_factory=list)

    def wire(self) -> dict[str, float | int]:
        return {"gpuHours": round(self.gpu_hours, 3), "sloAttainment": round(self.slo_attainment, 4),
                "ttftP50Ms": round(self.ttft_p50_ms, 1), "ttftP99Ms": round(self.ttft_p99_ms, 1),
                "tpotP99Ms": round(self.tpot_p99_ms, 1), "scaleEvents": self.scale_events,
                "maxReplicas": self.max_replicas, "coldStarts": self.cold_starts,
                "rejected": self.rejected}


# How the serving entrance picks a replica for a request (:attr:`Fleet.routing`).
ROUTINGS = ("least-loaded", "random")


@dataclass
class Fleet:
    perf: PerfModel
    gpus_per_replica: int
    initial: int = 1
    cold_start: float = 90.0
    period: float = 15.0
    dt: float = 0.25
    # "least-loaded": the Gateway's endpoint picker (``spec.gateway``), which scores each
    # pod's queue and KV cache, taken as the replica holding the fewest requests, then the
    # least KV. "random": a plain Service, as kube-proxy balances it: each new connection to
    # one of the ready endpoints with equal probability, whatever they hold (iptables mode,
    # kubernetes ``pkg/proxy/iptables/proxier.go``, ``writeServiceToEndpointRules``), taken
    # per request (clients that open a connection per request, or many of them: one client
    # holding a connection, as gRPC does, stays on one pod, which is worse).
    routing: str = "least-loaded"
    seed: int = 0  # of the random routing's draws


def routing_for(gateway: object | None) -> str:
    """The routing a service gets: by load behind its Gateway (``spec.gateway``, the
    endpoint picker), at random behind its plain Service."""
    return "least-loaded" if gateway is not None else "random"


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.ceil(q * len(ordered))) - 1)]


def simulate(requests: Sequence[Request], fleet: Fleet, policy: Policy, slo_ttft_s: float,
             outage: tuple[float, float] | None = None,
             progress: Callable[[float], None] | None = None,
             warmup: Sequence[Request] = ()) -> SimResult:
    """Replay ``requests`` (arrivals from 0). ``warmup`` requests (negative arrivals) run
    first so that the fleet and the policy's state are those of a service that was already
    serving; their time, GPU-seconds and latencies are not counted."""
    perf = fleet.perf
    if fleet.routing not in ROUTINGS:
        raise ValueError(f"routing {fleet.routing!r}: one of {', '.join(ROUTINGS)}")
    draw = random.Random(fleet.seed)
    ids = iter(range(1 << 30))
    start = 60.0 * math.floor(min((r.arrival for r in warmup), default=0.0) / 60.0)  # whole minutes
    replicas = [_Replica(next(ids), ready_at=start) for _ in range(fleet.initial)]
    front: deque[Request] = deque()  # arrived while no replica was ready
    pending = deque([*warmup, *requests])
    end = (requests[-1].arrival if requests else 0.0) + 60.0
    ttfts: list[float] = []
    tpots: list[float] = []
    rejected = 0
    gpu_seconds = 0.0
    events = 0
    cold_starts = 0
    peak = len(replicas)
    next_decision = start + fleet.period
    timeline: list[tuple[float, int, int, float]] = []
    p99_timeline: list[float] = []
    window_arrivals = 0
    window_ttft: list[float] = []
    now, measuring = start, start >= 0
    while now < end or front or any(r.held for r in replicas):
        if not measuring and now >= 0:  # the warm-up is over: measure from here
            measuring = True
            ttfts, tpots, gpu_seconds, events, timeline, window_ttft = [], [], 0.0, 0, [], []
            window_arrivals, peak = 0, len([r for r in replicas if not r.draining])
            cold_starts, rejected = 0, 0
            p99_timeline = []
        while pending and pending[0].arrival <= now:
            request = pending.popleft()
            window_arrivals += 1
            if not any(r.ready_at <= now and not r.draining for r in replicas):
                cold_starts += 1
            if perf.rejects(request.input_tokens, request.output_tokens):
                rejected += 1  # the engine refuses it at once: no TTFT, counted apart
            else:
                front.append(request)
        serving = [r for r in replicas if r.ready_at <= now and not r.draining]
        # The entrance routes each request to a ready pod at once (:attr:`Fleet.routing`),
        # where it waits in that engine's queue.
        while front and serving:
            chosen = (draw.choice(serving) if fleet.routing == "random"
                      else min(serving, key=lambda r: (r.held, r.reserved)))
            chosen.queue.append(front.popleft())
        for replica in replicas:
            if replica.queue:
                replica.admit(perf)
            if replica.running:
                before = len(ttfts)
                replica.advance(now, fleet.dt, perf, ttfts, tpots)
                window_ttft.extend(ttfts[before:])
            else:
                replica.scheduled = 0
        replicas = [r for r in replicas if not (r.draining and not r.held)]
        gpu_seconds += len(replicas) * fleet.gpus_per_replica * fleet.dt
        if now >= next_decision:
            next_decision += fleet.period
            blank = outage is not None and outage[0] <= now < outage[0] + outage[1]
            live = [r for r in replicas if not r.draining]
            ready = [r for r in live if r.ready_at <= now]
            samples = [] if blank else [_scrape(r, now, perf, fleet.period) for r in ready]
            for replica in replicas:
                replica.scraped_input = replica.finished_input
            view = FleetView(now, samples, len(live), len(ready), len(live) - len(ready),
                             pending=len(front) + sum(r.held for r in replicas))
            desired = max(0, policy(view))
            if desired > len(live):
                replicas += [_Replica(next(ids), ready_at=now + fleet.cold_start)
                             for _ in range(desired - len(live))]
                events += 1
            elif desired < len(live):
                # Remove the replicas still starting first, then the least loaded.
                for replica in sorted(live, key=lambda r: (r.ready_at <= now, r.reserved))[:len(live) - desired]:
                    replica.draining = True
                events += 1
            peak = max(peak, len([r for r in replicas if not r.draining]))
            if now > 0 and int(now) % 60 < fleet.period:
                mean_ttft = sum(window_ttft) / len(window_ttft) if window_ttft else 0.0
                timeline.append((now, len([r for r in replicas if not r.draining]), window_arrivals,
                                 mean_ttft))
                p99_timeline.append(_percentile([t for t in window_ttft if math.isfinite(t)], 0.99))
                window_arrivals, window_ttft = 0, []
            if progress is not None:
                progress(min(1.0, (now - start) / (end - start)))
        now += fleet.dt
        if now > end + 7200:  # a policy that never serves the backlog
            ttfts += [float("inf")] * (len(front) + len(pending) + sum(r.held for r in replicas))
            break
    finite = [t for t in ttfts if math.isfinite(t)]
    met = sum(1 for t in ttfts if t <= slo_ttft_s)
    return SimResult(gpu_hours=gpu_seconds / 3600, slo_attainment=met / max(1, len(ttfts)),
                     ttft_p50_ms=_percentile(finite, 0.5) * 1000, ttft_p99_ms=_percentile(finite, 0.99) * 1000,
                     tpot_p99_ms=_percentile(tpots, 0.99) * 1000, scale_events=events, max_replicas=peak,
                     timeline=timeline, cold_starts=cold_starts, rejected=rejected,
                     ttft_p99_timeline=p99_timeline)


def _scrape(replica: _Replica, now: float, perf: PerfModel, period: float) -> Sample:
    """What the replica's ``/metrics`` page says, as the TensorRT-LLM backend computes it:
    ``used`` KV is what the running requests hold now (:attr:`_Replica.allocated`,
    ``KvCacheStats.usedNumBlocks``), not what guaranteed_no_evict reserves for their last
    tokens (which it admits on, and no series exports: a replica whose reservations are full
    reads less than full); ``active`` counts the requests taken into the batch (at most
    ``max``), ``waiting`` those of them the last iteration did not run (active - scheduled);
    requests still in the executor's queue beyond the batch slots appear in no series. The policies see the
    backlog Kiln derives from that (:attr:`kiln.autoscale.KVSample.backlog`). The prefill
    load is the prompt tokens of the requests finished since the last scrape, per second,
    over the replica's prefill speed, as the operator reads it (the rate of
    ``nv_llm_input_token_len_sum``, which the backend observes when a request finishes:
    :mod:`kiln.autoscale.metrics`); no series counts the prompt tokens prefilled so far."""
    active = min(replica.held, perf.max_batch)
    page = KVSample(max_blocks=perf.kv_tokens, used_blocks=round(replica.allocated), tokens_per_block=1,
                    waiting_requests=max(0, active - replica.scheduled), active_requests=active,
                    max_requests=perf.max_batch)
    return Sample(now, f"r{replica.ident}", page.utilization, waiting=page.backlog, active=active,
                  batch_fraction=active / perf.max_batch,
                  prefill_load=((replica.finished_input - replica.scraped_input)
                                / (period * perf.prefill_tokens_per_s)),
                  finished=replica.finished, input_tokens=replica.finished_input,
                  output_tokens=replica.finished_output,
                  first_responses=tuple(zip((*_BOUNDS, math.inf),
                                            map(float, itertools.accumulate(replica.first_responses)))))
