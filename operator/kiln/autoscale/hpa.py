"""The Kubernetes HPA algorithm, as the simulator's baseline (and for reading HPA behaviour).

From the HPA documentation (``autoscaling/v2``, kube-controller-manager defaults):
``desired = ceil(current × currentMetric / target)``; no change while
``|currentMetric / target − 1| ≤ 0.1`` (``--horizontal-pod-autoscaler-tolerance``); the
controller syncs every 15 s; scale-down takes the highest recommendation of the last 300 s
(``stabilizationWindowSeconds`` default for scale-down; 0 for scale-up). Default scaling
policies: up by max(100 %, 4 pods) per 15 s, down by 100 % per 15 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["hpa_replicas", "HPA"]

TOLERANCE = 0.1
SCALE_DOWN_STABILIZATION_SECONDS = 300.0


def hpa_replicas(current: int, metric: float, target: float, tolerance: float = TOLERANCE) -> int:
    """The HPA's raw recommendation for an ``AverageValue``/``Utilization`` metric."""
    if current == 0:
        return 0
    ratio = metric / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return math.ceil(current * ratio - 1e-9)


@dataclass
class HPA:
    """Stateful HPA: raw recommendation, scale-down stabilisation, rate limits, bounds."""

    min_replicas: int
    max_replicas: int
    target: float
    stabilization_seconds: float = SCALE_DOWN_STABILIZATION_SECONDS
    history: list[tuple[float, int]] = field(default_factory=list)

    def step(self, now: float, current: int, metric: float | None) -> int:
        if metric is None:  # the HPA skips the metric (no scale either way) when it cannot read it
            return current
        raw = hpa_replicas(current, metric, self.target)
        self.history = [(t, r) for t, r in self.history if t > now - self.stabilization_seconds]
        self.history.append((now, raw))
        desired = raw
        if raw < current:
            desired = max(r for _, r in self.history)
        desired = min(desired, max(2 * current, current + 4))
        return max(self.min_replicas, min(self.max_replicas, desired))
