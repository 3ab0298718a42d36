"""The references: a run is fixed by its decisions, so clairvoyant, which searches the
decisions with every compared policy's among its starting points, is never above a policy
that meets the goal."""

from __future__ import annotations

import random
from dataclasses import replace

from kiln.autoscale import LawParams
from kiln.planner.perf import PerfModel
from kiln.sim import Fleet
from kiln.sim.engine import simulate
from kiln.sim.policies import kiln_policy, static_policy
from kiln.sim.references import Schedule, causal_floor, clairvoyant, onset_need, recorded, replay, static_min
from kiln.sim.stock import STOCK_SWEEP, stock_policy
from kiln.sim.traces import Request, lead_in

SLO, GOAL = 2.0, 0.99


def _fleet(initial: int = 2) -> Fleet:
    perf = PerfModel(kv_tokens=60_000, max_batch=32, weight_bytes=9e9, kv_bytes_per_token=65536.0,
                     bandwidth=3.35e12, prefill_tokens_per_s=20_000.0)
    return Fleet(perf, gpus_per_replica=1, initial=initial, cold_start=60.0, dt=0.5)


def _trace() -> list[Request]:
    """Twenty minutes: a base load with a threefold burst in the middle."""
    rng = random.Random(7)
    requests, t = [], 0.0
    while t < 1200:
        rate = 6.0 if 480 <= t < 720 else 2.0
        t += rng.expovariate(rate)
        requests.append(Request(t, rng.choice((400, 1500, 3000)), rng.choice((50, 150, 300))))
    return requests


def _run(requests, fleet, policy, source):
    policy, decisions = recorded(policy)
    return Schedule(decisions, simulate(requests, fleet, policy, SLO, warmup=lead_in(requests, 300.0)), source)


def test_a_replayed_run_is_the_run():
    requests, fleet = _trace(), _fleet()
    run = _run(requests, fleet, kiln_policy(LawParams(min_replicas=1, max_replicas=8)), "kiln")
    again = simulate(requests, fleet, replay(run.decisions), SLO, warmup=lead_in(requests, 300.0))
    assert again == run.result
    assert len(set(run.decisions)) > 1  # it did scale


def test_clairvoyant_is_below_every_seeded_policy_that_meets_the_goal():
    requests, fleet = _trace(), _fleet()
    seeds = [_run(requests, fleet, kiln_policy(LawParams(min_replicas=1, max_replicas=8)), "kiln")]
    seeds += [_run(requests, fleet, stock_policy(kind, targets, 1, 8), f"{kind} {label}")
              for kind in ("hpa", "keda") for label, targets in STOCK_SWEEP]
    meeting = [s for s in seeds if s.result.slo_attainment >= GOAL]
    assert meeting, "the test needs at least one policy that meets the goal"
    how, best = clairvoyant(requests, fleet, SLO, GOAL, 1, 8, warmup=lead_in(requests, 300.0), seeds=seeds,
                            trim_blocks=(300.0,))
    assert best.slo_attainment >= GOAL
    assert all(best.gpu_hours <= s.result.gpu_hours for s in meeting)
    # Foresight saves something over the law's run here (the HPA swept per trace with
    # hindsight can be as cheap), and never goes above a fixed fleet.
    assert best.gpu_hours < seeds[0].result.gpu_hours
    n, fixed = static_min(requests, fleet, SLO, GOAL, 1, 8)
    assert best.gpu_hours <= fixed.gpu_hours * 1.001


def test_clairvoyant_without_seeds_still_meets_the_goal():
    requests, fleet = _trace(), _fleet()
    _, best = clairvoyant(requests, fleet, SLO, GOAL, 1, 8, trim_blocks=())
    assert best.slo_attainment >= GOAL
    n, fixed = static_min(requests, fleet, SLO, GOAL, 1, 8)
    assert best.gpu_hours <= fixed.gpu_hours * 1.02  # the fixed fleet is one of its candidates
    assert simulate(requests, replace(fleet, initial=n), static_policy(n), SLO).slo_attainment >= GOAL


def _base_and_burst(burst_at: float, length: float = 240.0, seconds: float = 900.0,
                    extra: float = 10.0) -> list[Request]:
    """A base load of 2 requests/s and, apart, a burst of ``extra`` more from ``burst_at``: the
    base's arrivals are the same wherever the burst is, as a causal policy sees them before it."""
    base, burst = random.Random(11), random.Random(12)
    requests, t = [], 0.0
    while t < seconds:
        t += base.expovariate(2.0)
        requests.append(Request(t, base.choice((400, 1500, 3000)), base.choice((50, 150, 300))))
    t = burst_at
    while t < burst_at + length:
        t += burst.expovariate(extra)
        requests.append(Request(t, burst.choice((400, 1500, 3000)), burst.choice((50, 150, 300))))
    return sorted(requests, key=lambda r: r.arrival)


