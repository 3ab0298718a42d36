"""``decide(snapshot) -> Actions``: the one reconcile of an LLMService, as a pure function.

In order: what the timers observed; the spec and the platform team's policy; the plan and
``Fits``; the service's addresses; the APIs the spec needs; who owns the children; the engine
(reused, building, failed, built); the children to apply; the rollout. The first refusal
stalls the service (``SpecInvalid``), a wait requeues it (``NotReadyYet``), and ``Ready``
follows from ``Stalled`` and ``Reconciling`` (:func:`kiln.decide.status.conclude`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from ..api import AutoscalingMode, ConditionType, LLMServiceStatus, Reason
from ..api.llmservice import Condition, EndpointsStatus, EngineRef, ScaleFromZeroStatus
from ..errors import NotReadyYet, PlanRefused, SpecInvalid
from ..planner import Plan, cold_start_seconds
from ..render import (SPEC_HASH_ANNOTATION, Rendered, ServiceRef, endpoint, multi_node, openai_endpoint,
                      workload_keys)
from ..render.gateway import DESTINATION_RULE_API, HTTP_ROUTE_API, INFERENCE_POOL_API
from ..render.meta import ENGINE_KEY_ANNOTATION, selector_string
from ..render.scaling import SCALED_OBJECT_API
from ..render.wake import HTTP_SCALED_OBJECT_API, hold_seconds
from .claim import claim_gateway, gateway_ready
from .credentials import check_secret_keys
from .engine import cancelled_status, engine_ready, storage_uri
from .observe import EventReason, observe
from .ownership import check_controlled, controller_of, let_go
from .snapshot import Actions, Cluster, Snapshot
from .conditions import one_line
from .status import conclude, get_condition, is_true, set_condition

__all__ = ["decide", "refuse", "rolled_out", "retired", "removed", "children", "entry", "live_route",
           "BUILD_POLL_SECONDS", "ROLLOUT_POLL_SECONDS"]

BUILD_POLL_SECONDS = 15.0
ROLLOUT_POLL_SECONDS = 5.0
# How soon a reconcile that wrote its inventory ahead of an apply comes back to apply.
INVENTORY_FIRST_SECONDS = 1.0
# The LeaderWorkerSet release Kiln's multi-node workloads are written and tested against.
LWS_MANIFESTS = "https://github.com/kubernetes-sigs/lws/releases/download/v0.10.0/manifests.yaml"
GATEWAY_INSTALL = ("the Gateway API CRDs (kubectl apply --server-side -f https://github.com/"
                   "kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml) "
                   "and the Inference Extension's (kubectl apply --server-side -f https://github.com/"
                   "kubernetes-sigs/gateway-api-inference-extension/releases/download/v1.5.0/"
                   "manifests.yaml)")
KEDA_INSTALL = "KEDA (helm install keda kedacore/keda --namespace keda --create-namespace)"
HTTP_ADD_ON_INSTALL = (f"{KEDA_INSTALL} and its HTTP add-on (helm install http-add-on kedacore/keda-add-ons-http "
                       "--namespace keda)")

T = TypeVar("T")


def decide(snapshot: Snapshot) -> Actions:
    """Everything one reconcile does about ``snapshot``; reads nothing else."""
    actions = Actions(status=snapshot.status.model_copy(deep=True))
    before = get_condition(snapshot.status, ConditionType.STALLED.value)
    actions.events += observe(actions.status, snapshot.observed, snapshot.now, snapshot.generation)
    try:
        _reconcile(snapshot, actions)
    except SpecInvalid as error:
        refuse(actions, error, before, snapshot.now, snapshot.generation)
    except NotReadyYet as error:
        # A value, not a raised exception: its traceback would hold this call's frames, and
        # with them the actions that hold it, in a cycle only a garbage collection frees.
        actions.requeue = error.with_traceback(None)
    actions.status.observed_generation = snapshot.generation
    return actions


def refuse(actions: Actions, error: SpecInvalid, before: Condition | None, now: str,
           generation: int | None) -> None:
    """Stalled with the refusal's reason and message; one Event per transition, not one per
    resync of a service that stays stalled."""
    reason = Reason(error.reason) if error.reason in Reason._value2member_map_ else Reason.SPEC_INVALID
    conclude(actions.status, stalled=True, reconciling=False, reason=reason, message=error.message,
             now=now, generation=generation)
    if before is None or (before.status, before.message) != ("True", error.message):
        actions.events.append(("Warning", error.reason, error.message))
    actions.requeue = None if error.retry_after is None else NotReadyYet(error.message, delay=error.retry_after)
    actions.rollout = None


def _given(value: T | SpecInvalid | None) -> T:
    """A snapshot input, or the refusal met while reading it."""
    if isinstance(value, SpecInvalid):
        raise value
    assert value is not None, "the snapshot stops at the first refusal"
    return value


def _reconcile(snapshot: Snapshot, actions: Actions) -> None:
    parsed = _given(snapshot.parsed)
    credentials = _given(snapshot.credentials)
    check_secret_keys(parsed.spec, credentials, snapshot.ref.namespace)
    intent = _given(snapshot.intent)
    status, ref = actions.status, snapshot.ref
    _plan_status(status, intent.plan, snapshot.model_why, snapshot.now, snapshot.generation)
    rendered = _given(intent.rendered)
    _cancel_superseded(snapshot, actions, rendered)
    previous_key = status.engine.key if status.engine else None
    _addresses(status, ref, parsed.spec, intent.plan, rendered, snapshot.cluster)
    cluster, owner = snapshot.cluster, f"{ref.namespace}/{ref.name}"
    objects = children(rendered)
    _record(status, cluster, objects, ref.uid)
    _check_dependencies(snapshot, rendered)
    if cluster.read_refusal is not None:
        raise cluster.read_refusal
    lives = [cluster.children.get(_key(child)) for child in objects]
    handing = _handed_over(snapshot, objects, lives)
    for child, live in zip(objects, lives):
        if _key(child) not in handing:
            check_controlled(live, child, ref.uid, owner)
    if cluster.launcher_conflict is not None:
        raise cluster.launcher_conflict
    claim_gateway(status, parsed.spec, ref, cluster, live_route(objects, lives, cluster), actions)
    workload = cluster.children.get(_key(rendered.workload))
    serving_old = workload is not None and \
        workload["metadata"].get("annotations", {}).get(ENGINE_KEY_ANNOTATION) != rendered.engine["spec"]["key"]
    if not engine_ready(snapshot, actions, rendered, credentials, previous_key != rendered.engine["spec"]["key"],
                        serving_old):
        _wait_for_build(status, rendered, workload, serving_old, snapshot)
    set_condition(status, ConditionType.ENGINE_READY, True, Reason.ENGINE_BUILT.value,
                  f"engine {rendered.engine['metadata']['name']} is built", snapshot.now, snapshot.generation)
    # In order: the pods' ServiceAccounts (and Role) before the pods, then the rest.
    apply = [child for child, live in zip(objects, lives) if _changed(child, live) and _key(child) not in handing]
    _inventory_first(snapshot, apply)
    actions.apply = apply
    actions.workload, actions.gateway = rendered.workload, rendered.gateway
    actions.workload_generation = ((workload or {}).get("metadata") or {}).get("generation")
    actions.rollout = (intent.replicas, snapshot.now, snapshot.generation)
    actions.unschedulable = cluster.unschedulable
    actions.failing = cluster.failing
    actions.refused = cluster.refused
    _prune(snapshot, actions, objects)
    rolled_out(actions, workload)
    gateway_ready(status, parsed.spec, ref, cluster, snapshot.now, snapshot.generation)
    retired(actions)
    if handing:
        _wait_for_handover(actions, handing, snapshot)


def live_route(objects: list[dict[str, Any]], lives: list[dict[str, Any] | None],
               cluster: Cluster) -> dict[str, Any] | None:
    """The service's HTTPRoute as the API server holds it: the one its spec asks for, or one
    it no longer asks for (``spec.gateway`` removed) that is still there until it is pruned."""
    asked = [live for child, live in zip(objects, lives) if child["kind"] == "HTTPRoute" and live]
    left = [obj for (kind, _), obj in cluster.leftovers.items() if kind == "HTTPRoute" and obj]
    return next(iter(asked + left), None)


def _record(status: LLMServiceStatus, cluster: Cluster, objects: list[dict[str, Any]], uid: str | None) -> None:
    """The inventory names what this generation's spec asks for before anything is applied:
    a reconcile that waits (a build, an API the spec needs) writes it in its status, ahead
    of the apply once it can; one that applies writes it after, and a status write that never
    comes is what gather's ``recorded`` reads everything for. None kept yet: what an earlier
    operator left, if anything, once the leftovers could be read."""
    if status.children is None:
        if cluster.read_refusal is not None:
            return
        status.children = [entry(live) for live in cluster.leftovers.values()
                           if live is not None and _controlled(live, uid)]
    status.children = sorted({*status.children, *map(entry, objects)})


def _inventory_first(snapshot: Snapshot, apply: list[dict[str, Any]]) -> None:
    """A child the wanted set gains at the generation the status already covers (an operator
    upgrade that renders a new kind, a different model config from the Hub) is written into
    the inventory before it is applied: applied first, with the status write after it lost,
    the next spec change (one generation on, so gather trusts the inventory) would never read
    it. At a new generation the spec change itself covers it (gather's ``recorded``). The
    conditions stay as they are: the service is no less Ready for it."""
    known = snapshot.status.children
    if known is None or snapshot.generation != snapshot.status.observed_generation:
        return
    gained = sorted({entry(child) for child in apply} - set(known))
    if gained:
        raise NotReadyYet(f"recording {', '.join(gained)} in status.children before applying",
                          delay=INVENTORY_FIRST_SECONDS)


def _handed_over(snapshot: Snapshot, objects: list[dict[str, Any]],
                 lives: list[dict[str, Any] | None]) -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]:
    """The children whose name is still held by an object that one of the service's own
    leftovers made and controls: (kind, name) -> (that object, the leftover). KEDA's HTTP
    add-on makes a ScaledObject named after each HTTPScaledObject and controlled by it
    (kedacore/http-add-on, ``operator/controllers/http/scaled_object.go``), the name keda
    mode's ScaledObject has: after a change from keda-http to keda, the name is the
    service's to take once its HTTPScaledObject is deleted and the garbage collector has
    removed what it controlled. Anything else holding a child's name is a conflict."""
    held = {}
    for child, live in zip(objects, lives):
        ref = controller_of(live) if live is not None else None
        if live is None or ref is None:
            continue
        maker = snapshot.cluster.leftovers.get((str(ref.get("kind")), str(ref.get("name"))))
        if maker is not None and maker["metadata"].get("uid") == ref.get("uid") \
                and _controlled(maker, snapshot.ref.uid):
            held[_key(child)] = (live, maker)
    return held


def _wait_for_handover(actions: Actions, handing: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]],
                       snapshot: Snapshot) -> None:
    """Reconciling until the names :func:`_handed_over` found are free: NotReadyYet, to look
    again in ROLLOUT_POLL_SECONDS. A leftover its finalizers hold says whose they are."""
    waits = []
    for live, maker in handing.values():
        what = f"{maker['kind']} {maker['metadata']['name']}"
        wait = f"{live['kind']} {live['metadata']['name']} to be deleted with {what}, which the spec no longer asks for"
        finalizers = maker["metadata"].get("finalizers") or []
        if maker["metadata"].get("deletionTimestamp") and finalizers:
            wait += (f"; {what} waits on its finalizers ({', '.join(finalizers)}), which the controller "
                     f"that set them removes: if it is no longer installed, remove them by hand")
        waits.append(wait)
    message = "waiting for " + "; and for ".join(waits)
    conclude(actions.status, stalled=False, reconciling=True, reason=Reason.ROLLING_OUT, message=message,
             now=snapshot.now, generation=snapshot.generation)
    actions.requeue = NotReadyYet(message, delay=ROLLOUT_POLL_SECONDS)


