"""The snapshot ``decide`` reads: every read one reconcile makes, in the order it needs them.

Reads go through the watch-fed caches where there are some (controller/cache.py); a child
missing there is asked of the API (an object someone else created is not in Kiln's
label-filtered caches) before anything is written: :func:`confirm_misses`; a leftover the
inventory names and the caches miss is asked of the API at once (:func:`_past_the_cache`). The children and the engine record are read concurrently (a few at a
time, kube.PARALLEL_CALLS): on a real API server each read is a round trip, and one after
the other they made most of a new service's reconcile. The first refusal, in the order of
the children, ends the snapshot: ``decide`` stops there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ..decide.claim import claim_key
from ..decide.conditions import get_condition, is_true, one_line
from ..decide.decide import children, needed_apis
from ..decide.engine import job_state, termination
from ..decide.intent import intend, parse, workload_replicas
from ..decide.policy import Policy
from ..decide.snapshot import Actions, Cluster, Intent, Observed, Parsed, Snapshot
from ..decide.status import parse_status
from ..errors import PlanRefused, SpecInvalid
from ..api import API_VERSION, ConditionType, LLMServiceStatus, Reason
from ..render import Rendered, ServiceRef
from ..render.meta import LABEL_COMPONENT, child_name, selector_string
from ..render.purge import PURGE_COMPONENT
from ..render import inventory as inventory_of
from .claims import gateway_claims
from .collect import seconds_between, superseded_build
from .credentials import read_credentials
from .cache import UNSCHEDULABLE_MESSAGE_CHARS
from .kube import API_VERSION_OF, ApiException, KubeApi, concurrently
from .models import ModelResolver
from .ownership import check_launcher_targets, live_child

__all__ = ["gather", "confirm_misses", "refused_write", "unwanted"]


async def gather(body: Mapping[str, Any], api: KubeApi, models: ModelResolver, now: str,
                 policy: Policy, observed: Observed | None = None, parsed: Parsed | None = None) -> Snapshot:
    """``parsed``: the body's spec as :func:`kiln.decide.parse` returned it, if the caller
    has already parsed it (the autoscale timer); parsed here otherwise."""
    meta = body["metadata"]
    ref = ServiceRef(meta["name"], meta["namespace"], meta.get("uid"))
    snapshot = Snapshot(ref, meta.get("generation"), parse_status(body.get("status")), now, policy,
                        observed=observed or Observed())
    if parsed is None:
        try:
            parsed = parse(ref, body.get("spec"), policy)
        except SpecInvalid as error:
            return replace(snapshot, parsed=error)
    secret = parsed.spec.model.credentials.secret_name if parsed.spec.model.credentials else None
    try:
        credentials = await read_credentials(api, ref.namespace, secret)
    except SpecInvalid as error:
        return replace(snapshot, parsed=parsed, credentials=error)
    model, why = await models.resolve(parsed.spec, credentials.token)
    decision = snapshot.observed.decision
    desired = decision.desired if decision else snapshot.status.desired_replicas
    snapshot = replace(snapshot, parsed=parsed, credentials=credentials, model=model, model_why=why)
    try:
        intent = intend(ref, parsed, model, workload_replicas(parsed.spec, desired), policy.platform)
    except PlanRefused as error:  # a layout the model cannot take: the service stalls saying so
        return replace(snapshot, intent=error)
    snapshot = replace(snapshot, intent=intent)
    if not isinstance(intent.rendered, Rendered):
        return snapshot
    return replace(snapshot, cluster=await _cluster(api, snapshot, intent.rendered))


async def _cluster(api: KubeApi, snapshot: Snapshot, rendered: Rendered) -> Cluster:
    """The children, the engine and its build as the API server holds them."""
    ref, previous = snapshot.ref, snapshot.status.engine
    superseded = None
    if previous is not None and previous.name != rendered.engine["metadata"]["name"]:
        superseded = await superseded_build(api, ref.namespace, ref.name, previous.name)
    serves = frozenset([need for need in needed_apis(snapshot, rendered) if await api.serves(*need)])
    key = claim_key(snapshot.parsed.spec, ref) if isinstance(snapshot.parsed, Parsed) else None
    claims = await gateway_claims(api, *key, ref.namespace, ref.name) if key else ()
    cluster = Cluster(serves=serves, superseded=superseded, gateway_claims=claims)
    wanted = children(rendered)
    stale = unwanted(recorded(snapshot.status, snapshot.generation), wanted, ref.name, ref.namespace)
    # The reads are independent: in flight together, the engine record's too. A child the
    # watch caches miss is read from the API only if this reconcile writes (confirm_misses).
    *reads, engine = await concurrently([*(api.get(*_address(child)) for child in [*wanted, *stale]),
                                         api.get(API_VERSION, "LLMEngine", rendered.engine["metadata"]["name"])])
    lives, refusal = _lives(wanted, reads[:len(wanted)], rendered, ref.namespace)
    if refusal is not None:
        return replace(cluster, children=lives, read_refusal=refusal)
    if isinstance(engine, Exception):
        raise engine
    leftovers = await _past_the_cache(api, stale, reads[len(wanted):])
    cluster = replace(cluster, children=lives, leftovers=_leftovers(stale, leftovers),
                      **await _serving_pods(api, snapshot, rendered, lives))
    try:
        await _launcher_targets(api, rendered, lives, f"{ref.namespace}/{ref.name}")
    except SpecInvalid as conflict:
        return replace(cluster, launcher_conflict=conflict)
    return await _engine(api, cluster, rendered, engine, snapshot.now)


async def _serving_pods(api: KubeApi, snapshot: Snapshot, rendered: Rendered,
                        lives: Mapping[tuple[str, str], dict[str, Any] | None]) -> dict[str, Any]:
    """A serving pod the scheduler cannot place (``PodScheduled`` False, ``Unschedulable``, as
    kube-scheduler writes it: k8s.io/kubernetes ``pkg/scheduler/schedule_one.go``,
    ``handleSchedulingFailure``) and its message, the first by name; read (from the pod
    cache) only while the workload has fewer ready replicas than the rollout wants. A build
    Job's pod is read the same way while the Job has none ready (:func:`_engine`). For a
    multi-node group with fewer pods than its replicas need, why the namespace refuses them
    (:func:`_group_refusal`); a Deployment's refusal is in its own status."""
    workload = lives.get((rendered.workload["kind"], rendered.workload["metadata"]["name"]))
    wanted = snapshot.intent.replicas if isinstance(snapshot.intent, Intent) else 0
    if workload is None or int(((workload.get("status") or {}).get("readyReplicas")) or 0) >= wanted:
        return {}
    ref = snapshot.ref
    # A multi-node group's workers are placed apart from its leader (component "worker").
    group = rendered.workload["kind"] == "LeaderWorkerSet"
    components = ["server", "worker"] if group else ["server"]
    pods = await concurrently([api.list("v1", "Pod", ref.namespace, selector_string(ref.name, c)) for c in components])
    for listed in pods:
        if isinstance(listed, Exception):
            raise listed
    every = [pod for listed in pods if isinstance(listed, list) for pod in listed]
    found: dict[str, Any] = {"unschedulable": _unscheduled(every), "failing": _failing(every)}
    size = int(((rendered.workload.get("spec") or {}).get("leaderWorkerTemplate") or {}).get("size") or 1)
    if group and len(every) < wanted * size:
        found["refused"] = await _group_refusal(api, ref.namespace, rendered.workload["metadata"]["name"], snapshot.now)
    return found


