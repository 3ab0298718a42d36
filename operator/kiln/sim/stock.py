"""What a platform team would deploy today, as simulator policies: the Kubernetes HPA and
KEDA on several per-pod metrics at once, each swept (:data:`STOCK_SWEEP`).

Both follow the HPA controller's source, ``kubernetes/kubernetes``
``pkg/controller/podautoscaler``:

- **Per metric** (``replica_calculator.go``). An HPA ``Pods`` metric with an ``AverageValue``
  target (:func:`pods_metric_replicas`, ``calcPlainMetricReplicas``): the ratio of the ready
  pods' mean to the target; within the tolerance (0.1) nothing changes, else
  ``ceil(ratio × ready)``. Pods with no sample yet (starting) count 0 on a scale-up and the
  target on a scale-down, and a proposal that would then reverse direction or fall within the
  tolerance keeps the current count. A KEDA trigger becomes an ``External`` metric, its target
  type ``AverageValue`` unless set (``kedacore/keda`` ``pkg/scalers/scaler.go``,
  ``GetMetricTargetType``); the HPA divides its value by the target and by
  ``status.replicas``, starting pods included (:func:`external_metric_replicas`,
  ``GetExternalPerPodMetricReplicas``).
- **Several metrics** (``horizontal.go``, ``computeReplicasForMetrics``): a proposal per
  metric, the largest wins.
- **Behaviour** (:class:`Behavior`; ``horizontal.go``, ``stabilizeRecommendationWithBehaviors``,
  ``calculateScaleUpLimitWithScalingRules``; defaults from ``pkg/apis/autoscaling/v2/defaults.go``):
  a scale-down takes the highest recommendation of the stabilisation window (300 s), a
  scale-up the current one (window 0); a scale-up adds at most max(4 pods, 100 %) of the count
  at the start of the 15 s period; a scale-down is not rate-limited (100 % per 15 s).

The controller syncs every 15 s, the simulator's scrape period. KEDA's metrics server asks
the scaler on every HPA request unless ``useCachedMetrics`` is set; its ``pollingInterval``
(30 s) governs activation from zero, which these fleets (``minReplicas`` >= 1) never use
(``kedacore/keda-docs``, ``reference/scaledobject-spec.md``, "Caching Metrics").

The metrics are the per-pod series Kiln scrapes: KV block fraction, active requests, prefill
load (input tokens/s over the replica's prefill speed) and the backlog. The references
``static-min`` and ``clairvoyant`` live in :mod:`kiln.sim.references`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..autoscale import Sample
from .engine import FleetView
from .references import clairvoyant, static_min

__all__ = ["METRICS", "STOCK_SWEEP", "Behavior", "pods_metric_replicas", "external_metric_replicas",
           "hpa_metrics_policy", "keda_metrics_policy", "stock_policy", "static_min", "clairvoyant"]

Policy = Callable[[FleetView], int]

TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
METRICS: dict[str, Callable[[Sample], float]] = {
    "kv": lambda s: s.kv_fraction,
    "active": lambda s: float(s.active),
    "prefill": lambda s: s.prefill_load or 0.0,
    "waiting": lambda s: float(s.waiting),
}
# What a platform team would try: Kiln's three pressure signals, with and without the
# backlog, each at a full-replica value (KV fraction 1, every batch slot of 256, prefill
# load 1, 20 waiting) scaled by a utilisation level from 40 % to 80 %; the benchmark and
# ``kiln simulate`` report, per trace, the cheapest point that meets the SLO. On four of
# the benchmark's training traces the cheapest setting that met it was at 50 %
# (long-context/1), 60 % (diurnal/1, slow-ramp/1) and 70 % (bursts/1), 7-13 % below the
# cheapest at 40 % or 60 % alone; 90 % met it on none of them.
_FULL = {"kv": 1.0, "active": 256.0, "prefill": 1.0, "waiting": 20.0}
_SETS = (("kv+active+prefill", ("kv", "active", "prefill")),
         ("kv+active+prefill+waiting", ("kv", "active", "prefill", "waiting")))
LEVELS = (0.4, 0.5, 0.6, 0.7, 0.8)
STOCK_SWEEP: tuple[tuple[str, dict[str, float]], ...] = tuple(
    (f"{name} at {level:.0%}", {m: _FULL[m] * level for m in metrics})
    for name, metrics in _SETS for level in LEVELS)


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9)  # the controller works in milli-units: no float dust


def pods_metric_replicas(values: Sequence[float], missing: int, target: float, current: int,
                         tolerance: float = TOLERANCE) -> int:
    """``calcPlainMetricReplicas``: ``values`` are the ready pods' samples, ``missing`` the
    pods with none yet."""
    ready = len(values)
    ratio = sum(values) / ready / target
    if missing == 0:
        return current if abs(1.0 - ratio) <= tolerance else _ceil(ratio * ready)
    fill = target if ratio < 1.0 else 0.0  # 100 % on a scale-down, 0 % on a scale-up
    counted = ready + missing
    new_ratio = (sum(values) + missing * fill) / counted / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    return _ceil(new_ratio * counted)


def external_metric_replicas(total: float, target: float, status_replicas: int,
                             tolerance: float = TOLERANCE) -> int:
    """``GetExternalPerPodMetricReplicas``: an ``AverageValue`` target on a fleet-wide value."""
    ratio = total / (target * status_replicas)
    return status_replicas if abs(1.0 - ratio) <= tolerance else _ceil(total / target)


@dataclass
class Behavior:
    """The HPA's default ``behavior``: stabilisation, then the rate limits, then the bounds."""

    min_replicas: int
    max_replicas: int
    down_window: float = 300.0
    period: float = 15.0
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    scale_ups: list[tuple[float, int]] = field(default_factory=list)

    def normalize(self, now: float, current: int, proposal: int) -> int:
        recommendation = proposal
        if proposal < current:  # scale-down: the highest recommendation within the window
            recommendation = max([proposal] + [r for t, r in self.recommendations
                                               if t > now - self.down_window])
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= now - self.down_window]
        self.recommendations.append((now, proposal))
        desired = recommendation
        if recommendation > current:
            start = current - sum(n for t, n in self.scale_ups if t > now - self.period)
            limit = max(current, max(start + 4, math.ceil(start * 2.0)))  # Pods 4, Percent 100
            desired = min(recommendation, limit, self.max_replicas)
        elif recommendation < current:
            desired = max(recommendation, self.min_replicas)
        if desired > current:
            self.scale_ups.append((now, desired - current))
        self.scale_ups = [(t, n) for t, n in self.scale_ups if t > now - self.period]
        return desired


