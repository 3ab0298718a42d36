"""The engine a service needs: reused, started, building, failed or built. Pure.

Engines are content-addressed and shared: the record (LLMEngine) is cluster-scoped, its build
Job runs in the cache's namespace and any service that wants the engine may have started it.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from ..api import ConditionType, Reason
from ..errors import SpecInvalid
from ..render import Rendered
from ..render.engine import cache_uri
from .conditions import get_condition, is_true, job_state, one_line
from .conditions import set_condition as set_dict_condition
from .credentials import Credentials, check_engine_credentials
from .observe import EventReason
from .ownership import check_engine_job, conflict, join_owners, owned_by_service
from .snapshot import Actions, Snapshot
from .status import set_condition

__all__ = ["engine_ready", "job_state", "termination", "storage_uri", "cancelled_status", "FAILURE_LINES"]

# Lines of a failed build's output shown in its condition message and Event.
FAILURE_LINES = 5
# A step's or a container's name as a failure quotes it, at most; a line, at most (the kubelet
# keeps at most 4,096 bytes of a termination message).
_NAME_CHARS = 80
_LINE_CHARS = 4096


def storage_uri(engine: dict[str, Any]) -> str:
    """Where an LLMEngine record's files live in its namespace's cache."""
    spec = engine["spec"]
    return cache_uri(spec["cache"]["namespace"], spec["cache"]["claimName"], spec["key"])


def _job_seconds(job: dict[str, Any]) -> float | None:
    status = job.get("status") or {}
    try:
        start = datetime.datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return None
    return (end - start).total_seconds()


def termination(container: dict[str, Any]) -> str | None:
    """How a build container that failed ended: its step and last output lines, or None.
    kiln-runtime writes a JSON summary (``step``, ``message``) to its termination-message file;
    a container that died before that leaves the tail of its log there. The file is the
    container's to write, and the build runs a tokenizer's remote code: what it holds is read
    as one printable line per output line (:func:`one_line`), and a JSON nested past the
    parser's depth as text."""
    terminated = (container.get("state") or {}).get("terminated") or {}
    if not terminated or terminated.get("exitCode") == 0:
        return None
    text = str(terminated.get("message") or "").strip()
    try:
        summary = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested past the C scanner's depth
        summary = None
    where = ""
    if isinstance(summary, dict) and summary.get("step"):
        where = f" at step {one_line(summary['step'], _NAME_CHARS)}"
        text = str(summary.get("message") or "").strip().removeprefix(f"step {summary['step']!r} failed: ")
    lines = [shown for line in text.splitlines() if (shown := one_line(line, _LINE_CHARS))][-FAILURE_LINES:]
    # The kubelet's reason when it says more than "Error": OOMKilled, ContainerCannotRun, ...
    reason = one_line(terminated.get("reason"), _NAME_CHARS)
    head = (f"{where} (container {one_line(container.get('name'), _NAME_CHARS)}, "
            f"exit code {terminated.get('exitCode')}{f', {reason}' if reason not in ('', 'Error') else ''})")
    return head + (": " + " / ".join(lines) if lines else "")


def engine_ready(snapshot: Snapshot, actions: Actions, rendered: Rendered, credentials: Credentials,
                 new_key: bool, serving_old: bool) -> bool:
    """Whether the engine can be served; the record, the build and their Events as actions.

    ``new_key``: the service did not reference this engine before, so finding it built
    already is a cache hit. ``serving_old``: the service's workload runs another engine, which
    keeps serving while this one is not ready."""
    wanted, owner = rendered.engine, f"{snapshot.ref.namespace}/{snapshot.ref.name}"
    name, live = wanted["metadata"]["name"], snapshot.cluster.engine
    actions.engine = wanted
    if live is None:
        actions.engine_record = live = wanted
    elif (live.get("spec") or {}).get("key") != wanted["spec"]["key"]:
        # Names carry a digest of the key, not the key: a record whose key differs is
        # another engine, never a cache hit.
        raise conflict(wanted, owner, f"holds another engine (key {str((live.get('spec') or {}).get('key'))[:16]}..., "
                       f"not {wanted['spec']['key'][:16]}...)", engine_named=True)
    check_engine_credentials(live, credentials, snapshot.policy, name)
    if live is not wanted:
        _take_up(live, actions)
    conditions = (live.get("status") or {}).get("conditions", [])
    if is_true(conditions, ConditionType.READY.value):
        if new_key:
            actions.events.append(("Normal", EventReason.ENGINE_REUSED,
                                   f"engine {name} is already built; no build needed"))
        return True
    if snapshot.cluster.job is None and snapshot.cluster.purging is not None:
        namespace = rendered.build_job["metadata"]["namespace"]
        set_condition(actions.status, ConditionType.ENGINE_READY, False, Reason.ENGINE_BUILDING.value,
                      f"Job {namespace}/{snapshot.cluster.purging} is removing engine {name}'s earlier files "
                      "from the cache; its build starts once that Job is done", snapshot.now, snapshot.generation)
        return False
    job = _job(snapshot, actions, rendered, conditions, owner)
    state = job_state(job)
    if state == "Complete":
        actions.engine_status = {**(actions.engine_status or {}), "storageUri": storage_uri(live),
                                 "buildJob": job["metadata"]["name"], "conditions": set_dict_condition(
                                     conditions, ConditionType.READY.value, True, Reason.ENGINE_BUILT.value,
                                     f"built by Job {job['metadata']['name']}", snapshot.now)}
        actions.finished = [("Normal", EventReason.BUILD_SUCCEEDED, f"engine {name} is ready")]
        actions.build_seconds = _job_seconds(job)
        return True
    if state == "Failed":
        _failed(snapshot, actions, rendered, conditions, serving_old)
    namespace, job_name = job["metadata"]["namespace"], job["metadata"]["name"]
    set_condition(actions.status, ConditionType.ENGINE_READY, False, Reason.ENGINE_BUILDING.value,
                  f"Job {namespace}/{job_name} is building engine {name}", snapshot.now, snapshot.generation)
    return False


