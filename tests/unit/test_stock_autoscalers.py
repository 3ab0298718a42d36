"""The stock references step by step, computed by hand from the HPA controller's source
(``kubernetes/kubernetes`` ``pkg/controller/podautoscaler``: ``replica_calculator.go``,
``horizontal.go``) and KEDA's (``pkg/scalers/scaler.go``: triggers are ``External``
``AverageValue`` metrics)."""

from __future__ import annotations

from kiln.autoscale import Sample
from kiln.sim.engine import FleetView
from kiln.sim.stock import (Behavior, external_metric_replicas, hpa_metrics_policy, keda_metrics_policy,
                            pods_metric_replicas)


def test_pods_metric_ratio_tolerance_and_ready_pods():
    # Mean 0.9 against 0.6: ratio 1.5, ceil(1.5 x 2 ready) = 3.
    assert pods_metric_replicas([0.9, 0.9], 0, 0.6, current=2) == 3
    # Ratio 1.05 is within the 0.1 tolerance: no change.
    assert pods_metric_replicas([0.63, 0.63], 0, 0.6, current=2) == 2
    # Scale-down: ratio 0.5, ceil(0.5 x 4) = 2.
    assert pods_metric_replicas([0.3] * 4, 0, 0.6, current=4) == 2


def test_pods_without_samples_count_zero_up_and_the_target_down():
    # Ratio 2 over the ready pods; the starting pod counts 0: (2.4 + 0) / 3 / 0.6 = 1.33 -> ceil(4.0) = 4.
    assert pods_metric_replicas([1.2, 1.2], 1, 0.6, current=3) == 4
    # Ratio 1.5, but with two starting pods at 0 it is 0.75: the direction flips, so no change.
    assert pods_metric_replicas([0.9, 0.9], 2, 0.6, current=4) == 4
    # Ratio 0.5; the starting pod counts the target: (0.6 + 0.6) / 3 / 0.6 = 0.67 -> 2.
    assert pods_metric_replicas([0.3, 0.3], 1, 0.6, current=3) == 2


def test_keda_trigger_is_an_external_average_value_over_status_replicas():
    # sum 3.0 / (0.6 x 4) = 1.25 -> ceil(3.0 / 0.6) = 5; starting pods are in status.replicas.
    assert external_metric_replicas(3.0, 0.6, 4) == 5
    assert external_metric_replicas(2.5, 0.6, 4) == 4   # ratio 1.04: within tolerance
    assert external_metric_replicas(0.5, 0.6, 4) == 1


def test_scale_up_is_limited_to_four_pods_or_double_per_period():
    behavior = Behavior(min_replicas=1, max_replicas=16)
    assert behavior.normalize(0.0, 2, 10) == 6     # max(2 + 4, 2 x 2)
    assert behavior.normalize(15.0, 6, 10) == 10   # the last period's event has left the window
    behavior = Behavior(min_replicas=1, max_replicas=16)
    assert behavior.normalize(0.0, 2, 10) == 6
    assert behavior.normalize(5.0, 6, 10) == 6     # within the period: 2 + 4 already spent
    assert Behavior(1, 8).normalize(0.0, 6, 20) == 8  # and never above maxReplicas


def test_scale_down_waits_for_the_highest_recommendation_of_the_window():
    behavior = Behavior(min_replicas=2, max_replicas=16, down_window=300.0)
    assert behavior.normalize(0.0, 8, 8) == 8
    for t in range(15, 300, 15):
        assert behavior.normalize(float(t), 8, 3) == 8   # 8 is still within 300 s
    assert behavior.normalize(300.0, 8, 3) == 3          # recommendations after 0 s only
    assert Behavior(2, 16, down_window=0.0).normalize(0.0, 8, 1) == 2  # minReplicas


def _view(now, samples, current, starting=0):
    return FleetView(now, samples, current, current - starting, starting)


def test_several_metrics_take_the_largest_proposal():
    samples = [Sample(0.0, f"r{i}", 0.3, waiting=0, active=200, prefill_load=0.2) for i in range(2)]
    # KV says 0.3 / 0.6 -> 1 replica, active requests 200 / 100 -> 4: the HPA asks for 4.
    hpa = hpa_metrics_policy({"kv": 0.6, "active": 100.0}, 1, 16)
    assert hpa(_view(0.0, samples, 2)) == 4
    keda = keda_metrics_policy({"kv": 0.6, "active": 100.0}, 1, 16)
    assert keda(_view(0.0, samples, 2)) == 4
    # With two more pods starting, the HPA counts them 0 (400 / 4 / 100 = 1: no change) while
    # KEDA divides the sum by status.replicas (400 / (100 x 4) = 1: no change either).
    assert hpa_metrics_policy({"active": 100.0}, 1, 16)(_view(0.0, samples, 4, starting=2)) == 4
    assert keda_metrics_policy({"active": 80.0}, 1, 16)(_view(0.0, samples, 4, starting=2)) == 5
    # No metric at all (an outage): the HPA keeps the count.
    assert hpa_metrics_policy({"kv": 0.6}, 1, 16)(_view(0.0, [], 3)) == 3
