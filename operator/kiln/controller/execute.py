"""Carry out what ``decide`` returned: every write one reconcile makes, in dependency order,
and the service's status, written once and only if it changed.

KubeAI's model reconciler has the same shape: ``calculatePodPlan`` decides and
``podPlan.execute`` writes (kubeai, internal/modelcontroller/pod_plan.go), and the status is
updated once at the end of ``Reconcile`` (internal/modelcontroller/model_controller.go).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from ..api import ConditionType
from ..api.llmservice import Condition
from ..decide.conditions import get_condition
from ..decide.decide import refuse, rolled_out
from ..decide.snapshot import Actions
from ..decide.status import status_wire
from ..errors import SpecInvalid
from .gather import refused_write
from .kube import ApiException, KubeApi

__all__ = ["execute", "write_status"]


async def execute(actions: Actions, api: KubeApi, before: Mapping[str, Any], now: str,
                  generation: int | None) -> Actions:
    """The writes ``actions`` lists: the superseded build's deletion, the engine record and its
    build, the children in order. A child the API server refuses for good stalls the service
    (``before``: the status it had, for one Event per transition)."""
    for job in actions.delete:
        await api.delete(job, background=True)
    if actions.engine_record is not None:
        await api.apply(actions.engine_record)
    if actions.build_job is not None and await api.create(actions.build_job) is not None:
        # Services that want the same engine reconcile concurrently: only the one whose
        # create succeeded started the build.
        actions.events += actions.started
        await api.patch_status(actions.engine, actions.started_engine_status or {})
    if actions.engine_status is not None and actions.engine is not None:
        await api.patch_status(actions.engine, actions.engine_status)
    try:
        await _apply_children(actions, api)
    except SpecInvalid as error:
        stalled = get_condition(list(before.get("conditions") or []), ConditionType.STALLED.value)
        refuse(actions, error, Condition.model_validate(stalled) if stalled else None, now, generation)
    return actions


async def _apply_children(actions: Actions, api: KubeApi) -> None:
    for child in actions.apply:
        try:
            applied = await api.apply(child)
        except ApiException as error:
            raise refused_write(error, child["metadata"]["namespace"], child in actions.gateway) from None
        if child is actions.workload and actions.rollout is not None:
            rolled_out(actions, applied)  # the rollout as the API server has it now


def write_status(patch: MutableMapping[str, Any], current: Mapping[str, Any], actions: Actions) -> None:
    """The one status write: the fields of the new status that differ from ``current``
    (nothing when nothing changed), into the handler's patch."""
    patch.update({key: value for key, value in status_wire(actions.status).items()
                  if current.get(key) != value})