def _prune(snapshot: Snapshot, actions: Actions, objects: list[dict[str, Any]]) -> None:
    """What the spec no longer asks for (a scaler after a change of ``autoscaling.mode``, the
    NetworkPolicy once it is disabled, the gateway's objects once ``spec.gateway`` is removed,
    the workload of the other kind after ``gpus`` crosses a node): deleted, if the service
    controls it, with its dependents. The previous workload goes only once the service is
    Ready on the new one (:func:`retired`), as an engine's does. The inventory becomes what
    is applied now and what is still to go (an object with finalizers stays on it, deleted
    once, until they are removed and it is gone); an object the service does not control
    (any more) falls off it, never deleted."""
    keep = []
    for (kind, name), live in snapshot.cluster.leftovers.items():
        if live is None or not _controlled(live, snapshot.ref.uid):
            continue
        if (kind, name) in workload_keys(snapshot.ref.name):
            actions.retire.append(live)
            keep.append(entry(live))
            continue
        if not live["metadata"].get("deletionTimestamp"):
            actions.delete.append(live)
            actions.events.append(("Normal", EventReason.REMOVED, removed(live)))
        if live["metadata"].get("finalizers"):
            keep.append(entry(live))  # still there until its finalizers are removed
    actions.status.children = sorted({*map(entry, objects), *keep})


