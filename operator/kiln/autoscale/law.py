"""Kiln's autoscaling control law: replicas from KV-cache pressure and the waiting queue. Pure.

An LLM replica runs out of KV-cache blocks (and then queues requests) long before its CPU
or request rate says anything. The law, evaluated every ``period`` (15 s in the operator):

1. **Signal.** Each replica's *pressure*: the largest of what can run out, each resource
   over its own target. Its KV block fraction (``nv_trt_llm_kv_cache_block_metrics
   {kv_cache_block_type="fraction"}``, used/max blocks) over ``targetKVCacheUtilization``
   (``target``, default 0.75); its batch slots (``nv_trt_llm_request_metrics`` ``active``
   over ``max``) over ``batch_target`` (0.75: a batch with free slots still starts new
   requests at once, and a full one is outside the tolerance band); and its prefill load,
   input tokens per second (the rate of ``nv_llm_input_token_len_sum``) over the prefill
   speed the performance model gives for the plan
   (:func:`kiln.planner.perf.prefill_tokens_per_second`), over ``prefill_target``
   (0.5: a replica that spends more than half its time on prompts makes new requests wait
   behind them, which is what the TTFT SLO measures). Long outputs fill the KV cache; many
   short ones fill the batch; long prompts with short answers (code completion) saturate
   compute first and barely touch either. The fleet's *demand*, in replicas, is the sum of
   the reporting replicas' pressures at each scrape of the last ``window_seconds`` (60 s),
   and the highest of those — so a burst between quiet scrapes counts and the sawtooth of
   sequences finishing does not — plus each replica's latest waiting-request count
   (``nv_trt_llm_request_metrics{request_type="waiting"}``). The per-resource targets and
   the tolerance were chosen on ``benchmarks/autoscaling.py`` (docs/benchmarks.md has the figures and
   how they move with the load).
2. **Missing or stale metrics never scale down.** If fewer than half the ready replicas
   reported within ``stale_seconds`` (45 s), the law holds the current count and says so.
3. **Proportional target.** ``want = ceil(demand)``: the replicas that hold the busiest
   scrape's load at target. On a fleet that did not change within the window this is the
   HPA's ``ceil(ready × utilisation / target)``; summing keeps the per-replica load measured
   on fewer replicas (before a scale-up became ready) from being applied to more. Within the
   ``tolerance`` band (|demand / ready − 1| ≤ 0.25, wider than the HPA's 0.1: LLM load
   moves in bursts of whole requests, and each target already holds headroom) and with no
   queue, ``want`` = current.
4. **Queue.** Requests waiting mean the fleet is already short: if the waiting count per
   replica exceeds ``queue_per_replica`` (2), ``want`` is at least
   ``ceil(ready × (1 + waiting / running))`` — a saturated replica holds what it runs, so that
   many hold the queue too. While replicas are starting, the queue asks for no more than the
   current count: it is the backlog they will drain, and the load term still scales up.
5. **Fast scale-up, counting capacity on the way.** Replicas still starting (pods created,
   engine loading) count as capacity: scale up only if ``want`` > ready + starting, and at most
   ``max(up_step_min, current)`` replicas per decision (double, at least 4 at a time).
6. **Slow, stabilised scale-down.** Each decision records its ``want``; a scale-down takes the
   highest ``want`` seen within the stabilisation window, and removes at most ``down_step``
   (1) replica per decision. The window is ``stabilization_seconds``
   (``scaleDownStabilizationSeconds``, default 300 s — the HPA's default) while the load is
   bursty, and ``smooth_stabilization`` (half) of it while the load is smooth: when, over the
   last ``burst_horizon`` (10 min), no decision's mean demand over its window was more than
   ``burst_ratio`` (1.5) times their average. The window rides out the lulls between bursts,
   whose load comes back within minutes; smooth load that falls does not, and holding its
   replicas for the full window only costs. Until ten minutes are on record the full window
   applies. (On ``benchmarks/autoscaling.py``'s traces this statistic stays between 1.1 and
   1.3 on Mooncake, mostly below 1.5 on Azure conv, and never below 1.7 on Azure code.)
7. **Bounds.** The result is clamped to [minReplicas, maxReplicas].

The operator, the simulator and the tests all call :func:`decide`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import AutoscalingSpec

__all__ = ["Sample", "LawParams", "Decision", "Recommendations", "decide"]


@dataclass(frozen=True)
class Sample:
    """One scrape of one replica."""

    time: float
    replica: str
    kv_fraction: float
    waiting: int = 0
    active: int = 0
    # Share of the replica's prefill capacity used since the previous scrape (None: unknown).
    prefill_load: float | None = None
    # Running requests over the engine's maximum batch (None: unknown).
    batch_fraction: float | None = None

    def pressure(self, params: LawParams) -> float:
        """The replica's load as a multiple of its target: each resource against its own."""
        return max(self.kv_fraction / params.target,
                   (self.prefill_load or 0.0) / params.prefill_target,
                   (self.batch_fraction or 0.0) / params.batch_target)


