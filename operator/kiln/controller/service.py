"""The one reconcile for an LLMService: validate, plan, build the engine, deploy, report.

Idempotent: every step reads first and writes only what differs, so running it twice, or
after a restart at any point, converges on the same objects (names are deterministic; the
build Job is never created twice). Status is computed here and written once by the caller.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from enum import StrEnum
from collections.abc import Callable
from typing import Any

from ..api import API_VERSION, AutoscalingMode, ConditionType, Reason
from ..api.validation import check_service_name, parse_service_spec
from ..errors import NotReadyYet, PlanRefused, SpecInvalid
from ..planner import cold_start_seconds, plan, require_gpu
from ..render import (SPEC_HASH_ANNOTATION, Rendered, ServiceRef, endpoint, multi_node,
                      openai_endpoint, render)
from ..render.gateway import HTTP_ROUTE_API, INFERENCE_POOL_API
from ..render.wake import HTTP_SCALED_OBJECT_API, hold_seconds
from ..render.meta import ENGINE_KEY_ANNOTATION, selector_string
from .conditions import get_condition, is_true, set_condition
from ..autoscale import KVSample
from .kube import ApiException, KubeApi
from .collect import cancel_superseded_build
from .credentials import check_engine_credentials, read_credentials
from .models import ModelResolver
from .policy import Policy
from .ownership import (check_controlled, check_engine_job, check_launcher_targets, conflict,
                        live_child)

__all__ = ["Outcome", "EventReason", "reconcile_service", "observed_status", "BUILD_POLL_SECONDS",
           "ROLLOUT_POLL_SECONDS"]

BUILD_POLL_SECONDS = 15.0
# Relative error of the KV-token prediction above which the operator posts an Event.
PLAN_ERROR_EVENT_THRESHOLD = 0.15
ROLLOUT_POLL_SECONDS = 5.0
# The LeaderWorkerSet release Kiln's multi-node workloads are written and tested against.
LWS_MANIFESTS = "https://github.com/kubernetes-sigs/lws/releases/download/v0.10.0/manifests.yaml"


class EventReason(StrEnum):
    """Reasons of the Events the reconcile posts besides condition changes (the operator's
    build and cache-hit counters follow them)."""

    BUILD_STARTED = "BuildStarted"
    BUILD_SUCCEEDED = "BuildSucceeded"
    BUILD_FAILED = "BuildFailed"
    ENGINE_REUSED = "EngineReused"
    BUILD_CANCELLED = "BuildCancelled"
    PLAN_MISMATCH = "PlanMismatch"


@dataclass
class Outcome:
    """What one reconcile decided: the new status, Events to post, and whether to come back."""

    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    retry: NotReadyYet | None = None
    build_seconds: float | None = None  # run time of a build Job that completed in this pass


class _Status:
    def __init__(self, current: dict[str, Any], generation: int | None, now: str) -> None:
        self.data: dict[str, Any] = {k: v for k, v in current.items()
                                     if k not in ("kopf",)}
        self.data.setdefault("conditions", [])
        self.generation = generation
        self.now = now

    def condition(self, type_: ConditionType, status: bool | None, reason: Reason, message: str) -> None:
        self.data["conditions"] = set_condition(self.data["conditions"], type_.value, status,
                                                reason.value, message, self.now, self.generation)

    def stalled(self, reason: Reason, message: str) -> None:
        self.condition(ConditionType.STALLED, True, reason, message)
        self.condition(ConditionType.RECONCILING, False, reason, "")
        self.condition(ConditionType.READY, False, reason, message)

    def progressing(self, reason: Reason, message: str) -> None:
        self.condition(ConditionType.STALLED, False, reason, "")
        self.condition(ConditionType.RECONCILING, True, reason, message)
        self.condition(ConditionType.READY, False, reason, message)


def _job_state(job: dict[str, Any]) -> str:
    for condition in job.get("status", {}).get("conditions", []) or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"]
    return "Running"


async def _apply_if_changed(api: KubeApi, desired: dict[str, Any],
                            live: dict[str, Any] | None) -> dict[str, Any]:
    """Apply ``desired`` unless ``live`` (already checked to be the service's own) carries
    the same spec hash."""
    wanted = desired["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION)
    if live is not None and live["metadata"].get("annotations", {}).get(SPEC_HASH_ANNOTATION) == wanted:
        return live
    return await api.apply(desired)


GATEWAY_INSTALL = ("the Gateway API CRDs (kubectl apply --server-side -f https://github.com/"
                   "kubernetes-sigs/gateway-api/releases/download/v1.6.1/standard-install.yaml) "
                   "and the Inference Extension's (kubectl apply --server-side -f https://github.com/"
                   "kubernetes-sigs/gateway-api-inference-extension/releases/download/v1.6.0/"
                   "manifests.yaml)")


async def _require_gateway_apis(api: KubeApi, spec_has_gateway: bool) -> None:
    """spec.gateway needs the Gateway API and Inference Extension CRDs: Stalled, with the
    install commands, until the cluster serves them (checked again at every reconcile)."""
    if not spec_has_gateway:
        return
    for api_version, kind in ((INFERENCE_POOL_API, "InferencePool"), (HTTP_ROUTE_API, "HTTPRoute")):
        if not await api.serves(api_version, kind):
            raise SpecInvalid(
                f"spec.gateway: the cluster does not serve {kind} ({api_version}); install "
                f"{GATEWAY_INSTALL}, or remove spec.gateway", reason=Reason.MISSING_DEPENDENCY.value)


HTTP_ADD_ON_INSTALL = ("KEDA (helm install keda kedacore/keda --namespace keda --create-namespace) "
                       "and its HTTP add-on (helm install http-add-on kedacore/keda-add-ons-http "
                       "--namespace keda)")


async def _require_http_add_on(api: KubeApi, wakes: bool) -> None:
    """autoscaling.mode keda-http needs KEDA's HTTP add-on: Stalled, with the install
    commands, until the cluster serves HTTPScaledObject."""
    if wakes and not await api.serves(HTTP_SCALED_OBJECT_API, "HTTPScaledObject"):
        raise SpecInvalid(
            f"spec.autoscaling.mode: keda-http needs HTTPScaledObject ({HTTP_SCALED_OBJECT_API}), "
            f"which the cluster does not serve; install {HTTP_ADD_ON_INSTALL}",
            reason=Reason.MISSING_DEPENDENCY.value)


# Lines of a failed build's output shown in its condition message and Event.
FAILURE_LINES = 5


def _termination(container: dict[str, Any]) -> str | None:
    """How a container that failed ended: its step and last output lines, or None."""
    terminated = (container.get("state") or {}).get("terminated") or {}
    if not terminated or terminated.get("exitCode") == 0:
        return None
    text = str(terminated.get("message") or "").strip()
    try:
        summary = json.loads(text)
    except ValueError:
        summary = None
    where = ""
    if isinstance(summary, dict) and summary.get("step"):
        where = f" at step {summary['step']}"
        text = str(summary.get("message") or "").strip().removeprefix(f"step {summary['step']!r} failed: ")
    lines = [line for line in text.splitlines() if line.strip()][-FAILURE_LINES:]
    head = f"{where} (container {container.get('name')}, exit code {terminated.get('exitCode')})"
    return head + (": " + " / ".join(lines) if lines else "")


async def _build_failure(api: KubeApi, namespace: str, job_name: str) -> str:
    """What the last build pod said as it failed: the step and its last output lines.

    kiln-runtime writes a JSON summary to its termination-message file (``step``,
    ``message``); a container that died before that leaves the tail of its log there
    (``terminationMessagePolicy: FallbackToLogsOnError``). The Job has already retried
    ``backoffLimit`` times with the Job controller's exponential backoff."""
    pods = await api.list("v1", "Pod", namespace, label_selector=f"job-name={job_name}")
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True):
        status = pod.get("status") or {}
        for container in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
            if (ended := _termination(container)) is not None:
                return ended
    return ""