def entry(obj: dict[str, Any]) -> str:
    """``obj`` as the inventory (``status.children``) names it: ``Kind/name``."""
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _controlled(live: dict[str, Any] | None, uid: str | None) -> bool:
    return live is not None and uid is not None and (controller_of(live) or {}).get("uid") == uid


def removed(obj: dict[str, Any]) -> str:
    return f"deleted {obj['kind']} {obj['metadata']['name']}: the spec no longer asks for it"


def retired(actions: Actions) -> list[dict[str, Any]]:
    """Once the service is Ready, the previous workload is to be deleted (and leaves the
    inventory): moved to ``actions.delete`` and returned."""
    if not actions.retire or not is_true(actions.status, ConditionType.READY.value):
        return []
    retiring, actions.retire = actions.retire, []
    gone = set(map(entry, retiring))
    actions.delete += retiring
    actions.events += [("Normal", EventReason.REMOVED, removed(obj)) for obj in retiring]
    actions.status.children = [entry for entry in actions.status.children or [] if entry not in gone]
    return retiring


def _plan_status(status: LLMServiceStatus, result: Plan, why_unknown: str, now: str,
                 generation: int | None) -> None:
    """``status.plan``, ``tpPp`` and ``Fits``; refused before any Job exists if TensorRT-LLM
    cannot build it or it does not fit."""
    previous, status.plan = status.plan, result.status()
    if previous is not None and previous.kv_cache_tokens == status.plan.kv_cache_tokens:
        # The observer's figures stand while the prediction they were compared with does.
        status.plan.observed_kv_cache_tokens = previous.observed_kv_cache_tokens
        status.plan.kv_cache_tokens_error = previous.kv_cache_tokens_error
    status.tp_pp = f"{result.tensor_parallel}x{result.pipeline_parallel}"
    if result.fits is False:
        message = "; ".join(result.reasons)
        reason, verdict = ((Reason.DOES_NOT_FIT, "does not fit") if result.buildable
                           else (Reason.NOT_BUILDABLE, "cannot be built"))
        set_condition(status, ConditionType.FITS, False, reason.value, message, now, generation)
        raise PlanRefused(f"{verdict}: {message}", reason=reason.value)
    if result.fits is None:
        set_condition(status, ConditionType.FITS, None, Reason.MODEL_CONFIG_UNKNOWN.value, why_unknown,
                      now, generation)
    else:
        set_condition(status, ConditionType.FITS, True, Reason.FITS.value,
                      f"{result.kv_cache_tokens} KV-cache tokens, "
                      f"{result.max_concurrent_sequences} sequences of maxSeqLen per replica", now, generation)


