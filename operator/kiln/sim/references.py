"""The references every autoscaling policy is measured against: ``static-min``, the cheapest
fixed fleet, and ``clairvoyant``, the cheapest replica schedule found with perfect knowledge
of the trace.

**What clairvoyant bounds.** A policy, causal or not, acts on the simulator only through the
replica counts it asks for at each scrape (every ``period`` seconds); the simulator is
deterministic, so a run is fixed by that sequence of decisions, the opening fleet and the
lead-in (:func:`recorded` and :func:`replay` reproduce a run exactly). Clairvoyant searches
that space of decision sequences, under the same cold starts, with the whole trace's SLO
budget: it starts from the schedules it can build with foresight (per-window needs asked for
a cold start ahead, repaired where the whole replay misses; the cheapest fixed fleet) and from
every schedule that the policies it is compared with produced (``seeds``), keeps the cheapest
that meets the goal, and then removes a replica block by block, never below what each window
needs alone, while the goal still holds.
So it is never above any seeded policy that meets the goal, and below it by what foresight
saves; it is an upper bound on the true optimum over all schedules, which is a search over
``high ** decisions`` sequences and is not attempted. A ratio to clairvoyant therefore
understates a policy's distance from the optimum, never overstates it.

**What no causal policy can go below** (:func:`causal_floor`). Clairvoyant knows when a
burst comes; a policy that reads only the metrics so far does not, and on a trace it must
also serve every trace that is the same up to now and bursts right after. Take a decision
time ``d``: a replica ready at any moment of ``[d, d + cold_start)`` was asked for at a
decision before ``d``, so on every trace that is the same as this one up to ``d`` the replicas
ready over that span are among those alive (starting or serving) after the decision at
``d``, which are billed until the next decision. If the policy meets the SLO on such a trace
``V``, the requests of ``V`` arriving in ``[d, d + cold_start - slo]`` (whose deadlines fall
within the span) miss at most the whole trace's budget, ``(1 - goal)`` of ``V``'s requests;
and they miss no more with that many replicas ready and idle at ``d`` and held for the span
(:func:`onset_need`), since more ready replicas and an empty queue never add a miss in the
simulator. So the replicas billed from ``d`` to the next decision are at least the most
that any of those traces needs over its span, the trace itself among them: summed over the
decisions, that is the floor. It bounds every policy that decides from the past alone, at
these decision times and cold start, and meets the SLO on the trace and on every variant
given; with the trace alone as its variant, it bounds any schedule, clairvoyant's too, which
is the check that it is a floor (never above clairvoyant).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .engine import Fleet, FleetView, SimResult, simulate
from .policies import oracle_policy, oracle_schedule, static_policy
from .traces import Request

__all__ = ["static_min", "clairvoyant", "causal_floor", "onset_need", "recorded", "replay", "Schedule",
           "CLAIRVOYANT_WINDOW_GOAL"]

Policy = Callable[[FleetView], int]

# The per-window goal of the foresight schedule it starts from (repaired afterwards).
CLAIRVOYANT_WINDOW_GOAL = 0.995
REPAIR_ROUNDS = 4
TRIM_BLOCK_SECONDS = (600.0,)


@dataclass
class Schedule:
    """One run's decisions (desired replicas at each scrape, in order) and its result."""

    decisions: list[int]
    result: SimResult
    source: str


def recorded(policy: Policy) -> tuple[Policy, list[int]]:
    """``policy``, writing each decision to the returned list."""
    decisions: list[int] = []

    def wrapped(view: FleetView) -> int:
        decisions.append(policy(view))
        return decisions[-1]
    return wrapped, decisions


def replay(decisions: Sequence[int]) -> Policy:
    """The decisions again, one per scrape (the last one held if the run goes on longer)."""
    step = iter(list(decisions))
    last = decisions[-1] if decisions else 0

    def policy(view: FleetView) -> int:
        return next(step, last)
    return policy


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