# A StatefulSet's refusals older than this are not read as the reason pods are missing now:
# its controller retries a refused create with the work queue's back-off, at most 1,000 s
# apart (client-go, util/workqueue DefaultControllerRateLimiter), and each retry refused
# again renews the Event's lastTimestamp.
REFUSAL_RECENT_SECONDS = 1200.0


async def _group_refusal(api: KubeApi, namespace: str, group: str, now: str) -> str | None:
    """Why a multi-node group's pods are missing: the StatefulSet controller's last
    ``FailedCreate`` Event on the group's StatefulSets (the LeaderWorkerSet's own, named after
    it, makes the leaders; each leader's, ``<group>-<index>``, its workers: kubernetes-sigs/lws
    pkg/controllers), recorded as the controller's pod control does (kubernetes/kubernetes,
    pkg/controller/statefulset/stateful_pod_control.go, ``recordPodEvent``); None if there is
    none within :data:`REFUSAL_RECENT_SECONDS`."""
    events = await api.list("v1", "Event", namespace, field_selector="involvedObject.kind=StatefulSet,reason=FailedCreate")
    names = re.compile(rf"{re.escape(group)}(-\d+)?")
    return _latest([event for event in events if event.get("reason") == "FailedCreate"
                    and (event.get("involvedObject") or {}).get("kind") == "StatefulSet"
                    and names.fullmatch(str((event.get("involvedObject") or {}).get("name") or ""))],
                   now, REFUSAL_RECENT_SECONDS)