def _cancel_superseded(snapshot: Snapshot, actions: Actions, rendered: Rendered) -> None:
    """The spec moved on mid-build: a build nobody else wants would run for hours. One that
    another service waits on (its status names the engine, or it is one of the Job's owners)
    keeps running, and this service leaves its owners."""
    superseded, ref = snapshot.cluster.superseded, snapshot.ref
    previous = actions.status.engine.name if actions.status.engine else None
    if superseded is None or not previous or previous == rendered.engine["metadata"]["name"]:
        return
    job = superseded.job
    if let_go(job, ref.uid, superseded.wanted) is None:
        return
    # Carried out on the Job as read, and decided again on a fresh read if it moved
    # (controller/execute.py): another owner leaving first shifts the list, one joining
    # makes the delete wrong.
    actions.let_go = (job, ref.uid, superseded.wanted)
    actions.cancelled = [("Normal", EventReason.BUILD_CANCELLED,
                          f"deleted build Job {job['metadata']['name']}: no service wants engine "
                          f"{previous} any more")]
    status = cancelled_status(superseded.engine, f"LLMService {ref.namespace}/{ref.name} moved to engine "
                              f"{rendered.engine['metadata']['name']}", snapshot.now)
    if superseded.engine is not None and status is not None:
        actions.cancelled_engine = (superseded.engine, status)


