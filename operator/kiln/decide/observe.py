"""What the timers bring into the status: the KV-cache figures of one scrape (next to the
planner's prediction) and the builtin autoscaler's decision. Pure.

:func:`observe` is the first step of every ``decide``; :func:`decide_observed` is all of it
for a settled service whose new observations change nothing but its status (no object to
apply, nothing to read first).
"""

from __future__ import annotations

from enum import StrEnum

from ..api import ConditionType, LLMServiceStatus, Reason
from ..api.llmservice import AutoscalingStatus
from ..autoscale import KVSample
from .snapshot import Actions, Event, Observed
from .status import is_true, set_condition, status_wire

__all__ = ["EventReason", "PLAN_ERROR_EVENT_THRESHOLD", "observe", "decide_observed", "kv_utilization"]

# Relative error of the KV-token prediction above which the operator posts an Event.
PLAN_ERROR_EVENT_THRESHOLD = 0.15


class EventReason(StrEnum):
    """Reasons of the Events Kiln posts besides condition changes (the operator's build and
    cache-hit counters follow them)."""

    BUILD_STARTED = "BuildStarted"
    BUILD_SUCCEEDED = "BuildSucceeded"
    BUILD_FAILED = "BuildFailed"
    ENGINE_REUSED = "EngineReused"
    BUILD_CANCELLED = "BuildCancelled"
    PLAN_MISMATCH = "PlanMismatch"
    REMOVED = "Removed"  # a child the spec no longer asks for, deleted
    NOT_REMOVED = "NotRemoved"  # ... and the API server refused its deletion


def kv_utilization(samples: tuple[KVSample, ...] | list[KVSample]) -> float:
    """Mean KV-cache block utilisation over the scraped replicas (0-1)."""
    return sum(sample.utilization for sample in samples) / len(samples)


def observe(status: LLMServiceStatus, observed: Observed, now: str, generation: int | None) -> list[Event]:
    """Bring ``observed`` into ``status``; the Events it calls for."""
    events: list[Event] = []
    if observed.samples and is_true(status, ConditionType.READY.value):
        events += _scraped(status, observed.samples)
    if observed.decision is not None and observed.current is not None:
        events += _decided(status, observed, now, generation)
    return events


def decide_observed(status: LLMServiceStatus, observed: Observed, now: str,
                    generation: int | None) -> Actions | None:
    """The status with ``observed`` in it, and the Events it calls for; None when it changes
    nothing. The rest of the status stands: ``observedGeneration`` is a reconcile's to move."""
    actions = Actions(status=status.model_copy(deep=True))
    actions.events += observe(actions.status, observed, now, generation)
    if not actions.events and status_wire(actions.status) == status_wire(status):
        return None
    return actions


def _scraped(status: LLMServiceStatus, samples: tuple[KVSample, ...]) -> list[Event]:
    """Close the planner's loop with what the engines really allocated, and show the pressure;
    a PlanMismatch Event the first time an allocation is far from the prediction."""
    observed = min(sample.capacity_tokens for sample in samples)
    # Whole percent, as the object shows it: the status changes when that does.
    status.kv_cache_utilization = round(kv_utilization(samples), 2)
    if status.plan is None:
        return []
    plan, previous = status.plan.model_copy(), status.plan.observed_kv_cache_tokens
    predicted = plan.kv_cache_tokens
    plan.observed_kv_cache_tokens = observed
    status.plan = plan
    if not (predicted and observed):
        return []
    error = (predicted - observed) / observed
    plan.kv_cache_tokens_error = round(error, 3)
    if abs(error) > PLAN_ERROR_EVENT_THRESHOLD and observed != previous:
        return [("Warning", EventReason.PLAN_MISMATCH,
                 f"the engine allocated {observed} KV-cache tokens per replica; the planner "
                 f"predicted {predicted} ({error:+.0%})")]
    return []


def _decided(status: LLMServiceStatus, observed: Observed, now: str, generation: int | None) -> list[Event]:
    """The decision in the status (never the spec): desiredReplicas, the last decision and
    ScalingActive; a ScaledUp or ScaledDown Event when it changes the workload."""
    decision, current = observed.decision, observed.current
    assert decision is not None and current is not None
    previous = status.autoscaling
    status.desired_replicas = decision.desired
    record = observed.record or (previous.record if previous else None)
    if previous is None or decision.reason != previous.last_decision or decision.desired != current:
        status.autoscaling = AutoscalingStatus(
            last_decision=decision.reason, decision_time=now,
            last_scale_time=previous.last_scale_time if previous else None, record=record)
    elif observed.record is not None:
        status.autoscaling = previous.model_copy(update={"record": record})
    set_condition(status, ConditionType.SCALING_ACTIVE, not decision.held,
                  (Reason.METRICS_UNAVAILABLE if decision.held else Reason.METRICS_AVAILABLE).value,
                  decision.reason, now, generation)
    if decision.desired == current:
        return []
    assert status.autoscaling is not None
    status.autoscaling.last_scale_time = now
    up = decision.desired > current
    return [("Normal", (Reason.SCALED_UP if up else Reason.SCALED_DOWN).value, decision.reason)]