def _job_seconds(job: dict[str, Any]) -> float | None:
    status = job.get("status") or {}
    try:
        start = datetime.datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return None
    return (end - start).total_seconds()


async def _engine_ready(api: KubeApi, rendered: Rendered, st: _Status, out: Outcome,
                        new_key: bool, serving_old: bool, owner: str,
                        may_use: Callable[[dict[str, Any]], None]) -> bool:
    """Make sure the engine exists or is being built; True when it can be served.

    ``new_key``: the service did not reference this engine before, so finding it built
    already is a cache hit (another service, or an earlier spec, built it). ``serving_old``:
    the service's workload runs another engine, which keeps serving while this one is not
    ready."""
    engine_obj = rendered.engine
    name = engine_obj["metadata"]["name"]
    live = await api.get(API_VERSION, "LLMEngine", name)
    if live is None:
        live = await api.apply(engine_obj)
    elif (live.get("spec") or {}).get("key") != engine_obj["spec"]["key"]:
        # Names carry a digest of the key, not the key: a record whose key differs is
        # another engine, never a cache hit.
        raise conflict(engine_obj, owner, f"holds another engine (key {str((live.get('spec') or {}).get('key'))[:16]}..., "
                       f"not {engine_obj['spec']['key'][:16]}...)")
    may_use(live)
    conditions = (live.get("status") or {}).get("conditions", [])
    if is_true(conditions, "Ready"):
        if new_key:
            out.events.append(("Normal", EventReason.ENGINE_REUSED, f"engine {name} is already built; no build needed"))
        return True
    job_obj = rendered.build_job
    job_name = job_obj["metadata"]["name"]
    namespace = job_obj["metadata"]["namespace"]
    job = await live_child(api, job_obj)
    check_engine_job(job, job_obj, owner)
    if job is None:
        # Services that want the same engine reconcile concurrently: only the one whose create
        # succeeds started the build (one BuildStarted Event, one count).
        job = await api.create(job_obj)
        if job is not None:
            out.events.append(("Normal", EventReason.BUILD_STARTED,
                               f"building engine {name} in Job {job_name}"))
            await api.patch_status(live, {"buildJob": job_name, "conditions": set_condition(
                conditions, "Ready", False, Reason.ENGINE_BUILDING.value,
                f"Job {namespace}/{job_name} is building the engine", st.now)})
        else:
            job = await live_child(api, job_obj) or job_obj
            check_engine_job(job, job_obj, owner)
    state = _job_state(job)
    if state == "Complete":
        storage = f"pvc://{namespace}/{live['spec']['cache']['claimName']}/{live['spec']['key']}"
        await api.patch_status(live, {"storageUri": storage, "buildJob": job_name,
                                      "conditions": set_condition(
                                          conditions, "Ready", True, Reason.ENGINE_BUILT.value,
                                          f"built by Job {job_name}", st.now)})
        out.events.append(("Normal", EventReason.BUILD_SUCCEEDED, f"engine {name} is ready"))
        out.build_seconds = _job_seconds(job)
        return True
    if state == "Failed":
        recorded = get_condition(conditions, "Ready") or {}
        if recorded.get("reason") == Reason.ENGINE_BUILD_FAILED.value:
            message = recorded["message"]  # read from the pods once, when the build failed
        else:
            why = await _build_failure(api, namespace, job_name)
            message = (f"engine build Job {namespace}/{job_name} failed{why}. See `kubectl logs "
                       f"job/{job_name} -n {namespace}`, fix the cause and delete the Job to retry")
            await api.patch_status(live, {"conditions": set_condition(
                conditions, "Ready", False, Reason.ENGINE_BUILD_FAILED.value, message, st.now)})
            out.events.append(("Warning", EventReason.BUILD_FAILED, message))
        if serving_old:
            message += "; the previous engine keeps serving"
        st.condition(ConditionType.ENGINE_READY, False, Reason.ENGINE_BUILD_FAILED, message)
        raise SpecInvalid(message, reason=Reason.ENGINE_BUILD_FAILED.value)
    st.condition(ConditionType.ENGINE_READY, False, Reason.ENGINE_BUILDING,
                 f"Job {namespace}/{job_name} is building engine {name}")
    return False