def hpa_metrics_policy(targets: Mapping[str, float], low: int, high: int,
                       stabilization: float = 300.0) -> Policy:
    """An ``autoscaling/v2`` HPA with one ``Pods`` metric per entry of ``targets``
    (``AverageValue`` per metric name in :data:`METRICS`)."""
    behavior = Behavior(low, high, stabilization)

    def policy(view: FleetView) -> int:
        if not view.samples:  # no metric for any ready pod: every metric invalid, no change
            return view.current
        proposals = [pods_metric_replicas([METRICS[m](s) for s in view.samples], view.starting, t,
                                          view.current) for m, t in targets.items()]
        return behavior.normalize(view.now, view.current, max(proposals))
    return policy


def keda_metrics_policy(targets: Mapping[str, float], low: int, high: int,
                        stabilization: float = 300.0) -> Policy:
    """A KEDA ``ScaledObject`` with one prometheus trigger per entry of ``targets``, each the
    fleet's sum of that metric (``sum(...)`` over the pods), ``AverageValue`` per replica."""
    behavior = Behavior(low, high, stabilization)

    def policy(view: FleetView) -> int:
        if not view.samples:  # Prometheus has nothing: the scaler errors, the HPA holds
            return view.current
        proposals = [external_metric_replicas(sum(METRICS[m](s) for s in view.samples), t,
                                              max(view.current, 1)) for m, t in targets.items()]
        return behavior.normalize(view.now, view.current, max(proposals))
    return policy


def stock_policy(kind: str, targets: Mapping[str, float], low: int, high: int) -> Policy:
    """``kind`` is ``hpa`` or ``keda``."""
    make = hpa_metrics_policy if kind == "hpa" else keda_metrics_policy
    return make(targets, low, high)
