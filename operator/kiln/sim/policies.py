"""Autoscaling policies for the simulator. Each is ``FleetView -> desired replicas``.

- ``kiln``: the operator's control law (:func:`kiln.autoscale.decide`).
- ``hpa``: the Kubernetes HPA (:class:`kiln.autoscale.hpa.HPA`) on the Triton autoscaling
  guide's queue:compute signal, approximated per replica by waiting / running requests, with
  the guide's target of 1.
- ``static``: a fixed fleet of ``peak`` replicas.
"""

from __future__ import annotations

from collections.abc import Callable

from ..autoscale import LawParams, Recommendations, decide
from ..autoscale.hpa import HPA
from .engine import FleetView

__all__ = ["kiln_policy", "hpa_policy", "static_policy", "POLICIES"]


def kiln_policy(params: LawParams) -> Callable[[FleetView], int]:
    recommendations = Recommendations()
    history: list = []

    def policy(view: FleetView) -> int:
        nonlocal history
        history = [s for s in history if s.time >= view.now - params.window_seconds] + view.samples
        return decide(view.now, history, view.current, view.ready, view.starting, params,
                      recommendations).desired
    return policy


def hpa_policy(min_replicas: int, max_replicas: int, target: float = 1.0) -> Callable[[FleetView], int]:
    hpa = HPA(min_replicas=min_replicas, max_replicas=max_replicas, target=target)

    def policy(view: FleetView) -> int:
        if not view.samples:
            return hpa.step(view.now, view.current, None)
        ratio = sum(s.waiting / max(1, s.active) for s in view.samples) / len(view.samples)
        return hpa.step(view.now, view.current, ratio)
    return policy


def static_policy(replicas: int) -> Callable[[FleetView], int]:
    return lambda view: replicas


POLICIES = ("kiln", "hpa", "static")
