"""Autoscaling policies for the simulator. Each is ``FleetView -> desired replicas``.

- ``kiln``: the operator's control law (:func:`kiln.autoscale.decide`).
- ``hpa``: the Kubernetes HPA (:class:`kiln.autoscale.hpa.HPA`: tolerance 0.1, 15 s sync,
  300 s scale-down stabilisation) on the Triton autoscaling guide's ``queue:compute`` ratio,
  ``rate(nv_inference_queue_duration_us[1m]) / rate(nv_inference_compute_infer_duration_us[1m])``,
  with the guide's ``AverageValue`` target of 1. By Little's law those two rates are the mean
  number of requests queued and computing, so the simulator uses waiting / running requests
  averaged over the last minute.
- ``hpa-tuned``: the same, with the target swept (:data:`HPA_TUNED_TARGETS`) to the cheapest
  one that meets the SLO goal.
- ``kpa``: Knative's pod autoscaler on concurrency (running + waiting requests per replica),
  with a target of 70 % of ``maxBatchSize`` (Knative's default target utilisation of the
  container concurrency), a 60 s stable window and a panic window of one scrape: when the
  panic window wants at least twice the ready replicas, it scales on that window and does
  not scale down until a stable window passes without panic. It evaluates at the same scrape
  cadence as the others (Knative's own tick is 2 s).
- ``keda-http``: KEDA with its HTTP add-on (``autoscaling.mode: keda-http``), scaling on the
  requests in flight at the interceptor (queued or running) with the rendered concurrency
  target per replica: from zero, the first pending request activates one replica (KEDA's
  activation); above zero, the HPA algorithm on the average per replica, with the HPA's
  default 300 s scale-down window (the add-on's ScaledObject sets no behaviour); with nothing
  in flight for the scale-down period (``scaledownPeriod``), back to zero. Requests that arrive at zero wait a whole
  cold start; the results count them (``coldStarts``).
- ``static``: a fixed fleet at the oracle's peak.
- ``oracle``: perfect knowledge of the future. For every two minutes of the trace it finds,
  by replaying that window alone, the fewest warm replicas that meet the SLO goal on it; it
  then asks, at each moment, for the most any window needs until a replica asked for now
  would serve (so replicas are warm when their load arrives, cold start included). A margin
  of extra replicas is added only if the whole replay misses the goal at the window
  boundaries.
- ``static-min`` and ``clairvoyant``: the cheapest fixed fleet meeting the SLO goal, and a
  whole-trace schedule with perfect knowledge (:mod:`kiln.sim.stock`).
- ``present_policy`` (not one of :data:`POLICIES`; a reference for tests): the oracle's
  per-window needs as they happen, without foresight.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..autoscale import LawParams, Recommendations, Sample, decide
from ..autoscale.hpa import HPA
from .engine import Fleet, FleetView, PerfModel, simulate
from .traces import Request

__all__ = ["kiln_policy", "hpa_policy", "kpa_policy", "keda_http_policy", "static_policy", "oracle_policy", "present_policy",
           "oracle_schedule", "POLICIES", "HPA_TUNED_TARGETS"]

POLICIES = ("kiln", "hpa", "hpa-tuned", "kpa", "keda-http", "hpa-metrics", "keda-metrics", "static",
            "oracle", "static-min", "clairvoyant")
HPA_TUNED_TARGETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)

Policy = Callable[[FleetView], int]


def kiln_policy(params: LawParams, perf: PerfModel | None = None, model_error: float = 1.0) -> Policy:
    """The operator's law; with ``perf``, its demand from arrivals costs each request as the
    performance model does (:meth:`kiln.planner.perf.PerfModel.request_seconds`).
    ``model_error``: the law's performance model off by this factor against the engine
    simulated, as a mis-calibrated planner would be in the operator: each request costs
    ``model_error`` times the engine's, and each replica's prefill load (its input tokens/s
    over the model's prefill speed) reads ``model_error`` times what it is. Below 1, the model
    thinks the engine faster than it is. The measured KV, batch and backlog are as they are."""
    if perf is not None and params.request_seconds is None:
        cost = perf.request_seconds
        params = replace(params, request_seconds=lambda prompt, output: model_error * cost(round(prompt),
                                                                                          round(output)))
    recommendations = Recommendations()
    history: list[Sample] = []

    def policy(view: FleetView) -> int:
        nonlocal history
        if not recommendations.history:  # as the operator does: start from the current count
            recommendations.add(view.now, view.current, params.stabilization_seconds)
        samples = view.samples if model_error == 1.0 else [
            replace(s, prefill_load=None if s.prefill_load is None else model_error * s.prefill_load)
            for s in view.samples]
        history = [s for s in history if s.time >= view.now - params.history_seconds] + samples
        return decide(view.now, history, view.current, view.ready, view.starting, params,
                      recommendations).desired
    return policy


def hpa_policy(min_replicas: int, max_replicas: int, target: float = 1.0) -> Policy:
    hpa = HPA(min_replicas=min_replicas, max_replicas=max_replicas, target=target)
    minute: deque[tuple[float, float, float]] = deque()  # (time, waiting, running) per scrape

    def policy(view: FleetView) -> int:
        if not view.samples:  # the HPA skips a metric it cannot read
            return hpa.step(view.now, view.current, None)
        n = len(view.samples)
        minute.append((view.now, sum(s.waiting for s in view.samples) / n,
                       sum(s.active for s in view.samples) / n))
        while minute[0][0] < view.now - 60:
            minute.popleft()
        queued = sum(w for _, w, _ in minute)
        computing = sum(a for _, _, a in minute)
        return hpa.step(view.now, view.current, queued / max(computing, 1.0))
    return policy


def kpa_policy(min_replicas: int, max_replicas: int, target_concurrency: float,
               stable_window: float = 60.0, panic_threshold: float = 2.0) -> Policy:
    window: deque[tuple[float, float]] = deque()  # (time, total concurrency)
    panic_until = -math.inf

    def policy(view: FleetView) -> int:
        nonlocal panic_until
        if not view.samples:
            return view.current
        total = sum(s.active + s.waiting for s in view.samples)
        window.append((view.now, total))
        while window[0][0] <= view.now - stable_window:
            window.popleft()
        stable = math.ceil(sum(c for _, c in window) / len(window) / target_concurrency - 1e-9)
        panic = math.ceil(total / target_concurrency - 1e-9)
        if panic >= panic_threshold * max(1, view.ready):
            panic_until = view.now + stable_window
        if view.now < panic_until:
            desired = max(view.current, panic, stable)
        else:
            desired = stable
        return max(min_replicas, min(max_replicas, desired))
    return policy


def keda_http_policy(max_replicas: int, target_concurrency: float, cooldown_seconds: float) -> Policy:
    # ``cooldown_seconds`` is the HTTPScaledObject's scaledownPeriod, which the add-on makes its
    # ScaledObject's cooldownPeriod: the wait before scaling to zero, and only that (KEDA's
    # ScaledObject reference). The ScaledObject it makes sets no HPA behaviour
    # (kedacore/http-add-on operator/controllers/http/scaled_object.go, pkg/k8s/scaledobject.go),
    # so between one replica and more the HPA's default 300 s scale-down window applies.
    hpa = HPA(min_replicas=1, max_replicas=max_replicas, target=target_concurrency)
    last_busy: float | None = None

    def policy(view: FleetView) -> int:
        nonlocal last_busy
        if view.pending > 0 or last_busy is None:  # the cooldown counts from its first look
            last_busy = view.now
        if view.current == 0:
            return 1 if view.pending > 0 else 0  # activation
        if view.pending == 0 and view.now - last_busy >= cooldown_seconds:
            return 0  # inactive for the cooldown: to zero
        return hpa.step(view.now, view.current, view.pending / view.current)
    return policy


def static_policy(replicas: int) -> Policy:
    return lambda view: replicas


def oracle_schedule(requests: Sequence[Request], fleet: Fleet, slo_ttft_s: float, goal: float,
                    low: int, high: int, window: float = 120.0,
                    cache: dict[tuple[int, int], float] | None = None) -> list[int]:
    """For each ``window`` seconds of the trace, the fewest warm replicas that serve the
    requests arriving in it within the SLO goal (found by replaying that window alone).
    ``cache`` keeps each (window, replicas) replay's attainment across calls on one trace."""
    if not requests:
        return [low]
    cache = {} if cache is None else cache
    parts: dict[int, list[Request]] = {}
    for r in requests:
        w = int(r.arrival // window)
        parts.setdefault(w, []).append(Request(r.arrival - w * window, r.input_tokens, r.output_tokens))
    schedule = []
    for w in range(int(requests[-1].arrival // window) + 1):
        part = parts.get(w)
        if not part:
            schedule.append(low)
            continue

        def attainment(n: int) -> float:
            if (w, n) not in cache:
                cache[(w, n)] = simulate(part, replace(fleet, initial=n), static_policy(n),
                                         slo_ttft_s).slo_attainment
            return cache[(w, n)]
        lo, hi = low, high
        while lo < hi:  # binary search on a static fleet of n
            n = (lo + hi) // 2
            if attainment(n) >= goal:
                hi = n
            else:
                lo = n + 1
        schedule.append(lo)
    return schedule


def present_policy(schedule: Sequence[int], hold: float, margin: int, low: int, high: int,
                   window: float = 120.0) -> Policy:
    """The oracle without foresight, a reference for reacting to a perfectly known present:
    at each moment it knows exactly what the current ``window`` needs (the oracle's
    schedule), but nothing of the future, so it keeps the most any window needed in the
    last ``hold`` seconds, plus ``margin`` replicas. Before the trace opens (a lead-in replaying the
    trace's opening mirrored, :func:`kiln.sim.traces.lead_in`) it reads the schedule mirrored."""
    def need(t: float) -> int:
        at = int(abs(t) // window)
        return schedule[max(0, min(len(schedule) - 1, at))]

    def policy(view: FleetView) -> int:
        times = [view.now - hold + k * window for k in range(int(hold // window) + 1)] + [view.now]
        return max(low, min(high, max(need(t) for t in times) + margin))
    return policy


def oracle_policy(schedule: Sequence[int], margin: int, fleet: Fleet, low: int, high: int,
                  window: float = 120.0) -> Policy:
    """Replicas for every window from now until a replica asked for now would serve."""
    def policy(view: FleetView) -> int:
        first = max(0, int(view.now // window))
        last = int((view.now + fleet.cold_start + fleet.period) // window) + 1
        want = max(schedule[first:last], default=low) + margin
        return max(low, min(high, want))
    return policy