def cancelled_status(engine: dict[str, Any] | None, why: str, now: str) -> dict[str, Any] | None:
    """The status patch of an LLMEngine whose build Job was deleted before it finished
    (``why``: by whom, or with whose deletion), or None if the record does not say it is
    building: it names a Job that is gone, and no service waits on it any more."""
    conditions = ((engine or {}).get("status") or {}).get("conditions") or []
    if engine is None or (get_condition(conditions, ConditionType.READY.value) or {}).get("reason") != \
            Reason.ENGINE_BUILDING.value:
        return None
    return {"buildJob": None, "conditions": set_dict_condition(
        conditions, ConditionType.READY.value, False, Reason.ENGINE_BUILD_CANCELLED.value,
        f"its build Job was deleted before it finished: {why}; a service that wants the engine "
        "starts its build again", now)}


def _take_up(live: dict[str, Any], actions: Actions) -> None:
    """The statuses written onto a record that exists are written onto it as read, or not at
    all: only one of the services that saw a build end tells of it, and the sweep
    (controller/collect.py) deletes only the record it listed, so a record this service takes
    up again is unmarked before anything uses it, or this write fails on the deleted one."""
    actions.engine_version = live.get("metadata", {}).get("resourceVersion")
    if (live.get("status") or {}).get("unreferencedSince"):
        actions.engine_status = {"unreferencedSince": None}


def _job(snapshot: Snapshot, actions: Actions, rendered: Rendered, conditions: list[dict[str, Any]],
         owner: str) -> dict[str, Any]:
    """The build Job as it is, or as it will be once created (only the service whose create
    succeeds started the build: one BuildStarted Event, one count)."""
    wanted, job = rendered.build_job, snapshot.cluster.job
    check_engine_job(job, wanted, owner)
    if job is not None:
        uid = snapshot.ref.uid
        if uid and job_state(job) == "Running" and not owned_by_service(job, uid):
            # One owner of the Job among the services waiting on it: deleting the one that
            # started it leaves the build running for the others.
            actions.job_owners.append((job, join_owners(job, snapshot.ref.name, uid)))
        return job
    name, namespace = wanted["metadata"]["name"], wanted["metadata"]["namespace"]
    engine = rendered.engine["metadata"]["name"]
    actions.build_job = wanted
    actions.started = [("Normal", EventReason.BUILD_STARTED, f"building engine {engine} in Job {name}")]
    actions.started_engine_status = {"buildJob": name, "conditions": set_dict_condition(
        conditions, ConditionType.READY.value, False, Reason.ENGINE_BUILDING.value,
        f"Job {namespace}/{name} is building the engine", snapshot.now)}
    return wanted


def _failed(snapshot: Snapshot, actions: Actions, rendered: Rendered, conditions: list[dict[str, Any]],
            serving_old: bool) -> None:
    """A failed build stalls the service with what its pods said (read once, when it failed);
    the Job has already retried ``backoffLimit`` times."""
    job = rendered.build_job["metadata"]
    recorded = get_condition(conditions, ConditionType.READY.value) or {}
    if recorded.get("reason") == Reason.ENGINE_BUILD_FAILED.value:
        message = str(recorded["message"])
    else:
        message = (f"engine build Job {job['namespace']}/{job['name']} failed{snapshot.cluster.build_failure}. "
                   f"See `kubectl logs job/{job['name']} -n {job['namespace']}`, fix the cause and delete "
                   "the Job to retry")
        actions.engine_status = {**(actions.engine_status or {}), "conditions": set_dict_condition(
            conditions, ConditionType.READY.value, False, Reason.ENGINE_BUILD_FAILED.value, message, snapshot.now)}
        actions.finished = [("Warning", EventReason.BUILD_FAILED, message)]
    if serving_old:
        message += "; the previous engine keeps serving"
    set_condition(actions.status, ConditionType.ENGINE_READY, False, Reason.ENGINE_BUILD_FAILED.value,
                  message, snapshot.now, snapshot.generation)
    raise SpecInvalid(message, reason=Reason.ENGINE_BUILD_FAILED.value)