def _addresses(status: LLMServiceStatus, ref: ServiceRef, spec: Any, result: Plan,
               rendered: Rendered, cluster: Cluster) -> None:
    """The engine the service serves or waits for, and where clients reach it: the OpenAI URL
    (``kubectl get -o wide``) once the Service that answers there exists, never a name that
    does not resolve yet."""
    engine = rendered.engine
    status.engine = EngineRef(name=engine["metadata"]["name"], key=engine["spec"]["key"],
                              storage_uri=storage_uri(engine),
                              build_job=rendered.build_job["metadata"]["name"])
    status.endpoint = endpoint(ref.name, ref.namespace)
    answering = next((obj for obj in rendered.wake if obj["kind"] == "Service"), rendered.service)
    openai_url = (openai_endpoint(spec, ref.name, ref.namespace)
                  if _key(answering) in cluster.children else None)
    status.endpoints = EndpointsStatus(openai=openai_url) if openai_url else None
    status.scale_from_zero = ScaleFromZeroStatus(
        url=openai_url or "", cold_start_seconds=cold_start_seconds(result), hold_seconds=hold_seconds(result),
    ) if spec.autoscaling.mode == AutoscalingMode.KEDA_HTTP else None
    status.selector = selector_string(ref.name, "server")


def _check_dependencies(snapshot: Snapshot, rendered: Rendered) -> None:
    """What the spec needs of the cluster and the platform team: Stalled, with what to
    install or ask for, until it is there (checked again at every reconcile)."""
    spec, serves = _given(snapshot.parsed).spec, snapshot.cluster.serves
    workload = rendered.workload
    if multi_node(spec) and spec.runtime.image and not snapshot.policy.multi_node_custom_images:
        # The leader holds a token that may exec into its workers; the code holding it must
        # be Kiln's runtime (which execs only into its group), not an image the author chose.
        raise SpecInvalid(
            "spec.runtime.image: a multi-node service runs Kiln's runtime image, because its "
            "leader holds a token that may exec into pods; remove spec.runtime.image, or ask "
            "the platform team to allow custom images there (the chart's multiNode.customImages)")
    if multi_node(spec) and (workload["apiVersion"], workload["kind"]) not in serves:
        raise SpecInvalid(
            f"spec.gpus: {spec.gpus} GPUs span {spec.gpus // spec.gpu.per_node} nodes, which needs "
            f"the LeaderWorkerSet API ({workload['apiVersion']}); it is not installed in this "
            f"cluster. Install it with `kubectl apply --server-side -f {LWS_MANIFESTS}`, or use "
            f"gpus <= gpu.perNode={spec.gpu.per_node}", reason=Reason.MISSING_DEPENDENCY.value)
    for api_version, kind in ((INFERENCE_POOL_API, "InferencePool"), (HTTP_ROUTE_API, "HTTPRoute")):
        if spec.gateway is not None and (api_version, kind) not in serves:
            raise SpecInvalid(
                f"spec.gateway: the cluster does not serve {kind} ({api_version}); install "
                f"{GATEWAY_INSTALL}, or remove spec.gateway", reason=Reason.MISSING_DEPENDENCY.value)
    if _istio(rendered) and (DESTINATION_RULE_API, "DestinationRule") not in serves:
        raise SpecInvalid(
            f"spec.gateway: the operator is set for an Istio Gateway (the chart's "
            f"gateway.provider: istio), whose DestinationRule ({DESTINATION_RULE_API}) the "
            f"cluster does not serve; install Istio, or ask the platform team to set "
            f"gateway.provider for the Gateway the cluster runs", reason=Reason.MISSING_DEPENDENCY.value)
    if spec.autoscaling.mode == AutoscalingMode.KEDA and (SCALED_OBJECT_API, "ScaledObject") not in serves:
        raise SpecInvalid(
            f"spec.autoscaling.mode: keda needs ScaledObject ({SCALED_OBJECT_API}), which the cluster "
            f"does not serve; install {KEDA_INSTALL}, or use mode builtin (no add-on)",
            reason=Reason.MISSING_DEPENDENCY.value)
    if spec.autoscaling.mode == AutoscalingMode.KEDA_HTTP and \
            (HTTP_SCALED_OBJECT_API, "HTTPScaledObject") not in serves:
        raise SpecInvalid(
            f"spec.autoscaling.mode: keda-http needs HTTPScaledObject ({HTTP_SCALED_OBJECT_API}), "
            f"which the cluster does not serve; install {HTTP_ADD_ON_INSTALL}",
            reason=Reason.MISSING_DEPENDENCY.value)


