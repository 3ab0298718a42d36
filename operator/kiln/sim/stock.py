"""What a platform team would deploy today, as simulator policies: the Kubernetes HPA and
KEDA on several per-pod metrics at once, and the references that bound what any policy can
do on a trace (``static-min``, ``clairvoyant``).

- ``hpa_metrics_policy``: the HPA algorithm (:class:`kiln.autoscale.hpa.HPA`: tolerance 0.1,
  15 s sync, +100 %/+4 pods per sync, the scale-down stabilisation window) on ``Pods``
  metrics, ``AverageValue`` targets. With several metrics the HPA computes a proposal per
  metric and takes the largest (``horizontal.go``, ``computeReplicasForMetrics``). Pods not
  ready report nothing, so starting pods count 0 in the average.
- ``keda_metrics_policy``: a KEDA ``ScaledObject`` with one prometheus trigger per metric, each
  the fleet's sum: KEDA hands them to the HPA as ``External`` ``AverageValue`` metrics, so each
  proposal is ``ceil(sum / target)`` (tolerance 0.1 on the ratio to the current count),
  polled every 30 s (``pollingInterval`` default).

The metrics are the per-pod series Kiln scrapes: KV block fraction, active requests,
prefill load (input tokens/s over the replica's prefill speed) and the backlog.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from ..autoscale import Sample
from ..autoscale.hpa import HPA
from .engine import Fleet, FleetView, SimResult, simulate
from .policies import oracle_policy, oracle_schedule, static_policy
from .traces import Request

__all__ = ["METRICS", "hpa_metrics_policy", "keda_metrics_policy", "static_min", "clairvoyant"]

Policy = Callable[[FleetView], int]

METRICS: dict[str, Callable[[Sample], float]] = {
    "kv": lambda s: s.kv_fraction,
    "active": lambda s: float(s.active),
    "prefill": lambda s: s.prefill_load or 0.0,
    "waiting": lambda s: float(s.waiting),
}


def _proposal(current: int, ratio: float, tolerance: float = 0.1) -> int:
    return current if abs(ratio - 1.0) <= tolerance else math.ceil(current * ratio - 1e-9)


def hpa_metrics_policy(targets: Mapping[str, float], low: int, high: int,
                       stabilization: float = 300.0) -> Policy:
    """``targets``: per-pod ``AverageValue`` per metric name in :data:`METRICS`."""
    hpa = HPA(min_replicas=low, max_replicas=high, target=1.0, stabilization_seconds=stabilization)

    def policy(view: FleetView) -> int:
        if not view.samples:
            return view.current
        n = len(view.samples)
        proposals = [_proposal(view.current, sum(METRICS[m](s) for s in view.samples) / n / t * n
                               / max(view.current, 1))
                     for m, t in targets.items()]
        return _step(hpa, view, max(proposals))
    return policy


def keda_metrics_policy(targets: Mapping[str, float], low: int, high: int,
                        stabilization: float = 300.0, polling: float = 30.0) -> Policy:
    """``targets``: ``AverageValue`` per metric of the fleet's sum, one trigger each."""
    hpa = HPA(min_replicas=low, max_replicas=high, target=1.0, stabilization_seconds=stabilization)
    last = {"at": -math.inf, "value": 0}

    def policy(view: FleetView) -> int:
        if not view.samples:
            return view.current
        if view.now - last["at"] >= polling:
            last["at"] = view.now
            proposals = [_proposal(view.current, sum(METRICS[m](s) for s in view.samples) / t
                                   / max(view.current, 1)) for m, t in targets.items()]
            last["value"] = max(proposals)
        return _step(hpa, view, int(last["value"]))
    return policy


def _step(hpa: HPA, view: FleetView, raw: int) -> int:
    """The HPA's stabilisation, rate limit and bounds on a raw proposal."""
    hpa.history = [(t, r) for t, r in hpa.history if t > view.now - hpa.stabilization_seconds]
    hpa.history.append((view.now, raw))
    desired = raw if raw >= view.current else max(r for _, r in hpa.history)
    desired = min(desired, max(2 * view.current, view.current + 4))
    return max(hpa.min_replicas, min(hpa.max_replicas, desired))


def static_min(requests: Sequence[Request], fleet: Fleet, slo_ttft_s: float, goal: float,
               low: int, high: int) -> tuple[int, SimResult]:
    """The cheapest fixed fleet that meets ``goal`` (binary search; ``high`` if none does)."""
    runs: dict[int, SimResult] = {}

    def run(n: int) -> SimResult:
        if n not in runs:
            runs[n] = simulate(requests, replace(fleet, initial=n), static_policy(n), slo_ttft_s)
        return runs[n]
    lo, hi = low, high
    while lo < hi:
        n = (lo + hi) // 2
        if run(n).slo_attainment >= goal:
            hi = n
        else:
            lo = n + 1
    return lo, run(lo)


CLAIRVOYANT_WINDOW_GOALS = (0.995, 0.99)


def clairvoyant(requests: Sequence[Request], fleet: Fleet, slo_ttft_s: float, goal: float,
                low: int, high: int, window: float = 60.0,
                cache: dict[tuple[int, int], float] | None = None) -> tuple[float, SimResult]:
    """A whole-trace schedule with perfect knowledge of arrivals and cold starts: for each
    ``window`` the fewest warm replicas that serve it at a per-window goal, asked for one
    cold start ahead; the per-window goal is relaxed (:data:`CLAIRVOYANT_WINDOW_GOALS`) as
    far as the whole trace still meets ``goal``, so the SLO budget is spent where it saves
    most; a fixed fleet (``static-min``) is one of the schedules it considers (reported with
    a window goal of 0). ``cache`` keeps the per-window replays (they do not depend on the cold start).
    Returns the cheapest (per-window goal, result).

    What it bounds: it is the cheapest schedule of this form found, with foresight no real
    policy has, and serves as the reference for "how close to ideal"; it is not proven
    optimal (a schedule that lets a window miss more to save a replica elsewhere could be
    cheaper), so a policy may come in under it."""
    best: tuple[float, SimResult] | None = None
    cache = {} if cache is None else cache
    for window_goal in CLAIRVOYANT_WINDOW_GOALS:
        schedule = oracle_schedule(requests, fleet, slo_ttft_s, window_goal, low, high, window, cache)
        policy = oracle_policy(schedule, 0, fleet, low, high, window)
        warm = policy(FleetView(-fleet.cold_start, [], low, low, 0))
        result = simulate(requests, replace(fleet, initial=warm), policy, slo_ttft_s)
        if result.slo_attainment >= goal and (best is None or result.gpu_hours < best[1].gpu_hours):
            best = (window_goal, result)
    # A fixed fleet is a schedule too: on load that moves in sub-window clumps, windows
    # replayed from an empty fleet ask for more than a constant fleet that carries the
    # clumps' backlog needs.
    _, constant = static_min(requests, fleet, slo_ttft_s, goal, low, high)
    if constant.slo_attainment >= goal and (best is None or constant.gpu_hours < best[1].gpu_hours):
        best = (0.0, constant)
    if best is None:  # no relaxation met the goal: the strictest schedule
        schedule = oracle_schedule(requests, fleet, slo_ttft_s, 1.0, low, high, window, cache)
        policy = oracle_policy(schedule, 1, fleet, low, high, window)
        warm = policy(FleetView(-fleet.cold_start, [], low, low, 0))
        best = (1.0, simulate(requests, replace(fleet, initial=warm), policy, slo_ttft_s))
    return best
