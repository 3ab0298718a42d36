"""Carry out what ``decide`` returned: every write one reconcile makes, in dependency order
(independent children concurrently), and the service's status, written once and only if it
changed.

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
from ..decide.decide import entry, refuse, removed, retired, rolled_out
from ..decide.observe import EventReason
from ..decide.ownership import let_go
from ..decide.snapshot import Actions
from ..decide.status import status_wire
from ..errors import SpecInvalid
from .collect import tell_engine
from .gather import refused_write
from .kube import ApiException, KubeApi, concurrently, kind_of

__all__ = ["execute", "stages", "write_status"]


async def execute(actions: Actions, api: KubeApi, before: Mapping[str, Any], now: str,
                  generation: int | None) -> Actions:
    """The writes ``actions`` lists: the deletions (a superseded build, the children the spec
    no longer asks for), the engine record, its status and its build, the children in order, and the
    previous workload's deletion once the service is Ready on the new one. A child the API
    server refuses for good stalls the service (``before``: the status it had, for one Event
    per transition)."""
    for obj in actions.delete:
        await _delete(actions, api, obj)
    if actions.let_go is not None:
        await _let_go(actions, api)
    for job, operations in actions.job_owners:
        await _owners(api, job, operations)
    if actions.engine_record is not None:
        await api.apply(actions.engine_record)
    if actions.engine_status is not None and actions.engine is not None:
        await _patch_engine(actions, api)
    if actions.build_job is not None and await api.create(actions.build_job) is not None:
        # Services that want the same engine reconcile concurrently: only the one whose
        # create succeeded started the build.
        actions.events += actions.started
        await api.patch_status(actions.engine, actions.started_engine_status or {})
    try:
        await _apply_children(actions, api)
    except SpecInvalid as error:
        stalled = get_condition(list(before.get("conditions") or []), ConditionType.STALLED.value)
        refuse(actions, error, Condition.model_validate(stalled) if stalled else None, now, generation)
    for obj in retired(actions):  # Ready on the new workload only now, as the apply returned it
        await _delete(actions, api, obj)
    return actions


async def _patch_engine(actions: Actions, api: KubeApi) -> None:
    """The LLMEngine's status, onto the version of the record decided on. A 409: another
    service that saw the same build end wrote the record first and told of it (its Event,
    its count), or the record moved on, and the next reconcile reads it again. A 404: the
    sweep deleted the record this service was about to take up again, and the reconcile
    fails before anything uses it."""
    try:
        await api.patch_status(actions.engine, actions.engine_status or {}, resource_version=actions.engine_version)
    except ApiException as error:
        if error.status != 409:
            raise
        actions.build_seconds = None
        return
    actions.events += actions.finished


# Attempts to leave or delete a superseded build Job that changed since it was read (its
# controller writing its status, another service joining or leaving its owners), each after
# a fresh read and the decision again (decide.ownership.let_go). The next reconcile does not
# look again: the service's status names its new engine by then.
LET_GO_ATTEMPTS = 5


async def _let_go(actions: Actions, api: KubeApi) -> None:
    """Leave the superseded build Job's owners, or delete it while the service is its only
    owner, onto the Job as read: a leave whose index moved (422) or a delete whose version
    moved (409) reads the Job again and decides again. A leftover owner the attempts miss is
    the engine sweep's (controller/collect.py)."""
    assert actions.let_go is not None
    job, uid, wanted = actions.let_go
    for _ in range(LET_GO_ATTEMPTS):
        decision = let_go(job, uid, wanted)
        if decision is None or job is None:
            return
        verb, operations = decision
        if verb == "leave" and await _patched(api, job, operations or []):
            return
        if verb == "delete" and await api.delete(job, background=True, unchanged=True):
            actions.events += actions.cancelled
            if actions.cancelled_engine is not None:
                record, status = actions.cancelled_engine
                await tell_engine(api, record, status)
            return
        meta = job["metadata"]
        # Past the watch cache, which may still hold the version just refused.
        read = getattr(api, "get_fresh", api.get)
        job = await read("batch/v1", "Job", meta["name"], meta["namespace"])


async def _patched(api: KubeApi, job: dict[str, Any], operations: list[dict[str, Any]]) -> bool:
    """Whether the JSON patch of ``job`` was made (or the Job is gone); False if its test
    failed (422)."""
    try:
        await api.json_patch(job, operations)
    except ApiException as error:
        if error.status == 404:
            return True
        if error.status != 422:
            raise
        return False
    return True