def needed_apis(snapshot: Snapshot, rendered: Rendered) -> list[tuple[str, str]]:
    """The optional APIs :func:`_check_dependencies` asks about, for the snapshot to read."""
    spec = _given(snapshot.parsed).spec
    needed = [(rendered.workload["apiVersion"], rendered.workload["kind"])] if multi_node(spec) else []
    if spec.gateway is not None:
        needed += [(INFERENCE_POOL_API, "InferencePool"), (HTTP_ROUTE_API, "HTTPRoute")]
    if _istio(rendered):
        needed.append((DESTINATION_RULE_API, "DestinationRule"))
    if spec.autoscaling.mode == AutoscalingMode.KEDA:
        needed.append((SCALED_OBJECT_API, "ScaledObject"))
    if spec.autoscaling.mode == AutoscalingMode.KEDA_HTTP:
        needed.append((HTTP_SCALED_OBJECT_API, "HTTPScaledObject"))
    return needed


def _istio(rendered: Rendered) -> bool:
    """Whether the service's gateway objects include Istio's DestinationRule."""
    return any(obj["kind"] == "DestinationRule" for obj in rendered.gateway)


def children(rendered: Rendered) -> list[dict[str, Any]]:
    """The service's own objects, in the order they are applied (the engine and its build Job
    are shared, and written apart)."""
    extras = (extra for extra in (rendered.network_policy, rendered.disruption_budget, rendered.scaler)
              if extra is not None)
    return [*rendered.access, rendered.workload, rendered.service, *extras, *rendered.gateway,
            *rendered.wake]


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _changed(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether ``desired`` must be applied: absent, or its spec hash differs from ``live``'s."""
    wanted = desired["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION)
    return live is None or live["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION) != wanted


def _wait_for_build(status: LLMServiceStatus, rendered: Rendered, workload: dict[str, Any] | None,
                    serving_old: bool, snapshot: Snapshot) -> None:
    """Reconciling while the engine builds: NotReadyYet, to look again in BUILD_POLL_SECONDS."""
    message = f"waiting for engine {rendered.engine['metadata']['name']} to build" + \
        ("; the previous engine keeps serving" if serving_old else "")
    reason = Reason.ENGINE_BUILDING
    if snapshot.cluster.build_unschedulable is not None:
        pod, why = snapshot.cluster.build_unschedulable
        message += f"; its build pod {pod} cannot be scheduled: {why} " + (
            _claims_hint(rendered.build_job, why) or f"(the build needs a node with {_gpus_of(rendered.build_job)} "
                                                     f"free GPUs of the type spec.gpu names: add such a node, or free one)")
        reason = Reason.UNSCHEDULABLE
    elif snapshot.cluster.build_refused is not None:
        namespace = rendered.build_job["metadata"]["namespace"]
        message += (f"; its build pod cannot be created: {snapshot.cluster.build_refused} (a ResourceQuota, "
                    f"LimitRange or admission policy of namespace {namespace} refuses it; the build needs "
                    f"{_gpus_of(rendered.build_job)} GPUs of the type spec.gpu names)")
        reason = Reason.PODS_REFUSED
    conclude(status, stalled=False, reconciling=True, reason=reason, message=message,
             now=snapshot.now, generation=snapshot.generation)
    _replica_status(status, workload)
    raise NotReadyYet(message, delay=BUILD_POLL_SECONDS)


def _replica_status(status: LLMServiceStatus, live: dict[str, Any] | None) -> int:
    observed = (live or {}).get("status") or {}
    status.replicas = int(observed.get("replicas") or 0)
    status.ready_replicas = int(observed.get("readyReplicas") or 0)
    return status.ready_replicas


def _observed(workload: dict[str, Any] | None, decided_generation: int | None) -> bool:
    """Whether the workload's controller has seen its spec: ``status.observedGeneration``, as
    the Deployment controller writes it, and the LeaderWorkerSet controller from LWS v0.9.0
    (kubernetes-sigs/lws, pkg/controllers/leaderworkerset_controller.go ``updateStatus``).
    Before v0.9.0 LWS writes none (v0.8.0's config/crd/bases/
    leaderworkerset.x-k8s.io_leaderworkersets.yaml: conditions, hpaPodSelector, readyReplicas,
    replicas, updatedReplicas): its status is taken as current once written, unless this
    reconcile's apply has just changed the spec (the generation moved from the one decided
    on). The controller answers a change well within a second; the next look comes
    ROLLOUT_POLL_SECONDS later. An LWS controller stopped for longer than that would be read
    as current, which only its observedGeneration could tell apart."""
    meta = (workload or {}).get("metadata") or {}
    observed = (workload or {}).get("status") or {}
    if meta.get("generation") is None:
        return True
    if "observedGeneration" in observed:
        return bool(observed["observedGeneration"] == meta["generation"])
    return (workload or {}).get("kind") == "LeaderWorkerSet" and bool(observed) \
        and meta["generation"] == decided_generation


def rolled_out(actions: Actions, workload: dict[str, Any] | None) -> None:
    """Ready, ScaledToZero or RollingOut, from the workload as the API server holds it (after
    the apply, if there was one): the last word on ``actions.status``."""
    assert actions.rollout is not None
    replicas, now, generation = actions.rollout
    status = actions.status
    ready = _replica_status(status, workload)
    current = _observed(workload, actions.workload_generation)
    actions.requeue = None
    if replicas == 0:
        wake = status.scale_from_zero
        conclude(status, stalled=False, reconciling=False, reason=Reason.SCALED_TO_ZERO, now=now,
                 generation=generation, message="scaled to zero replicas" + (
                     f"; the next request to {wake.url} wakes it (KEDA HTTP add-on), expected cold "
                     f"start {wake.cold_start_seconds} s" if wake else ""))
    elif ready >= 1 and current:
        conclude(status, stalled=False, reconciling=False, reason=Reason.REPLICAS_READY, now=now,
                 generation=generation,
                 message=f"{ready}/{replicas} replicas ready at {status.endpoint}{_unplaced(actions)}"
                         f"{_refused(workload, actions)}{_failing(actions, workload)}")
        if actions.unschedulable is not None or _refused(workload, actions) or actions.failing is not None:
            actions.requeue = NotReadyYet("a replica cannot be scheduled, created or started",
                                          delay=ROLLOUT_POLL_SECONDS)
    else:
        # Not Stalled when a pod cannot be placed, is refused or exits: a node may yet come
        # (a cluster autoscaler's, a drained one back), a quota be raised, a server recover.
        reason = Reason.ROLLING_OUT if actions.unschedulable is None else Reason.UNSCHEDULABLE
        if actions.unschedulable is None and actions.failing is not None:
            reason = Reason.SERVER_FAILING
        if _refused(workload, actions):
            reason = Reason.PODS_REFUSED
        message = (f"{ready}/{replicas} replicas ready{_unplaced(actions)}{_refused(workload, actions)}"
                   f"{_failing(actions, workload)}")
        conclude(status, stalled=False, reconciling=True, reason=reason, message=message,
                 now=now, generation=generation)
        actions.requeue = NotReadyYet(message, delay=ROLLOUT_POLL_SECONDS)


# The API server's refusal, as the ReplicaSet controller recorded it, kept in a message.
REFUSAL_CHARS = 400


def _refused(workload: dict[str, Any] | None, actions: Actions) -> str:
    """What the rollout's message adds when the namespace refuses a serving pod: the
    Deployment's ``ReplicaFailure`` condition, which the Deployment controller copies from
    its ReplicaSets' (kubernetes/kubernetes, pkg/controller/deployment/sync.go,
    ``getReplicaFailures``; the ReplicaSet controller writes it with reason ``FailedCreate``
    and the API server's message when a create is refused: pkg/controller/replicaset/
    replica_set_utils.go, ``calculateStatus``), and removes once none has it; a multi-node
    group's, from its StatefulSets' Events (``actions.refused``); "" otherwise."""
    why = actions.refused if (workload or {}).get("kind") == "LeaderWorkerSet" else None
    if (workload or {}).get("kind") == "Deployment":
        why = next((str(c.get("message") or c.get("reason") or "")
                    for c in ((workload or {}).get("status") or {}).get("conditions") or []
                    if c.get("type") == "ReplicaFailure" and c.get("status") == "True"), None)
    if not why:
        return ""
    namespace = ((workload or {}).get("metadata") or {}).get("namespace")
    if "PodSecurity" in why:
        advice = (f"the Pod Security level namespace {namespace} enforces refuses it: label the namespace "
                  "pod-security.kubernetes.io/enforce with a level that admits it (spec.network's IPC_LOCK "
                  "needs privileged)")
    else:
        advice = (f"a ResourceQuota, LimitRange or admission policy of namespace {namespace} refuses it: ask "
                  "for more, or lower spec.replicas")
    return f"; a serving pod cannot be created: {one_line(why, REFUSAL_CHARS)} ({advice})"


# How a serving container ended, as kept in a message.
FAILING_CHARS = 800


def _failing(actions: Actions, workload: dict[str, Any] | None) -> str:
    """What the rollout's message adds for a serving container that exited with a failure:
    the pod, how it ended (the container, the exit code, its last lines: kiln-runtime's error
    or the server's), its restarts and where its log is."""
    if actions.failing is None:
        return ""
    pod, ended, restarts = actions.failing
    namespace = ((workload or {}).get("metadata") or {}).get("namespace")
    log = f"kubectl logs -n {namespace} {pod}"
    return f"; pod {pod} exits {one_line(ended, FAILING_CHARS)} (" + (
        f"restarted {restarts} times; its log: {log} --previous)" if restarts else f"its log: {log})")


def _gpus_of(job: dict[str, Any]) -> str:
    """The GPUs a build Job's pod asks for (its extended resource's limit)."""
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    return next((str(n) for resource, n in limits.items() if "gpu" in resource), "its")


def _unplaced(actions: Actions) -> str:
    """What the rollout's message adds for a serving pod the scheduler cannot place."""
    if actions.unschedulable is None:
        return ""
    pod, why = actions.unschedulable
    return f"; pod {pod} cannot be scheduled: {why} " + (
        _claims_hint(actions.workload or {}, why) or "(each replica needs a node with free GPUs of the type "
                                                     "spec.gpu names: add such nodes, or lower spec.replicas)")


def _claims_hint(workload: dict[str, Any], why: str) -> str:
    """What to do when the scheduler's reason is a PersistentVolumeClaim, not a GPU; ""
    otherwise. Both messages are kube-scheduler's (v1.35.4, the test control plane's, run
    against a Node and an unbound or missing claim): its VolumeBinding filter's "pod has
    unbound immediate PersistentVolumeClaims", and 'persistentvolumeclaim "<name>" not found'."""
    if "persistentvolumeclaim" not in why.lower():
        return ""
    names = sorted(set(_claim_names(workload)))
    return (f"(the pod mounts the PersistentVolumeClaim{'s' if len(names) > 1 else ''} {', '.join(names) or '?'} "
            f"of this namespace: create {'them' if len(names) > 1 else 'it'}, the engine cache ReadWriteMany, "
            f"with a StorageClass that binds, as docs/operations/install.md shows)")


def _claim_names(obj: Any) -> Iterator[str]:
    """The claimName of every persistentVolumeClaim volume anywhere in ``obj``."""
    if isinstance(obj, dict):
        claim = obj.get("persistentVolumeClaim")
        if isinstance(claim, dict) and claim.get("claimName"):
            yield str(claim["claimName"])
        for value in obj.values():
            yield from _claim_names(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _claim_names(value)