async def reconcile_service(body: dict[str, Any], api: KubeApi, models: ModelResolver,
                            now: str, policy: Policy | None = None) -> Outcome:
    meta = body["metadata"]
    ref = ServiceRef(meta["name"], meta["namespace"], meta.get("uid"))
    generation = meta.get("generation")
    st = _Status(body.get("status") or {}, generation, now)
    out = Outcome(status=st.data)
    before = get_condition(st.data["conditions"], ConditionType.STALLED.value) or {}
    try:
        await _reconcile(body, ref, api, models, st, out, policy or Policy())
    except SpecInvalid as error:
        st.stalled(Reason(error.reason) if error.reason in Reason._value2member_map_
                   else Reason.SPEC_INVALID, error.message)
        # One Event per transition, not one per resync of a service that stays stalled.
        if (before.get("status"), before.get("message")) != ("True", error.message):
            out.events.append(("Warning", error.reason, error.message))
        if error.retry_after is not None:
            out.retry = NotReadyYet(error.message, delay=error.retry_after)
    except NotReadyYet as error:
        out.retry = error
    st.data["observedGeneration"] = generation
    return out


async def _reconcile(body: dict[str, Any], ref: ServiceRef, api: KubeApi, models: ModelResolver,
                     st: _Status, out: Outcome, policy: Policy) -> None:
    check_service_name(ref.name)  # the API server accepts names its Services cannot carry
    spec = parse_service_spec(body.get("spec"))
    gpu = require_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    scaling = spec.autoscaling
    if scaling.mode == AutoscalingMode.KEDA or (scaling.mode == AutoscalingMode.BUILTIN
                                                and scaling.metrics_source == "prometheus"):
        policy.check_prometheus(scaling.prometheus_url)
    secret = spec.model.credentials.secret_name if spec.model.credentials else None
    credentials = await read_credentials(api, ref.namespace, secret)
    model, why_unknown = await models.resolve(spec, credentials.token)
    result = plan(model, spec, gpu)
    previous = st.data.get("plan") or {}
    st.data["plan"] = result.status()
    if previous.get("kvCacheTokens") == st.data["plan"].get("kvCacheTokens"):
        # The observer's figures stand while the prediction they were compared with does.
        st.data["plan"].update({k: v for k, v in previous.items() if k in _OBSERVED_PLAN_KEYS})
    st.data["tpPp"] = f"{result.tensor_parallel}x{result.pipeline_parallel}"
    if result.fits is False:
        message = "; ".join(result.reasons)
        # Refused before any Job exists: either TensorRT-LLM cannot build it, or it does not fit.
        reason, verdict = ((Reason.DOES_NOT_FIT, "does not fit") if result.buildable
                           else (Reason.NOT_BUILDABLE, "cannot be built"))
        st.condition(ConditionType.FITS, False, reason, message)
        raise PlanRefused(f"{verdict}: {message}", reason=reason.value)
    if result.fits is None:
        st.condition(ConditionType.FITS, None, Reason.MODEL_CONFIG_UNKNOWN, why_unknown)
    else:
        st.condition(ConditionType.FITS, True, Reason.FITS,
                     f"{result.kv_cache_tokens} KV-cache tokens, "
                     f"{result.max_concurrent_sequences} sequences of maxSeqLen per replica")

    replicas = workload_replicas(spec, body.get("status") or {})
    rendered = render(ref, spec, result, gpu, replicas)
    previous_key = (st.data.get("engine") or {}).get("key")
    previous_engine = (st.data.get("engine") or {}).get("name")
    engine_name = rendered.engine["metadata"]["name"]
    if previous_engine and previous_engine != engine_name:
        # The spec moved on mid-build: a build nobody else wants would run for hours.
        cancelled = await cancel_superseded_build(api, ref.namespace, ref.name, previous_engine)
        if cancelled:
            out.events.append(("Normal", EventReason.BUILD_CANCELLED,
                               f"deleted build Job {cancelled}: no service wants engine "
                               f"{previous_engine} any more"))
    st.data["engine"] = {"name": engine_name,
                         "key": rendered.engine["spec"]["key"],
                         "storageUri": f"pvc://{ref.namespace}/{spec.engine_cache.claim_name}/"
                                       f"{rendered.engine['spec']['key']}",
                         "buildJob": rendered.build_job["metadata"]["name"]}
    st.data["endpoint"] = endpoint(ref.name, ref.namespace)
    openai_url = openai_endpoint(spec, ref.name, ref.namespace)
    st.data["endpoints"] = {"openai": openai_url} if openai_url else None
    st.data["scaleFromZero"] = {
        "url": openai_url, "coldStartSeconds": cold_start_seconds(result),
        "holdSeconds": hold_seconds(result),
    } if scaling.mode == AutoscalingMode.KEDA_HTTP else None
    st.data["selector"] = selector_string(ref.name, "server")

    workload = rendered.workload
    if multi_node(spec) and spec.runtime.image and not policy.multi_node_custom_images:
        # The leader holds a token that may exec into its workers; the code holding it must
        # be Kiln's runtime (which execs only into its group), not an image the author chose.
        raise SpecInvalid(
            "spec.runtime.image: a multi-node service runs Kiln's runtime image, because its "
            "leader holds a token that may exec into pods; remove spec.runtime.image, or ask "
            "the platform team to allow custom images there (the chart's "
            "multiNode.customImages)")
    if multi_node(spec) and not await api.serves(workload["apiVersion"], workload["kind"]):
        raise SpecInvalid(
            f"spec.gpus: {spec.gpus} GPUs span {spec.gpus // spec.gpu.per_node} nodes, which needs "
            f"the LeaderWorkerSet API ({workload['apiVersion']}); it is not installed in this "
            f"cluster. Install it with `kubectl apply --server-side -f {LWS_MANIFESTS}`, or use "
            f"gpus <= gpu.perNode={spec.gpu.per_node}", reason=Reason.MISSING_DEPENDENCY.value)
    await _require_gateway_apis(api, spec.gateway is not None)
    await _require_http_add_on(api, scaling.mode == AutoscalingMode.KEDA_HTTP)
    # Every child the service writes is its own or absent, before any GPU time is spent.
    owner = f"{ref.namespace}/{ref.name}"
    children = [*rendered.access, workload, rendered.service,
                *(extra for extra in (rendered.network_policy, rendered.scaler) if extra is not None),
                *rendered.gateway, *rendered.wake]
    lives = []
    for child in children:
        try:
            lives.append(await live_child(api, child))
        except ApiException as error:
            raise _forbidden(error, ref.namespace, child in rendered.gateway) from None
    for child, found in zip(children, lives):
        check_controlled(found, child, ref.uid, owner)
    live = lives[children.index(workload)]
    for role in (child for child in rendered.access if child["kind"] == "Role"):
        try:
            await check_launcher_targets(api, role, workload, live, owner)
        except ApiException as error:
            raise _forbidden(error, ref.namespace) from None
    serving_old = live is not None and \
        live["metadata"].get("annotations", {}).get(ENGINE_KEY_ANNOTATION) != st.data["engine"]["key"]
    ready = await _engine_ready(api, rendered, st, out, previous_key != st.data["engine"]["key"],
                                serving_old, owner,
                                lambda engine: check_engine_credentials(engine, credentials, policy,
                                                                        engine_name))
    if not ready:
        message = f"waiting for engine {engine_name} to build" + \
            ("; the previous engine keeps serving" if serving_old else "")
        st.progressing(Reason.ENGINE_BUILDING, message)
        _replica_status(st, live)
        raise NotReadyYet(message, delay=BUILD_POLL_SECONDS)
    st.condition(ConditionType.ENGINE_READY, True, Reason.ENGINE_BUILT, f"engine {engine_name} is built")
    # In order: the pods' ServiceAccounts (and Role) before the pods, then the rest.
    for child, found in zip(children, lives):
        try:
            applied = await _apply_if_changed(api, child, found)
        except ApiException as error:
            raise _forbidden(error, ref.namespace, child in rendered.gateway) from None
        if child is workload:
            live = applied
    ready_replicas = _replica_status(st, live)
    current = (live.get("status") or {}).get("observedGeneration") == live["metadata"].get("generation") \
        or live["metadata"].get("generation") is None
    if replicas == 0:
        st.condition(ConditionType.STALLED, False, Reason.SCALED_TO_ZERO, "")
        st.condition(ConditionType.RECONCILING, False, Reason.SCALED_TO_ZERO, "")
        wake = st.data.get("scaleFromZero")
        st.condition(ConditionType.READY, True, Reason.SCALED_TO_ZERO, "scaled to zero replicas" + (
            f"; the next request to {wake['url']} wakes it (KEDA HTTP add-on), expected cold "
            f"start {wake['coldStartSeconds']} s" if wake else ""))
        return
    if ready_replicas >= 1 and current:
        st.condition(ConditionType.STALLED, False, Reason.REPLICAS_READY, "")
        st.condition(ConditionType.RECONCILING, False, Reason.REPLICAS_READY, "")
        st.condition(ConditionType.READY, True, Reason.REPLICAS_READY,
                     f"{ready_replicas}/{replicas} replicas ready at {st.data['endpoint']}")
        return
    message = f"{ready_replicas}/{replicas} replicas ready"
    st.progressing(Reason.ROLLING_OUT, message)
    raise NotReadyYet(message, delay=ROLLOUT_POLL_SECONDS)