@dataclass(frozen=True)
class LawParams:
    min_replicas: int = 1
    max_replicas: int = 1
    target: float = 0.75
    stabilization_seconds: float = 300.0
    tolerance: float = 0.25
    window_seconds: float = 60.0
    stale_seconds: float = 45.0
    queue_per_replica: float = 2.0
    up_step_min: int = 4
    down_step: int = 1
    batch_target: float = 0.75
    prefill_target: float = 0.5
    smooth_stabilization: float = 0.5  # share of the stabilisation window on smooth load
    burst_ratio: float = 1.5
    burst_horizon: float = 600.0

    @classmethod
    def for_service(cls, scaling: AutoscalingSpec, **overrides: Any) -> LawParams:
        """The law's parameters for a service's ``spec.autoscaling``; ``overrides`` replace
        any of them (bounds in ``kiln simulate``, timing in the demo and the tests)."""
        values: dict[str, Any] = {
            "min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
            "target": scaling.target_kv_cache_utilization,
            "stabilization_seconds": float(scaling.scale_down_stabilization_seconds)}
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    held: bool = False  # True when the law refused to act on missing or stale metrics


@dataclass
class Recommendations:
    """The ``want`` of recent decisions, for the scale-down stabilisation window."""

    history: list[tuple[float, int]] = field(default_factory=list)
    # The fleet's mean demand over each decision's window, for telling bursty load from smooth.
    demand: list[tuple[float, float]] = field(default_factory=list)

    def add(self, now: float, want: int, horizon: float) -> None:
        self.history.append((now, want))
        self.history = [(t, w) for t, w in self.history if t >= now - horizon]

    def highest_since(self, since: float) -> int:
        return max((w for t, w in self.history if t >= since), default=0)

    def add_demand(self, now: float, demand: float, horizon: float) -> None:
        self.demand.append((now, demand))
        self.demand = [(t, d) for t, d in self.demand if t >= now - horizon]

    def smooth(self, horizon: float, burst_ratio: float) -> bool:
        """True when the last ``horizon`` seconds are on record and their busiest window's
        demand stayed within ``burst_ratio`` times their average."""
        if not self.demand or self.demand[-1][0] - self.demand[0][0] < 0.9 * horizon:
            return False
        average = sum(d for _, d in self.demand) / len(self.demand)
        return max(d for _, d in self.demand) <= burst_ratio * average


def _busiest(samples: Iterable[Sample], params: LawParams) -> tuple[str, float, float]:
    """The resource closest to its target over these samples: (name, mean load, target)."""
    samples = list(samples)
    totals = {"KV": (sum(s.kv_fraction for s in samples), params.target),
              "batch": (sum(s.batch_fraction or 0.0 for s in samples), params.batch_target),
              "prefill": (sum(s.prefill_load or 0.0 for s in samples), params.prefill_target)}
    name = max(totals, key=lambda k: totals[k][0] / totals[k][1])
    total, target = totals[name]
    return name, total / max(len(samples), 1), target


def _clamp(value: int, params: LawParams) -> int:
    return max(params.min_replicas, min(params.max_replicas, value))


