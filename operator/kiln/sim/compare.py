"""Run several autoscaling policies on one trace: what ``kiln simulate`` and
``benchmarks/autoscaling.py`` print."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from ..autoscale import LawParams
from .engine import Fleet, FleetView, SimResult, simulate
from .policies import (HPA_TUNED_TARGETS, POLICIES, hpa_policy, keda_http_policy, kiln_policy,
                       kpa_policy, oracle_policy, oracle_schedule, static_policy)
from .references import Schedule, clairvoyant, recorded, static_min
from .stock import STOCK_SWEEP, stock_policy
from .traces import Request, lead_in

__all__ = ["compare", "warm_fleet", "ORACLE_MARGINS", "LEAD_IN_SECONDS", "SLO_GOAL"]

# Seconds of the trace's opening replayed (mirrored) before it, so reactive policies start in a
# steady state: longer than the default scale-down stabilisation (300 s) plus a cold start.
LEAD_IN_SECONDS = 600.0
# The share of requests every policy and reference is held to, unless the caller says otherwise.
SLO_GOAL = 0.99
# Extra replicas the oracle tries over its per-window minimum, cheapest first.
ORACLE_MARGINS = (0, 1, 2, 3)

Progress = Callable[[str, float], None]


def _cheapest(runs: Sequence[tuple[object, SimResult]], goal: float) -> tuple[object, SimResult] | None:
    meeting = [(knob, r) for knob, r in runs if r.slo_attainment >= goal]
    return min(meeting, key=lambda kr: kr[1].gpu_hours) if meeting else None


def warm_fleet(schedule: Sequence[int], fleet: Fleet, params: LawParams) -> int:
    """The replicas the oracle has warm when the trace opens."""
    low, high = params.min_replicas, params.max_replicas
    return oracle_policy(schedule, 0, fleet, low, high)(FleetView(-fleet.cold_start, [], low, low, 0))


def compare(requests: Sequence[Request], fleet: Fleet, params: LawParams, slo_ttft_s: float,
            policies: Sequence[str] = POLICIES, slo_goal: float = SLO_GOAL,
            outage: tuple[float, float] | None = None,
            progress: Progress | None = None,
            schedule: Sequence[int] | None = None,
            lead_in_seconds: float = LEAD_IN_SECONDS,
            keda_http_target: float | None = None,
            chosen: dict[str, str] | None = None) -> dict[str, SimResult | None]:
    """Each policy's result; ``hpa-tuned`` is None when no swept target meets ``slo_goal``.

    The trace is a window of a service already running when it opens. Every policy is
    bounded by ``params.min_replicas`` and ``params.max_replicas`` and starts with the warm
    fleet the oracle finds for the first minutes; the reactive policies (kiln, hpa,
    hpa-tuned, kpa) start it earlier, at the trace's first ``lead_in_seconds`` mirrored
    before it (:func:`lead_in`, not counted), so that their fleet, metric windows and
    stabilisation history are those of a service that had been serving this load. The
    oracle knows the future and needs no lead-in.
    ``static`` is fixed at the oracle's peak (the oracle runs first when static is asked
    for); ``static-min`` is the cheapest fixed fleet that meets the goal and ``clairvoyant``
    the whole-trace schedule of :func:`kiln.sim.stock.clairvoyant`. ``schedule`` is the
    oracle's :func:`oracle_schedule`, when the caller has it already.
    ``keda-http`` starts from the same warm fleet and may go to zero; ``keda_http_target`` is
    its in-flight requests per replica (the HTTPScaledObject's concurrency target).
    ``hpa-metrics`` and ``keda-metrics`` are the HPA and KEDA on several per-pod metrics
    (:mod:`kiln.sim.stock`), each the cheapest point of :data:`STOCK_SWEEP` that meets the
    goal (None when none does). ``clairvoyant`` runs last, from the same opening fleet and
    lead-in as the reactive policies, seeded with every schedule they produced (so it is
    never above one that meets the goal). ``chosen``, when given, receives how
    ``hpa-metrics``, ``keda-metrics`` and ``clairvoyant`` were found."""
    low, high = params.min_replicas, params.max_replicas
    if schedule is None:
        schedule = oracle_schedule(requests, fleet, slo_ttft_s, slo_goal, low, high)
    start = warm_fleet(schedule, fleet, params)

    before = lead_in(requests, lead_in_seconds)

    seeds: list[Schedule] = []
    fixed: int | None = None
    chosen = {} if chosen is None else chosen

    def run(name: str, policy: Callable[[FleetView], int], initial: int = start,
            warmup: Sequence[Request] = before) -> SimResult:
        policy, decisions = recorded(policy)
        result = simulate(requests, replace(fleet, initial=initial), policy, slo_ttft_s, outage,
                          (lambda share: progress(name, share)) if progress else None, warmup)
        if initial == start and warmup is before and outage is None:
            seeds.append(Schedule(decisions, result, name))
        return result

    results: dict[str, SimResult | None] = {}
    wanted = list(policies)
    if "static" in wanted and "oracle" not in wanted:
        wanted.insert(0, "oracle")
    last = ("static", "static-min", "clairvoyant")
    order = sorted(wanted, key=lambda n: last.index(n) if n in last else -1)
    if keda_http_target is None:  # as rendered without a plan: maxBatchSize x the KV target
        keda_http_target = max(1.0, float(int(fleet.perf.max_batch * params.target)))
    for name in order:
        if name == "kiln":
            results[name] = run(name, kiln_policy(params, fleet.perf))
        elif name == "hpa":
            results[name] = run(name, hpa_policy(low, high))
        elif name == "hpa-tuned":
            runs = [(t, run(name, hpa_policy(low, high, target=t))) for t in HPA_TUNED_TARGETS]
            best = _cheapest(runs, slo_goal)
            results[name] = best[1] if best else None
        elif name == "kpa":
            results[name] = run(name, kpa_policy(low, high, 0.7 * fleet.perf.max_batch))
        elif name == "keda-http":
            results[name] = run(name, keda_http_policy(high, keda_http_target,
                                                       params.stabilization_seconds))
        elif name == "oracle":
            runs = []
            for margin in ORACLE_MARGINS:
                policy = oracle_policy(schedule, margin, fleet, low, high)
                # It knew the load was coming: the replicas it wants at the start are warm.
                warm = policy(FleetView(-fleet.cold_start, [], low, low, 0))  # it knew
                runs.append((margin, run(name, policy, warm, ())))
                if runs[-1][1].slo_attainment >= slo_goal:
                    break  # the margins grow, and so do GPU-hours
            best = _cheapest(runs, slo_goal) or runs[-1]
            results[name] = best[1]
        elif name in ("hpa-metrics", "keda-metrics"):
            kind = name.split("-")[0]
            points = [(label, run(name, stock_policy(kind, targets, low, high)))
                      for label, targets in STOCK_SWEEP]
            best = _cheapest(points, slo_goal)
            results[name] = best[1] if best else None
            chosen[name] = str(best[0]) if best else "none meets the goal"
        elif name == "clairvoyant":
            how, results[name] = clairvoyant(requests, replace(fleet, initial=start), slo_ttft_s, slo_goal,
                                             low, high, warmup=before, seeds=seeds, static=fixed)
            chosen[name] = how
        elif name == "static-min":
            fixed, results[name] = static_min(requests, fleet, slo_ttft_s, slo_goal, low, high)
        elif name == "static":
            oracle = results.get("oracle")
            peak = oracle.max_replicas if oracle else high
            results[name] = run(name, static_policy(peak), peak, ())
    return {name: results[name] for name in wanted if name in policies}
