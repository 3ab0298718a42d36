"""A recorded trace replayed through the simulated Triton metrics, for ``kiln demo``.

The demo's serving pods run no model, so what their ``/metrics`` pages report comes from a
trace and the performance model the simulator uses (:class:`kiln.planner.perf.PerfModel`):

- a request is in flight from its arrival for its prefill (input tokens over the replica's
  prefill speed) plus its decode (output tokens × one decode step with the weights read);
  in flight it holds its prompt's KV blocks and those of the output generated so far, as
  the engine allocates them and its ``used`` blocks count them (``KVCacheManager::addSequence``
  allocates the prompt's, ``updateToken`` one more per block of output; what
  ``guaranteed_no_evict`` reserves for the rest is exported by no series);
- the service's in-flight requests, KV tokens and prompt tokens per second are spread
  evenly over its serving pods (Triton behind a Kubernetes Service);
- prompt tokens the service's pods cannot prefill within a second wait for the next; the
  pods report that queue, in requests of the trace's mean prompt, as waiting.

This is coarser than :func:`kiln.sim.simulate` (no batching slowdown, no per-replica queue),
and is meant for watching the operator act on metrics, not for measuring a policy:
``benchmarks/autoscaling.py`` does that. The demo runs time faster than the trace; every
rate a page reports is per trace second, so the operator, with its own periods shortened by
the same factor, sees what it would see in a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..planner.perf import PerfModel
from ..sim.traces import Request

__all__ = ["PodLoad", "TraceReplay"]


@dataclass(frozen=True)
class PodLoad:
    """What one pod's metrics page reports."""

    kv_fraction: float          # KV blocks in use over the pod's blocks (at most 1)
    active: int                 # requests in the batch
    waiting: int                # requests queued for the batch
    input_tokens_per_s: float   # prompt tokens taken in per second
    max_requests: int = 0       # the engine's batch slots (0: not exported)
    # Prompt tokens one pod has taken in since the replay began, as a function of the trace
    # time alone, so that the counter reads the same whoever scraped it before (None: the
    # page integrates input_tokens_per_s between its reads).
    input_tokens_total: float | None = None

    @classmethod
    def steady(cls, load: float, input_tokens_per_s_at_full_load: float) -> PodLoad:
        """A steady load of ``load`` replicas' worth of KV blocks (1.0 = full)."""
        return cls(kv_fraction=min(1.0, max(0.0, load)), active=0,
                   waiting=max(0, round((load - 1.0) * 20)),
                   input_tokens_per_s=max(0.0, load) * input_tokens_per_s_at_full_load)


def _held(request: Request, decoding: float, end: float, low: float, high: float) -> float:
    """The KV tokens ``request`` holds, integrated over ``[low, high)``: its prompt from
    admission, and its output growing evenly from ``decoding`` to ``end``."""
    total = request.input_tokens * (high - low)
    start, stop = max(low, decoding), min(high, end)
    if stop > start and end > decoding:
        rate = request.output_tokens / (end - decoding)  # tokens generated per second
        total += rate * ((stop - decoding) ** 2 - (start - decoding) ** 2) / 2
    return total


class TraceReplay:
    """The service-wide demand of a trace, second by second, and each pod's share of it."""

    def __init__(self, requests: Sequence[Request], perf: PerfModel) -> None:
        self.perf = perf
        self.seconds = int(math.ceil(max((r.arrival for r in requests), default=0.0))) + 1
        self.in_flight = [0.0] * self.seconds      # requests, time-averaged over the second
        self.kv_tokens = [0.0] * self.seconds      # KV tokens held, time-averaged
        self.input_tokens = [0.0] * self.seconds   # prompt tokens arriving in the second
        self.arrivals = [0] * self.seconds
        self.mean_input = sum(r.input_tokens for r in requests) / max(1, len(requests))
        self.now, self.pods, self.backlog, self.served = 0, 1, 0.0, 0.0
        self.taken_in_per_pod = 0.0
        step = perf.step_seconds(0.0)
        for request in requests:
            start = request.arrival
            decoding = start + request.input_tokens / perf.prefill_tokens_per_s
            end = decoding + request.output_tokens * step
            second = int(start)
            self.arrivals[second] += 1
            self.input_tokens[second] += request.input_tokens
            while second < self.seconds and second < end:
                low, high = max(start, second), min(end, second + 1)
                self.in_flight[second] += high - low
                self.kv_tokens[second] += _held(request, decoding, end, low, high)
                second += 1

    def requests_per_minute(self, second: float) -> int:
        """Arrivals in the minute up to ``second`` of the trace."""
        return sum(self.arrivals[max(0, int(second) - 60):max(0, int(second))])

    def advance(self, second: float, pods: int) -> None:
        """Replay up to ``second`` of the trace with ``pods`` serving pods: prompt tokens
        the pods cannot prefill in a second wait for the next (the queue)."""
        while self.now < int(second):
            capacity = pods * self.perf.prefill_tokens_per_s
            demand = self.backlog + (self.input_tokens[self.now] if self.now < self.seconds else 0.0)
            self.served = min(demand, capacity)
            self.backlog = demand - self.served
            self.taken_in_per_pod += self.served / max(1, pods)
            self.pods, self.now = pods, self.now + 1

    def pod_load(self) -> PodLoad:
        """One serving pod's share at the last :meth:`advance`."""
        index, pods = self.now - 1, max(1, self.pods)
        if index < 0:
            return PodLoad(0.0, 0, 0, 0.0, self.perf.max_batch, input_tokens_total=0.0)
        waiting = self.backlog / self.mean_input / pods
        in_flight, kv_tokens = ((self.in_flight[index], self.kv_tokens[index]) if index < self.seconds
                                else (0.0, 0.0))
        kv = kv_tokens / pods / max(1, self.perf.kv_tokens)
        return PodLoad(kv_fraction=min(1.0, kv),
                       active=min(self.perf.max_batch, round(in_flight / pods)),
                       waiting=round(waiting), input_tokens_per_s=self.served / pods,
                       max_requests=self.perf.max_batch, input_tokens_total=self.taken_in_per_pod)