def decide(now: float, samples: Sequence[Sample], current: int, ready: int, starting: int,
           params: LawParams, recommendations: Recommendations) -> Decision:
    """Desired replicas for a fleet whose workload is set to ``current`` replicas, of which
    ``ready`` serve and ``starting`` are on their way (``starting`` is reported in the reason)."""
    fresh = [s for s in samples if s.time >= now - params.window_seconds]
    latest: dict[str, Sample] = {}
    for sample in fresh:
        if sample.replica not in latest or sample.time > latest[sample.replica].time:
            latest[sample.replica] = sample
    reporting = [r for r, s in latest.items() if s.time >= now - params.stale_seconds]
    if current < params.min_replicas or current > params.max_replicas:
        bounded = _clamp(current, params)
        return Decision(bounded, f"bringing {current} replicas within [{params.min_replicas}, "
                                 f"{params.max_replicas}]")
    if ready == 0:
        return Decision(current, "no ready replica to measure yet: holding", held=True)
    if len(reporting) * 2 < ready:
        return Decision(current, f"metrics from {len(reporting)} of {ready} ready replicas: "
                                 f"holding {current} until they report", held=True)

    # The fleet's demand at each scrape in the window: the sum of the pressures (load over
    # target, per resource) of the replicas it scraped, in replicas. The busiest scrape
    # counts, so a burst between quiet scrapes is not averaged away; a sum, not ready x mean,
    # so that scrapes of a smaller fleet earlier in the window are not applied to a larger
    # one, and a replica removed since still counts for the load it carried then.
    totals: dict[float, float] = {}
    for sample in fresh:
        totals[sample.time] = totals.get(sample.time, 0.0) + sample.pressure(params)
    demand = max(totals.values())  # in replicas at target
    ratio = demand / ready
    kind, load, target = _busiest([latest[r] for r in reporting], params)
    waiting = sum(latest[r].waiting for r in reporting)

    want = math.ceil(demand - 1e-9)
    queued = waiting > params.queue_per_replica * ready
    if abs(ratio - 1) <= params.tolerance and not queued:
        want = current
        why = f"{kind} load {load:.0%} is within {params.tolerance:.0%} of its {target:.0%} target"
    else:
        why = f"{kind} load {load:.0%} against a {target:.0%} target"
    if queued:
        # Saturated: the running requests are what a ready replica holds, so the fleet that
        # holds running + waiting is ready x (1 + waiting / running). A queue that grows while
        # replicas are starting is the backlog they will drain, not more demand: while
        # replicas start, the queue can only ask for what is already coming.
        active = sum(latest[r].active for r in reporting)
        by_queue = math.ceil(ready * (1 + waiting / max(active, 1)) - 1e-9)
        by_queue = by_queue if not starting else min(by_queue, current)
        if by_queue > want:
            # The queue is what asks for more: it leads the reason, the load comes second.
            why = f"{waiting} requests waiting ({kind} load {load:.0%} against a {target:.0%} target)"
        else:
            why += f", {waiting} requests waiting"
        want = max(want, by_queue)
    want = _clamp(max(want, 0), params)
    recommendations.add(now, want, params.stabilization_seconds)
    recommendations.add_demand(now, sum(totals.values()) / len(totals), params.burst_horizon)
    stabilization, load_kind = params.stabilization_seconds, ""
    if recommendations.smooth(params.burst_horizon, params.burst_ratio):
        stabilization, load_kind = stabilization * params.smooth_stabilization, " (smooth load)"

    if want > current:
        # ``want`` is measured on the ready replicas only, so replicas still starting (part of
        # ``current``) already count as capacity on the way.
        step = max(params.up_step_min, current)
        desired = _clamp(min(want, current + step), params)
        on_the_way = f" ({starting} still starting)" if starting else ""
        return Decision(desired, f"{why}: scaling up {current} -> {desired}{on_the_way}")
    if want < current:
        stable = max(want, recommendations.highest_since(now - stabilization))
        if stable >= current:
            return Decision(current, f"{why}: waiting out the {stabilization:.0f}s "
                                     f"scale-down stabilization{load_kind}")
        desired = _clamp(max(stable, current - params.down_step), params)
        return Decision(desired, f"{why}: scaling down {current} -> {desired}")
    return Decision(current, f"{why}: holding {current}")