def _forbidden(error: ApiException, namespace: str, gateway: bool = False) -> Exception:
    """A 403 on the multi-node leader's Role, or on a gateway's objects, is the platform
    team's choice, not an outage: the chart grants those writes only in multiNode.namespaces
    and gateway.namespaces."""
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


def workload_replicas(spec: Any, status: dict[str, Any]) -> int:
    """Replicas of the owned workload: the builtin autoscaler's choice in builtin mode (never
    written to the user's spec), otherwise spec.replicas (which KEDA or an HPA may drive
    through the /scale subresource)."""
    scaling = spec.autoscaling
    if scaling.mode != AutoscalingMode.BUILTIN:
        return int(spec.replicas)
    desired = status.get("desiredReplicas")
    if desired is None:
        desired = max(scaling.min_replicas, min(scaling.max_replicas, spec.replicas))
    return max(scaling.min_replicas, min(scaling.max_replicas, int(desired)))


# Plan fields the observer writes from the engines' metrics; the reconcile keeps them.
_OBSERVED_PLAN_KEYS = ("observedKVCacheTokens", "kvCacheTokensError")


def observed_status(status: dict[str, Any], samples: list[KVSample]) -> Outcome:
    """A Ready service's status with what its engines really allocated and the KV pressure
    now, from one scrape of its pods; a PlanMismatch Event the first time an allocation is
    far from the prediction. Not part of the reconcile: a slow metrics endpoint never holds
    up one, and the observer (a timer) writes only what changed."""
    st = _Status(status, None, "")
    out = Outcome(status=st.data)
    _observe(st, out, samples, (status.get("plan") or {}).get("observedKVCacheTokens"))
    return out


def _observe(st: _Status, out: Outcome, samples: list[KVSample], previous: int | None) -> None:
    """Close the planner's loop with what the engines really allocated, and show the pressure."""
    if not samples:
        return
    observed = min(sample.capacity_tokens for sample in samples)
    utilization = sum(sample.utilization for sample in samples) / len(samples)
    st.data["kvCacheUtilization"] = f"{utilization:.0%}"
    plan = dict(st.data.get("plan") or {})
    predicted = plan.get("kvCacheTokens")
    plan["observedKVCacheTokens"] = observed
    if predicted and observed:
        error = (predicted - observed) / observed
        plan["kvCacheTokensError"] = round(error, 3)
        if abs(error) > PLAN_ERROR_EVENT_THRESHOLD and observed != previous:
            out.events.append(("Warning", EventReason.PLAN_MISMATCH,
                                f"the engine allocated {observed} KV-cache tokens per replica; the "
                                f"planner predicted {predicted} ({error:+.0%})"))
    st.data["plan"] = plan


def _replica_status(st: _Status, live: dict[str, Any] | None) -> int:
    status = (live or {}).get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    st.data["replicas"] = int(status.get("replicas") or 0)
    st.data["readyReplicas"] = ready
    return ready
