"""The operator's own Prometheus metrics, served on their own port (``kiln run --metrics-port``).

One ``Telemetry`` per operator, each with its own registry, so that tests and the demo can
run several operators in one process. Names are what the chart's dashboard and alerts use:

- ``kiln_reconcile_duration_seconds{kind}``, ``kiln_reconcile_queue_seconds{kind}`` (the wait
  for a reconcile slot) and ``kiln_reconcile_errors_total{kind,reason}``;
- ``kiln_engine_builds_total{result}`` (started, succeeded, failed),
  ``kiln_engine_build_duration_seconds`` and ``kiln_engine_cache_hits_total``;
- ``kiln_autoscaler_decisions_total{namespace,service,direction}`` (up, down, hold) and the
  gauges ``kiln_service_{desired,ready,max}_replicas{namespace,service}``;
  ``kiln_autoscaler_demand_correction{namespace,service}``, the builtin law's correction of
  its demand for a TTFT objective (``autoscaling.ttftP99Milliseconds``; 1 while the
  objective is met: above it, the performance model sizes the service short);
- ``kiln_plan_kv_cache_tokens`` (predicted) and ``kiln_observed_kv_cache_tokens`` per service,
  ``kiln_service_kv_cache_utilization``, ``kiln_service_condition{condition}`` (1 when True);
- ``kiln_operator_leader``: 1 while this operator acts (it holds the Lease, or runs without
  one), 0 while it waits for the Lease as a standby.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..api import ConditionType, LLMServiceStatus
from ..decide import EventReason

__all__ = ["Telemetry", "METRICS_PORT", "BUILD_RESULTS"]

METRICS_PORT = 8081
_SERVICE = ("namespace", "service")
# kiln_engine_builds_total{result}: the Events that move it, and the result each counts.
BUILD_RESULTS: Mapping[str, str] = {EventReason.BUILD_STARTED: "started", EventReason.BUILD_SUCCEEDED: "succeeded",
                                    EventReason.BUILD_FAILED: "failed"}
_WATCHED_CONDITIONS = tuple(c.value for c in (ConditionType.READY, ConditionType.STALLED,
                                              ConditionType.ENGINE_READY, ConditionType.SCALING_ACTIVE))


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_seconds = Histogram(
            "kiln_reconcile_duration_seconds", "Time spent in one reconcile", ["kind"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        # Like controller-runtime's workqueue_queue_duration_seconds: the time a reconcile
        # waited for one of the operator's reconcile slots before it started.
        self.queue_seconds = Histogram(
            "kiln_reconcile_queue_seconds", "Time a reconcile waited for a slot", ["kind"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
        self.reconcile_errors = Counter("kiln_reconcile_errors_total", "Reconciles that ended in an error",
                                        ["kind", "reason"], registry=r)
        self.builds = Counter("kiln_engine_builds_total", "Engine build Jobs by outcome", ["result"], registry=r)
        # Every outcome exported from the start, at 0: a series that first appears at 1 has no
        # increase() over any range, so the chart's KilnEngineBuildFailed
        # (increase(...{result="failed"}[30m]) > 0) would miss each operator's first failed
        # build (prometheus.io/docs/practices/instrumentation/, "Avoid missing metrics").
        for result in BUILD_RESULTS.values():
            self.builds.labels(result)
        self.build_seconds = Histogram(
            "kiln_engine_build_duration_seconds", "Engine build Job run time", registry=r,
            buckets=(60, 300, 600, 1200, 1800, 3600, 7200, 14400))
        self.cache_hits = Counter("kiln_engine_cache_hits_total",
                                  "Services served by an engine that was already built", registry=r)
        # The engine key each service (by uid) was last counted a cache hit for.
        self._hits: dict[str, str] = {}
        self.decisions = Counter("kiln_autoscaler_decisions_total", "Builtin autoscaler decisions",
                                 [*_SERVICE, "direction"], registry=r)
        self.correction = Gauge("kiln_autoscaler_demand_correction",
                                "Builtin autoscaler's demand correction for the TTFT objective (1: none)",
                                _SERVICE, registry=r)
        self.desired = Gauge("kiln_service_desired_replicas", "Replicas the service should run",
                             _SERVICE, registry=r)
        self.ready = Gauge("kiln_service_ready_replicas", "Replicas ready", _SERVICE, registry=r)
        self.max = Gauge("kiln_service_max_replicas", "Upper bound of the autoscaler", _SERVICE,
                         registry=r)
        self.kv_predicted = Gauge("kiln_plan_kv_cache_tokens",
                                  "KV-cache tokens per replica the planner predicted", _SERVICE, registry=r)
        self.kv_observed = Gauge("kiln_observed_kv_cache_tokens",
                                 "KV-cache tokens per replica the engines allocated", _SERVICE, registry=r)
        self.kv_utilization = Gauge("kiln_service_kv_cache_utilization",
                                    "Mean KV-cache block utilisation over ready replicas (0-1)",
                                    _SERVICE, registry=r)
        self.condition = Gauge("kiln_service_condition", "1 when the condition is True",
                               [*_SERVICE, "condition"], registry=r)
        self.leader = Gauge("kiln_operator_leader", "1 while this operator acts, 0 while it waits for the Lease",
                            registry=r)
        self.leader.set(1)

    def serve(self, port: int = METRICS_PORT) -> None:
        """On "::", which Linux binds for IPv4 too (net.ipv6.bindv6only 0, its default), so that
        a pod is scraped at its address on an IPv4, IPv6 or dual-stack network; on 0.0.0.0 where
        the host has no IPv6. prometheus_client's own default is 0.0.0.0 alone."""
        try:
            start_http_server(port, addr="::", registry=self.registry)
        except OSError:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)

    def first_hit(self, uid: str, key: str) -> bool:
        """Whether this is the first cache hit of service ``uid`` on engine ``key``. A reconcile
        on a body whose status the watch has not yet brought up to date (the status patch
        that records the engine lands after the reconcile that found it built) finds the
        same engine new again; that is one hit, not two."""
        if self._hits.get(uid) == key:
            return False
        self._hits[uid] = key
        return True

    def observe_service(self, namespace: str, name: str, spec: Mapping[str, Any],
                        status: LLMServiceStatus) -> None:
        """Export the gauges from the status the reconcile wrote."""
        labels = (namespace, name)
        scaling = spec.get("autoscaling") or {}
        desired = status.desired_replicas if status.desired_replicas is not None else spec.get("replicas")
        if desired is not None:
            self.desired.labels(*labels).set(desired)
        self.ready.labels(*labels).set(status.ready_replicas or 0)
        self.max.labels(*labels).set(scaling.get("maxReplicas", spec.get("replicas") or 0))
        plan = status.plan
        if plan is not None and plan.kv_cache_tokens is not None:
            self.kv_predicted.labels(*labels).set(plan.kv_cache_tokens)
        if plan is not None and plan.observed_kv_cache_tokens is not None:
            self.kv_observed.labels(*labels).set(plan.observed_kv_cache_tokens)
        if status.kv_cache_utilization is not None:
            self.kv_utilization.labels(*labels).set(status.kv_cache_utilization)
        present = {condition.type: condition.status for condition in status.conditions}
        for condition in _WATCHED_CONDITIONS:
            if condition in present:
                self.condition.labels(*labels, condition).set(1 if present[condition] == "True" else 0)

    def forget_service(self, namespace: str, name: str, uid: str = "") -> None:
        self._hits.pop(uid, None)
        for gauge in (self.desired, self.ready, self.max, self.kv_predicted, self.kv_observed,
                      self.kv_utilization, self.correction):
            try:
                gauge.remove(namespace, name)
            except KeyError:
                pass
        for condition in _WATCHED_CONDITIONS:
            try:
                self.condition.remove(namespace, name, condition)
            except KeyError:
                pass
        for direction in ("up", "down", "hold"):
            try:
                self.decisions.remove(namespace, name, direction)
            except KeyError:
                pass