async def _owners(api: KubeApi, job: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """Join or leave a build Job's owners. A 422 (the Job or its owners changed since they
    were read) or a 404 (it is gone) leaves it to the next reconcile's reading."""
    try:
        await api.json_patch(job, operations)
    except ApiException as error:
        if error.status not in (404, 422):
            raise


async def _delete(actions: Actions, api: KubeApi, obj: dict[str, Any]) -> None:
    """Delete ``obj`` with its dependents. A 403 (an operator whose ClusterRole predates the
    verb) is said in a Warning Event instead of its Removed one, and the object leaves the
    inventory: deleting it is left to whoever may."""
    try:
        await api.delete(obj, background=True)
    except ApiException as error:
        if error.status != 403:
            raise
        kind, name = obj["kind"], obj["metadata"]["name"]
        said = ("Normal", EventReason.REMOVED, removed(obj))
        actions.events = [event for event in actions.events if event != said]
        actions.events.append(("Warning", EventReason.NOT_REMOVED,
                               f"{kind} {name} is no longer asked for by the spec, and the API server "
                               f"refused to let the operator delete it (403); delete it by hand, or "
                               f"grant the operator delete on {kind_of(obj).plural}"))
        actions.status.children = [named for named in actions.status.children or [] if named != entry(obj)]


# What a child must find in place when it is written; children of one stage are independent
# and written concurrently. A Pod naming a ServiceAccount that does not exist is refused by
# the ServiceAccount admission plugin, so the workloads (whose controllers create the pods)
# come after the accounts; a RoleBinding is checked against the rules of the Role it binds
# (kubernetes/kubernetes, pkg/registry/rbac/rolebinding/policybased/storage.go: ``Create``
# resolves ``GetRoleReferenceRules`` and fails if the Role is missing), so it comes after its
# Role. Nothing else waits: a Service, a NetworkPolicy or a PodDisruptionBudget (written with the
# workloads) selects pods by label, whenever they come; nothing admits a pod by its RoleBinding (the pods that use one, a
# multi-node launcher or the gateway's endpoint picker, call the API only once they run); and a
# scaler targets the LLMService's ``/scale`` (render/scaling.py, render/wake.py), which exists
# before any reconcile. KEDA's admission webhook reads a ScaledObject's target only for cpu or
# memory triggers, and Kiln's is prometheus (kedacore/keda,
# apis/keda/v1alpha1/scaledobject_webhook.go, ``verifyCPUMemoryScalers``); the HPA controller sets
# ``AbleToScale`` False, FailedGetScale, and retries while its target's scale cannot be read
# (kubernetes/kubernetes, pkg/controller/podautoscaler/horizontal.go, ``reconcileAutoscaler``). So
# a first deploy is two round trips, each within PARALLEL_CALLS for every example (the gateway's
# 11 children: 6 then 5): the first deploys of gateway and multi-node services were the slowest
# reconciles at a thousand services. Scalers and routes go with the workloads, so a kind the
# cluster does not serve is refused after the workload is written, as before.
_FIRST = frozenset({"ServiceAccount", "Role", "ConfigMap", "Service", "NetworkPolicy"})


def stages(children: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``children`` in the order they are written: the ones nothing needs in place first,
    then the rest (workloads, RoleBindings, routes, scalers); empty stages left out."""
    first = [child for child in children if child["kind"] in _FIRST]
    rest = [child for child in children if child["kind"] not in _FIRST]
    return [stage for stage in (first, rest) if stage]


async def _apply_children(actions: Actions, api: KubeApi) -> None:
    """Apply ``actions.apply`` stage by stage; the first refusal (in the order decided)
    stops the reconcile after its stage's writes have returned."""
    for batch in stages(actions.apply):
        for child, applied in zip(batch, await concurrently(api.apply(child) for child in batch)):
            if isinstance(applied, ApiException):
                raise refused_write(applied, child["metadata"]["namespace"], child in actions.gateway) from None
            if isinstance(applied, Exception):
                raise applied
            if child is actions.workload and actions.rollout is not None:
                rolled_out(actions, applied)  # the rollout as the API server has it now


def write_status(patch: MutableMapping[str, Any], current: Mapping[str, Any], actions: Actions) -> None:
    """The one status write: the fields of the new status that differ from ``current``
    (nothing when nothing changed), into the handler's patch."""
    patch.update({key: value for key, value in status_wire(actions.status).items()
                  if current.get(key) != value})