def _unscheduled(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The first of ``pods`` by name that the scheduler cannot place, and its message."""
    for pod in sorted(pods, key=lambda p: str(p["metadata"].get("name"))):
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if (condition.get("type"), condition.get("status"), condition.get("reason")) == \
                    ("PodScheduled", "False", "Unschedulable"):
                return str(pod["metadata"]["name"]), one_line(condition.get("message"), UNSCHEDULABLE_MESSAGE_CHARS)
    return None


def _failing(pods: list[dict[str, Any]]) -> tuple[str, str, int] | None:
    """The first of ``pods`` by name whose container exited with a failure, now or before its
    last restart (``lastState``: a crash loop's container waits in CrashLoopBackOff), with how
    it ended (:func:`kiln.decide.engine.termination`) and its restarts."""
    for pod in sorted(pods, key=lambda p: str(p["metadata"].get("name"))):
        if is_true((pod.get("status") or {}).get("conditions") or [], "Ready"):
            continue  # serving again: a failure before its last restart is over
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            for key in ("state", "lastState"):
                ended = termination({"name": container.get("name"), "state": container.get(key) or {}})
                if ended is not None:
                    return str(pod["metadata"]["name"]), ended, int(container.get("restartCount") or 0)
    return None


def recorded(status: LLMServiceStatus, generation: int | None) -> list[str] | None:
    """What the service may have made, as far as its status knows: the inventory, or None
    when anything it could make may be out there.

    Every status write names what was applied and what that generation's spec asks for
    (decide records it before anything is applied), so the only children it can miss are
    those of a reconcile whose status write never came (the operator stopped in between):
    made for a generation after ``observedGeneration``. While the generation is the next one,
    the spec is the one that reconcile read and asks for them again; two or more generations
    on, it may not, and everything is read once. A service never reconciled at generation 1
    has made nothing; one an operator without the inventory reconciled (``children`` absent)
    may have made anything: read until a reconcile records it (decide keeps the leftovers it
    controls in it)."""
    observed = status.observed_generation
    if observed is None:
        return [] if (generation or 1) <= 1 else None
    if generation is not None and generation - observed > 1:
        return None
    return status.children


def unwanted(inventory: list[str] | None, wanted: list[dict[str, Any]], instance: str,
             namespace: str) -> list[dict[str, Any]]:
    """The objects the inventory names that the spec no longer asks for, to read (their
    identity only); ``inventory`` None: every object :func:`kiln.render.inventory` can make
    for this service. An entry that is not one of those is ignored: the status is not a way
    to name someone else's object."""
    if inventory == []:
        return []
    possible, asked = inventory_of(instance), {(child["kind"], child["metadata"]["name"]) for child in wanted}
    if inventory is None:
        inventory = [f"{kind}/{name}" for kind, name in sorted(possible)]
    stale = []
    for entry in dict.fromkeys(inventory):
        kind, _, name = entry.partition("/")
        if (kind, name) in possible and (kind, name) not in asked:
            stale.append({"apiVersion": API_VERSION_OF[kind], "kind": kind,
                          "metadata": {"name": name, "namespace": namespace}})
    return stale


async def _past_the_cache(api: KubeApi, stale: list[dict[str, Any]],
                          reads: list[dict[str, Any] | None | Exception]) -> list[dict[str, Any] | None | Exception]:
    """The stale objects' reads, those the watch caches missed read again from the API.

    A miss is no answer for an object the inventory names: one made by the generation
    before and unwanted by this one within the cache's lag is not there yet, and, read as
    gone, would drop off the inventory and stay in the cluster. The API's answer decides."""
    caches = getattr(api, "caches", None)
    missed = [i for i, (obj, read) in enumerate(zip(stale, reads))
              if read is None and caches is not None and caches(obj["apiVersion"], obj["kind"])]
    if not missed:
        return reads
    fresh = await concurrently(api.get_fresh(*_address(stale[i])) for i in missed)
    reads = list(reads)
    for i, read in zip(missed, fresh):
        reads[i] = read
    return reads


def _leftovers(stale: list[dict[str, Any]], reads: list[dict[str, Any] | None | Exception]
               ) -> dict[tuple[str, str], dict[str, Any] | None]:
    """The stale objects as read. One the operator may not read (a 403: the platform team
    has taken the verb away, or never gave it in that namespace) or whose API is gone is
    left alone, and falls off the inventory; any other failure is raised."""
    found: dict[tuple[str, str], dict[str, Any] | None] = {}
    for obj, read in zip(stale, reads):
        if isinstance(read, ApiException) and read.status in (403, 404):
            read = None
        if isinstance(read, Exception):
            raise read
        found[(obj["kind"], obj["metadata"]["name"])] = read
    return found


def _address(child: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
    meta = child["metadata"]
    return child["apiVersion"], child["kind"], meta["name"], meta.get("namespace")


def _lives(wanted: list[dict[str, Any]], reads: list[dict[str, Any] | None | Exception], rendered: Rendered,
           namespace: str) -> tuple[dict[tuple[str, str], dict[str, Any] | None], SpecInvalid | None]:
    """The children as read, up to the first refusal (returned too); any other failure is raised."""
    lives: dict[tuple[str, str], dict[str, Any] | None] = {}
    for child, read in zip(wanted, reads):
        if isinstance(read, ApiException):
            refusal = refused_write(read, namespace, child in rendered.gateway)
            if not isinstance(refusal, SpecInvalid):
                raise refusal from None
            return lives, refusal
        if isinstance(read, Exception):
            raise read
        lives[(child["kind"], child["metadata"]["name"])] = read
    return lives, None


async def confirm_misses(api: KubeApi, snapshot: Snapshot, actions: Actions) -> Snapshot | None:
    """Before a reconcile writes, the children the watch caches missed, read from the API.

    The caches hold only objects labelled as Kiln's: a miss is either no object or someone
    else's, and only the API can tell (controller/ownership.py). A reconcile that writes
    nothing (a build or a rollout followed tick by tick) acts on the cache as it is; one
    that writes anything (the build Job included, so that a name conflict stops a service
    before its build) reads its misses first. Returns the snapshot with what turned up,
    for ``decide`` to decide again, or None if nothing did (or nothing is written)."""
    cluster, intent = snapshot.cluster, snapshot.intent
    caches = getattr(api, "caches", None)
    if cluster is None or caches is None or not _writes(actions) or intent is None \
            or not isinstance(intent.rendered, Rendered):
        return None
    rendered = intent.rendered
    missed = [child for child in children(rendered)
              if (child["kind"], child["metadata"]["name"]) in cluster.children
              and cluster.children[(child["kind"], child["metadata"]["name"])] is None
              and caches(child["apiVersion"], child["kind"])]
    if not missed:
        return None
    reads = await concurrently(api.get_fresh(*_address(child)) for child in missed)
    found, refusal = _lives(missed, reads, rendered, snapshot.ref.namespace)
    if refusal is not None:
        return replace(snapshot, cluster=replace(cluster, read_refusal=refusal))
    found = {key: live for key, live in found.items() if live is not None}
    if not found:
        return None
    return replace(snapshot, cluster=replace(cluster, children={**cluster.children, **found}))


def _writes(actions: Actions) -> bool:
    return bool(actions.apply or actions.delete or actions.engine_record is not None
                or actions.build_job is not None or actions.engine_status is not None)


async def _launcher_targets(api: KubeApi, rendered: Rendered,
                            lives: Mapping[tuple[str, str], dict[str, Any] | None], owner: str) -> None:
    workload = rendered.workload
    live = lives.get((workload["kind"], workload["metadata"]["name"]))
    for role in (child for child in rendered.access if child["kind"] == "Role"):
        try:
            await check_launcher_targets(api, role, workload, live, owner)
        except ApiException as error:
            raise refused_write(error, role["metadata"]["namespace"]) from None


async def _engine(api: KubeApi, cluster: Cluster, rendered: Rendered, engine: dict[str, Any] | None,
                  now: str) -> Cluster:
    """The LLMEngine record (as read); while it is not Ready, its build Job, and what the pods
    of a build that failed said (once: the record keeps it); with no build Job, a running Job
    that removes the engine's files from the cache."""
    conditions = ((engine or {}).get("status") or {}).get("conditions", [])
    if engine is not None and is_true(conditions, ConditionType.READY.value):
        return replace(cluster, engine=engine)
    job = await live_child(api, rendered.build_job)
    if job is None:
        purge = await live_child(api, {**rendered.build_job, "metadata": {
            "name": child_name(rendered.engine["metadata"]["name"], "purge"),
            "namespace": rendered.build_job["metadata"]["namespace"]}})
        if purge is not None and job_state(purge) == "Running" and \
                (purge["metadata"].get("labels") or {}).get(LABEL_COMPONENT) == PURGE_COMPONENT:
            return replace(cluster, engine=engine, purging=str(purge["metadata"]["name"]))
    failure, unplaced, refused = "", None, None
    recorded = get_condition(conditions, ConditionType.READY.value) or {}
    meta = rendered.build_job["metadata"]
    if job is not None and job_state(job) == "Failed" and recorded.get("reason") != Reason.ENGINE_BUILD_FAILED.value:
        failure = await _build_failure(api, meta["namespace"], meta["name"])
    elif job is not None and job_state(job) == "Running" and not (job.get("status") or {}).get("ready"):
        pods = await api.list("v1", "Pod", meta["namespace"], label_selector=f"job-name={meta['name']}")
        unplaced = _unscheduled(pods)
        if not pods:
            refused = await _build_refusal(api, job, now)
    return replace(cluster, engine=engine, job=job, build_failure=failure, build_unschedulable=unplaced,
                   build_refused=refused)


async def _build_refusal(api: KubeApi, job: dict[str, Any], now: str) -> str | None:
    """Why a running build Job has no pod: the Job controller's last ``FailedCreate`` Event
    for it, the API server's refusal ("Error creating: pods ... is forbidden: exceeded
    quota: ..."), as its pod control records it (kubernetes/kubernetes,
    pkg/controller/controller_utils.go, ``RealPodControl.createPods``); None if there is none
    (a Job seconds old, whose pod is on its way)."""
    meta = job["metadata"]
    if not meta.get("uid"):
        return None
    events = [event for event in await api.list("v1", "Event", meta["namespace"],
                                                field_selector=f"involvedObject.uid={meta['uid']},reason=FailedCreate")
              if (event.get("involvedObject") or {}).get("uid") == meta["uid"] and event.get("reason") == "FailedCreate"]
    return _latest(events, now, float("inf"))


# How far ahead of the operator's clock an Event may be dated (clock skew between the
# controller that wrote it and the operator); one dated later is not taken as the latest.
EVENT_SKEW_SECONDS = 60.0


def _latest(events: list[dict[str, Any]], now: str, within: float) -> str | None:
    """The message of the latest of ``events`` dated within ``within`` seconds before
    ``now`` (an Event's ``lastTimestamp``, else its ``eventTime``), as ``one_line`` keeps it
    (anyone who may post Events in the namespace wrote it)."""
    dated = []
    for event in events:
        at = str(event.get("lastTimestamp") or event.get("eventTime") or "")
        if at and -EVENT_SKEW_SECONDS <= seconds_between(at, now) <= within:
            dated.append((at, one_line(event.get("message"), UNSCHEDULABLE_MESSAGE_CHARS)))
    if not dated:
        return None
    return max(dated)[1] or None


async def _build_failure(api: KubeApi, namespace: str, job_name: str) -> str:
    """What the last build pod said as it failed: the step and its last output lines."""
    pods = await api.list("v1", "Pod", namespace, label_selector=f"job-name={job_name}")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        status = pod.get("status") or {}
        for container in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
            if (ended := termination(container)) is not None:
                return ended
    return ""


def refused_write(error: ApiException, namespace: str, gateway: bool = False) -> Exception:
    """A 403 on the multi-node leader's Role, or on a gateway's objects, is the platform
    team's choice, not an outage: the chart grants those writes only in multiNode.namespaces
    and gateway.namespaces. Anything else is returned as it is."""
    if error.status == 403 and gateway:
        return SpecInvalid(
            f"spec.gateway: the operator may not write the gateway's objects (HTTPRoute, "
            f"InferencePool, the endpoint picker's Role) in namespace {namespace}; ask the "
            "platform team to add it to the chart's gateway.namespaces, or remove spec.gateway",
            reason=Reason.MISSING_DEPENDENCY.value)
    if error.status == 403 and "role" in str(error.reason).lower():
        return SpecInvalid(
            f"spec.gpus: a multi-node service needs a Role for its leader, and the operator may "
            f"not write Roles in namespace {namespace}; ask the platform team to add it to the "
            "chart's multiNode.namespaces, or use gpus <= gpu.perNode",
            reason=Reason.MISSING_DEPENDENCY.value)
    return error