def test_the_floor_is_below_every_schedule_that_meets_the_goal():
    """With the trace alone as its variant the floor bounds any schedule: clairvoyant's, every
    policy's that meets the goal, the cheapest fixed fleet's."""
    requests, fleet = _trace(), _fleet()
    floor, needs = causal_floor(requests, lambda d: [], fleet, SLO, GOAL, 8)
    assert [d for d, _ in needs[:3]] == [0.0, 15.0, 30.0]
    assert max(n for _, n in needs) > min(n for _, n in needs)  # the burst needs more
    seeds = [_run(requests, fleet, stock_policy(kind, targets, 1, 8), f"{kind} {label}")
             for kind in ("hpa", "keda") for label, targets in STOCK_SWEEP]
    seeds = [s for s in seeds if s.result.slo_attainment >= GOAL]
    _, best = clairvoyant(requests, fleet, SLO, GOAL, 1, 8, warmup=lead_in(requests, 300.0), seeds=seeds,
                          trim_blocks=(300.0,))
    _, fixed = static_min(requests, fleet, SLO, GOAL, 1, 8)
    assert seeds and floor <= best.gpu_hours <= min(s.result.gpu_hours for s in seeds)
    assert floor <= fixed.gpu_hours
    # Held to the fewest replicas clairvoyant keeps (1): higher, and still below it.
    kept, kept_needs = causal_floor(requests, lambda d: [], fleet, SLO, GOAL, 8, low=1)
    assert min(n for _, n in kept_needs) == 1 and floor <= kept <= best.gpu_hours


def test_a_burst_that_may_come_at_any_moment_raises_the_causal_floor():
    """A causal policy cannot tell the trace from one whose burst comes sooner, so before the
    burst it holds what that one needs: the floor rises above any schedule's, and stays
    below a fixed fleet that meets the goal on the trace and on every variant."""
    fleet = _fleet()
    requests = _base_and_burst(600.0)
    variants = {d: _base_and_burst(d) for d in range(0, 600, 15)}
    own, own_needs = causal_floor(requests, lambda d: [], fleet, SLO, GOAL, 8)
    floor, needs = causal_floor(requests, lambda d: [variants[d]] if d in variants else [], fleet, SLO, GOAL, 8)
    assert all(n >= m for (_, n), (_, m) in zip(needs, own_needs))
    assert floor > own * 1.2
    # Every variant is the trace itself up to its burst.
    assert all([r for r in v if r.arrival < d] == [r for r in requests if r.arrival < d] for d, v in variants.items())
    fixed = max(static_min(trace, fleet, SLO, GOAL, 1, 8)[0] for trace in [requests, *variants.values()])
    run = simulate(requests, replace(fleet, initial=fixed), static_policy(fixed), SLO)
    assert floor <= run.gpu_hours


def test_onset_need_counts_only_the_requests_whose_deadline_falls_within_the_cold_start():
    fleet = _fleet()
    requests = [Request(100.0 + 0.01 * i, 3000, 50) for i in range(200)]
    assert onset_need(requests, 0.0, fleet, SLO, 0, 8) == 0  # they arrive after the span
    assert onset_need(requests, 100.0, fleet, SLO, 200, 8) == 0  # all may miss
    need = onset_need(requests, 100.0, fleet, SLO, 2, 8)
    assert 1 < need <= 9
    assert onset_need(requests, 100.0, fleet, SLO, 100, 8) < need


def test_more_ready_replicas_never_add_a_miss_to_a_window():
    """The floor leans on this: with more replicas ready and idle at a window's start, its
    requests miss no more (checked on every scrape's window across a burst that one to
    three replicas cannot serve within the SLO)."""
    requests, fleet = _base_and_burst(300.0, seconds=600.0, extra=30.0), _fleet()
    curves = []
    for begin in range(240, 540, 15):
        window = [Request(r.arrival - begin, r.input_tokens, r.output_tokens) for r in requests
                  if begin <= r.arrival <= begin + fleet.cold_start - SLO]
        curves.append([len(window) - round(simulate(window, replace(fleet, initial=n), static_policy(n), SLO)
                                           .slo_attainment * len(window)) for n in range(1, 7)])
        assert curves[-1] == sorted(curves[-1], reverse=True), (begin, curves[-1])
    assert max(c[2] for c in curves) > 0 and max(c[-1] for c in curves) == 0
