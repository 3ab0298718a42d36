"""The builtin autoscaler: scrape, run the control law, write the decision. One per operator.

Samples and recommendations live in memory per service; the law's record (its demand over
the last hour, when it began, the TTFT correction) is also written into the service's
``status.autoscaling.record`` and read back from there after an operator restart
(:mod:`kiln.autoscale.record`): written, at most once a minute, when a restart from the
record the status holds would read the law's terms more than a tenth of a replica away from
the running law's, so a constant load writes it rarely (as the prior shrinks, and once an
hour). The samples and the stabilisation window's
wants are not: the first decision after a restart seeds the current count as a
recommendation, so a restart never shortcuts the scale-down stabilisation window, and
missing samples hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp

from ..api import AutoscalingMode, LLMServiceSpec
from ..api.llmservice import AutoscalerRecord
from ..autoscale import Decision, KVSample, LawParams, Recommendations, Sample, decide
from ..autoscale.record import RECORD_SAVE_SECONDS, RECORD_TOLERANCE, drift, restore, snapshot
from ..render.meta import selector_string
from ..render.serving import workload_ref
from .kube import KubeApi
from .metrics import MetricsSource
from ..decide.policy import Policy
from .prometheus import PrometheusMetrics, new_session

__all__ = ["BuiltinAutoscaler", "AUTOSCALE_PERIOD_SECONDS", "DecisionClock"]

AUTOSCALE_PERIOD_SECONDS = 15.0


@dataclass
class _Fleet:
    samples: list[Sample] = field(default_factory=list)
    recommendations: Recommendations = field(default_factory=Recommendations)
    latest: list[KVSample] = field(default_factory=list)  # the last scrape, for the status
    # Per replica: (time, input tokens taken in so far) at the previous scrape.
    input_tokens: dict[str, tuple[float, float]] = field(default_factory=dict)
    decided_at: float | None = None  # the last decision, on the autoscaler's clock
    saved_at: float | None = None    # when the record was last handed out for the status
    saved: AutoscalerRecord | None = None  # the record the status held at the last decision
    params: LawParams | None = None  # the law's parameters at the last decision

    def forget_before(self, since: float) -> None:
        """Drop the samples before ``since``, and the counters of the replicas no scrape since
        read: the names are the pods' (or a Prometheus answer's, which may name new ones at
        every scrape), and a counter kept by name for ever grew without bound."""
        self.samples = [s for s in self.samples if s.time >= since]
        self.input_tokens = {replica: reading for replica, reading in self.input_tokens.items()
                             if reading[0] >= since}

    def prefill_load(self, now: float, sample: KVSample, tokens_per_s: float | None) -> float | None:
        """Input tokens per second since the replica's previous scrape, over its prefill
        speed; None without a speed, a previous reading, or after a counter reset."""
        if sample.input_tokens_total is None:
            return None
        previous = self.input_tokens.get(sample.replica)
        self.input_tokens[sample.replica] = (now, sample.input_tokens_total)
        if not tokens_per_s or previous is None or now <= previous[0] \
                or sample.input_tokens_total < previous[1]:
            return None
        return (sample.input_tokens_total - previous[1]) / (now - previous[0]) / tokens_per_s


class DecisionClock(Protocol):
    """A simulated clock that decides when the autoscaler decides (``kiln demo``): ``at``
    gives the time to decide at, or None to let this tick pass (already decided at this
    reading, or the operator's view of the workload is not yet the simulated cluster's);
    ``decided`` records what was decided."""

    def at(self, namespace: str, name: str, current: int, ready: int) -> float | None: ...

    def decided(self, namespace: str, name: str, now: float, current: int,
                decision: Decision) -> None: ...


@dataclass
class BuiltinAutoscaler:
    api: KubeApi
    metrics: MetricsSource
    # Overrides of LawParams timing (window, staleness, burst horizon) for the demo and tests.
    timing: dict[str, float] = field(default_factory=dict)
    clock: Any = time.monotonic
    wall: Callable[[], float] = time.time  # for the record in the status (kiln.autoscale.record)
    record_every: float = RECORD_SAVE_SECONDS  # seconds of the autoscaler's clock between records
    policy: Policy = field(default_factory=Policy)
    decision_clock: DecisionClock | None = None
    _fleets: dict[tuple[str, str], _Fleet] = field(default_factory=dict)
    # The one session every Prometheus source queries with: a source keeps nothing, so the
    # URLs tenants name (each edit a new one) cost the operator nothing after their queries.
    _prometheus_session: aiohttp.ClientSession | None = None

    def source(self, spec: LLMServiceSpec) -> MetricsSource:
        """The pods themselves, or the Prometheus ``spec.autoscaling`` names."""
        scaling = spec.autoscaling
        if scaling.metrics_source != "prometheus":
            return self.metrics
        url = self.policy.check_prometheus(scaling.prometheus_url)  # SpecInvalid if refused
        return PrometheusMetrics(url, session=self._session)

    def _session(self) -> aiohttp.ClientSession:
        if self._prometheus_session is None:
            self._prometheus_session = new_session()
        return self._prometheus_session

    async def close(self) -> None:
        session, self._prometheus_session = self._prometheus_session, None
        if session is not None:
            await session.close()

    def params(self, spec: LLMServiceSpec) -> LawParams:
        return LawParams.for_service(spec.autoscaling, **self.timing)

    def forget(self, namespace: str, name: str) -> None:
        self._fleets.pop((namespace, name), None)

    def record(self, namespace: str, name: str) -> AutoscalerRecord | None:
        """The law's record of a service for its status, when a restart from the last one
        would read the law's terms more than :data:`RECORD_TOLERANCE` replicas away, and
        ``record_every`` seconds have passed since it was handed out (None otherwise, and
        before anything is recorded): the status keeps the last one."""
        fleet = self._fleets.get((namespace, name))
        if fleet is None or fleet.decided_at is None or fleet.params is None:
            return None
        if fleet.saved_at is not None and fleet.decided_at - fleet.saved_at < self.record_every:
            return None
        wall = self.wall()
        if drift(fleet.saved, fleet.recommendations, fleet.decided_at, wall, fleet.params) <= RECORD_TOLERANCE:
            return None
        record = snapshot(fleet.recommendations, fleet.decided_at, wall)
        if record is not None:
            fleet.saved_at = fleet.decided_at
        return record

    def _start(self, namespace: str, name: str, now: float, current: int, params: LawParams,
               record: AutoscalerRecord | None) -> _Fleet:
        """A service this autoscaler has not seen: from ``record`` (its status's), if it holds
        the last hour's; the current count seeds the stabilisation window."""
        restored = None if record is None else restore(record, now, self.wall(), params.headroom_memory)
        fleet = self._fleets[(namespace, name)] = _Fleet(recommendations=restored or Recommendations())
        if restored is not None:  # the status holds it: nothing to write until the two part
            fleet.saved_at = now
        fleet.recommendations.add(now, current, params.stabilization_seconds)
        return fleet

    def latest(self, namespace: str, name: str) -> list[KVSample]:
        """What the last scrape of a service's pods read (empty before the first)."""
        fleet = self._fleets.get((namespace, name))
        return list(fleet.latest) if fleet else []

    def correction(self, namespace: str, name: str) -> float:
        """The law's demand correction for a service's TTFT objective (1 before any decision,
        and without an objective)."""
        fleet = self._fleets.get((namespace, name))
        return fleet.recommendations.correction if fleet else 1.0

    async def evaluate(self, namespace: str, name: str, spec: LLMServiceSpec, current: int,
                       prefill_tokens_per_s: float | None = None,
                       api: KubeApi | None = None,
                       request_seconds: Callable[[float, float], float] | None = None,
                       record: AutoscalerRecord | None = None,
                       cold_start: float | None = None) -> Decision | None:
        """A decision for a builtin-mode service whose workload runs ``current`` replicas.
        ``prefill_tokens_per_s``: one replica's prefill speed from the performance model
        (:func:`kiln.planner.perf.prefill_tokens_per_second`), for the prefill load. ``api``:
        where to read the workload (the handler's watch-fed cache), instead of ``self.api``.
        ``request_seconds``: the performance model's cost of one request, for the demand from
        arrivals (:func:`kiln.autoscale.law.arrival_demand`). ``record``: the service's
        ``status.autoscaling.record``, which a service this autoscaler has not seen yet (after
        an operator restart) starts from, and which the next record is measured against.
        ``cold_start``: :attr:`LawParams.cold_start`."""
        if spec.autoscaling.mode != AutoscalingMode.BUILTIN:
            return None
        workload = await (api or self.api).get(*workload_ref(spec, name), namespace)
        if workload is None:
            return None
        # For a multi-node service these count groups: one replica is one LWS group.
        ready = int((workload.get("status") or {}).get("readyReplicas") or 0)
        if self.decision_clock is None:
            now = self.clock()
        elif (at := self.decision_clock.at(namespace, name, current, ready)) is not None:
            now = at
        else:
            return None
        params = replace(self.params(spec), request_seconds=request_seconds, cold_start=cold_start)
        fleet = self._fleets.get((namespace, name)) or self._start(namespace, name, now, current, params, record)
        # What the status holds is what a restart would read: a save whose status write was
        # lost is measured against the record still there, and made again.
        fleet.saved = record
        fleet.latest = await self.source(spec).kv_samples(namespace, selector_string(name, "server"), api)
        for sample in fleet.latest:
            fleet.samples.append(Sample(now, sample.replica, sample.utilization,
                                        sample.backlog, sample.active_requests,
                                        prefill_load=fleet.prefill_load(now, sample, prefill_tokens_per_s),
                                        batch_fraction=sample.batch_fraction,
                                        finished=sample.finished_total,
                                        input_tokens=sample.input_tokens_total,
                                        output_tokens=sample.output_tokens_total,
                                        first_responses=sample.first_responses))
        fleet.forget_before(now - params.history_seconds)
        decision = decide(now, fleet.samples, current, ready, max(0, current - ready), params,
                          fleet.recommendations)
        fleet.decided_at, fleet.params = now, params
        if self.decision_clock is not None:
            self.decision_clock.decided(namespace, name, now, current, decision)
        return decision