def clairvoyant(requests: Sequence[Request], fleet: Fleet, slo_ttft_s: float, goal: float,
                low: int, high: int, window: float = 60.0,
                cache: dict[tuple[int, int], float] | None = None,
                warmup: Sequence[Request] = (), seeds: Sequence[Schedule] = (),
                static: int | None = None,
                progress: Callable[[str], None] | None = None,
                trim_blocks: Sequence[float] = TRIM_BLOCK_SECONDS) -> tuple[str, SimResult]:
    """The cheapest schedule found (see the module's docstring); returns (how it was found,
    its result). ``fleet.initial`` and ``warmup`` must be those the ``seeds`` ran with, so
    that they replay exactly. ``cache`` keeps the per-window replays across calls (they do
    not depend on the cold start); ``static`` is the static-min count when known."""
    def run(decisions: Sequence[int], source: str) -> Schedule:
        result = simulate(requests, fleet, replay(decisions), slo_ttft_s, warmup=warmup)
        if progress is not None:
            progress(f"{source}: {result.gpu_hours:.3f} GPU-h, {result.slo_attainment:.4f}")
        return Schedule(list(decisions), result, source)

    def meets(s: Schedule) -> bool:
        return s.result.slo_attainment >= goal

    # The decision times: one per scrape from the lead-in's first whole minute.
    first = min((r.arrival for r in warmup), default=0.0)
    start = 60.0 * (first // 60.0)
    count = int((requests[-1].arrival + 60.0 - start) // fleet.period) + 2
    times = [start + fleet.period * (k + 1) for k in range(count)]

    candidates = [s for s in seeds if meets(s)]
    schedule = oracle_schedule(requests, fleet, slo_ttft_s, CLAIRVOYANT_WINDOW_GOAL, low, high, window, cache)
    ahead = oracle_policy(schedule, 0, fleet, low, high, window)
    length = requests[-1].arrival + 1.0
    foresight = [ahead(FleetView(t + length if t < 0 else t, [], low, low, 0)) for t in times]
    trial = run(foresight, "per-window")
    for _ in range(REPAIR_ROUNDS):
        if meets(trial):
            break
        trial = run(_repair(trial, times, slo_ttft_s, fleet, high), "per-window, repaired")
    if meets(trial):
        candidates.append(trial)
    if static is None:
        static = static_min(requests, fleet, slo_ttft_s, goal, low, high)[0]
    fixed = run([static] * len(times), "static")
    if meets(fixed):
        candidates.append(fixed)
    if not candidates:
        return "none met the goal", min([trial, fixed], key=lambda s: -s.result.slo_attainment).result
    best = min(candidates, key=lambda s: s.result.gpu_hours)
    # Foresight on top: a replica fewer over each block, never below what each window needs
    # alone, kept while the whole trace meets the goal; the blocks holding most replicas
    # first (within the trace: the lead-in is not counted).
    for seconds in trim_blocks:
        span = int(seconds // fleet.period)
        blocks = [(i, min(len(times), i + span)) for i in range(0, len(times), span)
                  if times[min(len(times), i + span) - 1] >= -fleet.cold_start]
        blocks.sort(key=lambda b: -sum(best.decisions[b[0]:b[1]]))
        for a, b in blocks:
            block = [max(low, need, d - 1) for d, need in zip(best.decisions[a:b], foresight[a:b])]
            if block == best.decisions[a:b]:
                continue
            trial = run(best.decisions[:a] + block + best.decisions[b:], f"{best.source.split(',')[0]}, trimmed")
            if meets(trial) and trial.result.gpu_hours < best.result.gpu_hours:
                best = trial
    return best.source, best.result


def _repair(trial: Schedule, times: Sequence[float], slo_ttft_s: float, fleet: Fleet,
            high: int) -> list[int]:
    """A replica more from a cold start before each minute whose p99 TTFT missed the SLO
    until it ends."""
    decisions = list(trial.decisions)
    for (minute_end, *_), p99 in zip(trial.result.timeline, trial.result.ttft_p99_timeline):
        if p99 <= slo_ttft_s:
            continue
        begin = minute_end - 60.0 - fleet.cold_start - fleet.period
        for k, t in enumerate(times):
            if begin <= t <= minute_end:
                decisions[k] = min(high, decisions[k] + 1)
    return decisions


def onset_need(requests: Sequence[Request], begin: float, fleet: Fleet, slo_ttft_s: float,
               allowed: int, high: int, arrivals: Sequence[float] | None = None) -> int:
    """The fewest replicas that, ready and idle at ``begin`` and held for a cold start, serve
    the requests of ``requests`` arriving in ``[begin, begin + cold_start - slo]`` with at most
    ``allowed`` over the SLO (``high + 1`` if ``high`` do not). Requests the engine refuses
    are not counted, as in the SLO; ``requests`` are in order of arrival (``arrivals``: their
    arrival times, when the caller has them)."""
    arrivals = [r.arrival for r in requests] if arrivals is None else arrivals
    span = requests[bisect.bisect_left(arrivals, begin):
                    bisect.bisect_right(arrivals, begin + fleet.cold_start - slo_ttft_s)]
    window = [Request(r.arrival - begin, r.input_tokens, r.output_tokens) for r in span
              if not fleet.perf.rejects(r.input_tokens, r.output_tokens)]
    if len(window) <= allowed:
        return 0
    for n in range(1, high + 1):  # upwards, so that the fewest is found even if misses are not monotone
        result = simulate(window, replace(fleet, initial=n), static_policy(n), slo_ttft_s)
        if len(window) - round(result.slo_attainment * len(window)) <= allowed:
            return n
    return high + 1


def causal_floor(requests: Sequence[Request], variants: Callable[[float], Sequence[Sequence[Request]]],
                 fleet: Fleet, slo_ttft_s: float, goal: float, high: int, low: int = 0,
                 until: float | None = None,
                 progress: Callable[[float], None] | None = None) -> tuple[float, list[tuple[float, int]]]:
    """The GPU-hours below which no causal policy that meets ``goal`` on ``requests`` and on
    every trace ``variants(d)`` returns (each the same as ``requests`` before ``d``) can serve
    ``requests`` from 0 to ``until`` (its last arrival by default), never holding fewer than
    ``low`` replicas (the service's ``minReplicas``, which every compared policy and
    clairvoyant keep); and the replicas it needs at each decision time (see the module's
    docstring). ``variants(d)`` is called at each decision time ``d`` from 0 on;
    ``progress`` with the share of the trace done."""
    def allowed(trace: Sequence[Request]) -> int:
        accepted = sum(1 for r in trace if not fleet.perf.rejects(r.input_tokens, r.output_tokens))
        return int((1.0 - goal) * accepted + 1e-9)
    end = requests[-1].arrival if until is None else until
    own, arrivals = allowed(requests), [r.arrival for r in requests]
    needs = []
    d = 0.0
    while d < end:
        need = max(low, onset_need(requests, d, fleet, slo_ttft_s, own, high, arrivals))
        for variant in variants(d):
            need = max(need, onset_need(variant, d, fleet, slo_ttft_s, allowed(variant), high))
        needs.append((d, need))
        d += fleet.period
        if progress is not None:
            progress(min(1.0, d / end))
    return sum(n for _, n in needs) * fleet.period * fleet.gpus_per_replica / 3600, needs
