"""Thin kopf handlers: observe, call the one reconcile, write status once, post Events."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from ..api import GROUP, VERSION, AutoscalingMode, ConditionType, Precision, Reason
from ..api.validation import parse_service_spec
from ..autoscale import KVSample
from ..errors import SpecInvalid
from ..planner import lookup_gpu
from ..planner.perf import PerfModel, prefill_tokens_per_second
from ..render.meta import selector_string
from .autoscaler import AUTOSCALE_PERIOD_SECONDS, BuiltinAutoscaler, DecisionClock
from .cache import CachedKubeApi, cache_indexes, register_caches
from .collect import ENGINE_GRACE_SECONDS, ENGINE_SWEEP_SECONDS, sweep_engines
from .conditions import is_true, set_condition
from .kube import ApiException, KubeApi
from .metrics import MetricsSource, PodMetrics
from .models import ModelResolver
from .policy import Policy
from .service import EventReason, observed_status, reconcile_service, workload_replicas
from .telemetry import Telemetry

__all__ = ["OperatorContext", "build_registry", "RESYNC_SECONDS", "OBSERVE_PERIOD_SECONDS",
           "OPERATOR_TOKEN"]

# The resync tick: how soon a change to an owned object (a build Job completing, a
# Deployment's replicas becoming ready, an edit or a deletion), seen by its watch, is acted
# on. A service whose owned objects did not change is reconciled in full only every
# FULL_RESYNC_SECONDS (controller-runtime's SyncPeriod, which defaults to 10 hours).
RESYNC_SECONDS = 30.0
FULL_RESYNC_SECONDS = 300.0
# How often a Ready service's pods are scraped for the status's KV figures (in builtin mode
# the autoscaler's own scrapes feed them).
OBSERVE_PERIOD_SECONDS = 60.0
# The bearer token the operator presents to an emulator, so that its requests can be told
# apart from the tests' and the simulated kubelet's (the RBAC test audits them).
OPERATOR_TOKEN = "kiln-operator"
# Reconciles in flight at once, from any trigger (watch events, the resync, the autoscaler).
# Like controller-runtime's MaxConcurrentReconciles (default 1): a burst of a thousand new
# services queues here instead of multiplying API-server load, and each reconcile runs at
# speed. A reconcile mostly waits on the API server, so a few in flight keep it busy: at a
# thousand services (benchmarks/operator_scale.py, one run each) 4 took 74 s to all Ready
# with a p99 reconcile of 0.78 s, 16 took 56 s with a p99 of 2.1 s.
MAX_CONCURRENT_RECONCILES = 4


@dataclass
class OperatorContext:
    """What the handlers share: the API client, the model resolver, and (for the emulator)
    where to log in."""

    api: KubeApi
    models: ModelResolver = field(default_factory=ModelResolver)
    login_url: str | None = None
    # The identity and trust for ``login_url``: a real API server's operator token and CA file
    # (the emulator takes the fixed token over plain HTTP).
    login_token: str = OPERATOR_TOKEN
    login_ca_file: str | None = None
    # The demo and the tests poll builds and rollouts faster than a real cluster needs.
    max_retry_delay: float | None = None
    metrics: MetricsSource | None = None
    autoscale_period: float = AUTOSCALE_PERIOD_SECONDS
    observe_period: float = OBSERVE_PERIOD_SECONDS
    # LawParams timing overrides (window_seconds, stale_seconds, headroom_*) for the demo
    # and the tests.
    autoscale_timing: dict[str, float] = field(default_factory=dict)
    # The demo's simulated clock for the autoscaler's decisions (None: wall time).
    decision_clock: DecisionClock | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    policy: Policy = field(default_factory=Policy)
    # Seconds a stopping operator gives each object's worker and timer to finish (2 s and
    # 10 s when None); the restart tests stop it as abruptly as a kill would.
    exit_timeout: float | None = None
    # The HTTP session kopf uses when ``login_url`` is set; closed by ``run_operator``.
    kopf_session: aiohttp.ClientSession | None = None
    reconcile_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_CONCURRENT_RECONCILES))
    # Services (by uid) whose owned objects changed since their last resync, and when each
    # was last reconciled in full by the resync.
    changed: set[str] = field(default_factory=set)
    last_full_resync: dict[str, float] = field(default_factory=dict)
    # The resync tick, and the collection of unreferenced engines (controller/collect.py):
    # how often a namespace is swept, how long an engine stays unreferenced before its record
    # goes, and when each namespace was last swept. The tests shorten them.
    resync_period: float = RESYNC_SECONDS
    engine_sweep_period: float = ENGINE_SWEEP_SECONDS
    engine_grace: float = ENGINE_GRACE_SECONDS
    last_sweep: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = PodMetrics(self.api)
        self.autoscaler = BuiltinAutoscaler(self.api, self.metrics, dict(self.autoscale_timing),
                                            policy=self.policy,

                                            decision_clock=self.decision_clock)


# Retries after a failed reconcile: 1 s, doubling to at most 5 minutes (controller-runtime's
# per-object rate limiter does the same, from 5 ms to 1000 s).
ERROR_BACKOFF_SECONDS = (1.0, 300.0)


def error_backoff(retry: int) -> float:
    first, most = ERROR_BACKOFF_SECONDS
    return min(most, first * 2 ** min(retry, 16))


def _prefill_speed(spec: Any, status: dict[str, Any]) -> float | None:
    """One replica's prefill speed (input tokens/s) from the planned weights per GPU, as the
    simulator's replicas have it; None before the plan is in the status."""
    weight = ((status.get("plan") or {}).get("weightBytesPerGpu"))
    gpu = lookup_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    if not weight or gpu is None:
        return None
    return prefill_tokens_per_second(float(weight), Precision(spec.precision), gpu)


def _request_seconds(spec: Any, status: dict[str, Any]) -> Any:
    """Replica-seconds one request costs at full batch (``PerfModel.request_seconds``), from
    the planned status as the simulator's replicas have it (no attention term: the model's
    shape is not in the status); None before the plan is in the status."""
    plan = status.get("plan") or {}
    speed = _prefill_speed(spec, status)
    gpu = lookup_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    if speed is None or gpu is None or not plan.get("kvCacheTokens") or not plan.get("kvBytesPerTokenPerGpu"):
        return None
    cost = PerfModel(kv_tokens=int(plan["kvCacheTokens"]), max_batch=spec.engine.max_batch_size,
                     weight_bytes=float(plan["weightBytesPerGpu"]),
                     kv_bytes_per_token=float(plan["kvBytesPerTokenPerGpu"]),
                     bandwidth=gpu.bandwidth_tbs * 1e12, prefill_tokens_per_s=speed,
                     max_num_tokens=spec.engine.max_num_tokens).request_seconds
    return lambda prompt, output: cost(round(prompt), round(output))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_diff(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in desired.items() if current.get(k) != v}


# Events that move the operator's build counters.
_BUILD_EVENTS = {EventReason.BUILD_STARTED: "started", EventReason.BUILD_SUCCEEDED: "succeeded",
                 EventReason.BUILD_FAILED: "failed"}


def forbidden_conditions(conditions: list[dict[str, Any]], said: str, now: str) -> list[dict[str, Any]]:
    """``Stalled=True``/``Ready=False`` with reason ``Forbidden``, for a 403 from the API server."""
    message = (f"the API server refused the operator: {said}; grant the verb to the operator's "
               "ServiceAccount (the chart's ClusterRole has every rule it needs)")
    conditions = set_condition(conditions, ConditionType.STALLED, True, Reason.FORBIDDEN, message, now)
    return set_condition(conditions, ConditionType.READY, False, Reason.FORBIDDEN, message, now)


def build_registry(ctx: OperatorContext) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kiln.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kiln.dev", key="last-handled-configuration")
        # Kiln posts its own Events (kopf.event): one per build, scale decision or condition
        # change. kopf would also post a line per handler run — "failed temporarily" on every
        # build and rollout poll, "succeeded" on every resync — which at a thousand services
        # is a steady stream of Event writes saying nothing new. Unexpected errors are
        # posted by the reconcile below.
        settings.posting.level = logging.CRITICAL
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        settings.execution.max_workers = 8
        # On exit, let a timer that is mid-decision finish its status write (a scrape times
        # out in 3 s) instead of being orphaned with a half-done patch.
        settings.background.instant_exit_timeout = 10.0
        if ctx.exit_timeout is not None:
            settings.queueing.exit_timeout = ctx.exit_timeout
            settings.background.instant_exit_timeout = ctx.exit_timeout

    register_caches(registry, ctx.changed.add)

    if ctx.login_url is None:
        # A registry of one's own gets none of the fallback logins kopf adds to its default one
        # (SmartOperatorRegistry, kopf/_core/intents/registries.py): without this, `kiln run`
        # found no credentials in a kubeconfig or a pod's ServiceAccount.
        kopf.on.login(registry=registry)(kopf.login_via_client)
    else:
        @kopf.on.login(registry=registry)
        async def login(**_: Any) -> kopf.AiohttpSession:
            # A session the operator owns, so that it is closed even if kopf's cleanup is not.
            if ctx.kopf_session is None or ctx.kopf_session.closed:
                tls = (ssl.create_default_context(cafile=ctx.login_ca_file)
                       if ctx.login_ca_file else False)
                ctx.kopf_session = aiohttp.ClientSession(
                    headers={"Authorization": f"Bearer {ctx.login_token}"},
                    connector=aiohttp.TCPConnector(ssl=tls))
            return kopf.AiohttpSession(server=ctx.login_url, aiohttp_session=ctx.kopf_session)

    def capped(delay: float) -> float:
        return delay if ctx.max_retry_delay is None else min(delay, ctx.max_retry_delay)

    def observed(body: kopf.Body, status: dict[str, Any], samples: list[KVSample]) -> dict[str, Any]:
        """``status`` with what a scrape showed; its Events posted, its series exported."""
        outcome = observed_status(status, samples)
        post(body, outcome.events)
        ctx.telemetry.observe_service(body.metadata["namespace"], body.metadata["name"],
                                      dict(body.spec), outcome.status)
        return outcome.status

    def post(body: kopf.Body, events: list[tuple[str, str, str]]) -> None:
        for type_, reason, message in events:
            kopf.event(body, type=type_, reason=reason, message=message)
            if reason in _BUILD_EVENTS:
                ctx.telemetry.builds.labels(_BUILD_EVENTS[reason]).inc()
            elif reason == EventReason.ENGINE_REUSED:
                ctx.telemetry.cache_hits.inc()
            elif type_ == "Warning":
                ctx.telemetry.reconcile_errors.labels("LLMService", reason).inc()

    async def reconcile(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger,
                        status: dict[str, Any] | None = None, **kwargs: Any) -> None:
        raw = {"metadata": dict(body.metadata), "spec": dict(body.spec),
               "status": dict(body.status) if status is None else status}
        telemetry = ctx.telemetry
        async with ctx.reconcile_slots:  # the time waiting for a slot is not the reconcile's
            started = time.perf_counter()
            try:
                api = CachedKubeApi(ctx.api, kwargs)
                outcome = await reconcile_service(raw, api, ctx.models, _now(), ctx.policy)
            except Exception as error:
                # A conflict, an API outage, anything unexpected: counted (alerts see it),
                # posted, and retried with exponential backoff; the status is not touched.
                telemetry.reconcile_errors.labels("LLMService", type(error).__name__).inc()
                delay = capped(error_backoff(int(kwargs.get("retry") or 0)))
                said = " ".join(str(error).split())[:300]
                kopf.event(body, type="Warning", reason="ReconcileError",
                           message=f"{type(error).__name__}: {said}; retrying in {delay:g}s")
                if isinstance(error, ApiException) and error.status == 403:
                    # Retrying cannot help until someone grants the verb: say so where
                    # `kubectl get llms` and kstatus look, and keep retrying slowly.
                    patch.status["conditions"] = forbidden_conditions(
                        list(raw["status"].get("conditions") or []), said, _now())
                raise kopf.TemporaryError(f"{type(error).__name__}: {said}", delay=delay) from error
            finally:
                telemetry.reconcile_seconds.labels("LLMService").observe(time.perf_counter() - started)
        diff = _status_diff(dict(body.status), outcome.status)
        if diff:
            patch.status.update(diff)
        telemetry.observe_service(body.metadata["namespace"], body.metadata["name"],
                                  raw["spec"], outcome.status)
        post(body, outcome.events)
        if outcome.build_seconds is not None:
            telemetry.build_seconds.observe(outcome.build_seconds)
        if outcome.retry is not None:
            raise kopf.TemporaryError(outcome.retry.message, delay=capped(outcome.retry.delay))

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, "llmservices", registry=registry,
                  id="reconcile")(reconcile)  # type: ignore[arg-type]

    @kopf.timer(GROUP, VERSION, "llmservices", registry=registry, interval=ctx.resync_period,
                initial_delay=ctx.resync_period, id="resync")
    async def resync(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger,
                     stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
        """Pick up what changes outside the spec: builds finishing, replicas failing, edits
        to owned objects, a missing Secret created; and, every FULL_RESYNC_SECONDS, whatever
        no watch reported."""
        if stopped:  # the operator is exiting: start nothing it would have to abandon
            return
        uid, now = body.metadata.get("uid") or "", time.monotonic()
        namespace = body.metadata["namespace"]
        if now - ctx.last_sweep.get(namespace, -ctx.engine_sweep_period) >= ctx.engine_sweep_period:
            ctx.last_sweep[namespace] = now
            try:
                for name in await sweep_engines(ctx.api, namespace, _now(), ctx.engine_grace,
                                                delete_files=ctx.policy.delete_unreferenced_engine_files):
                    logger.info(f"deleted LLMEngine {name}: unreferenced for {ctx.engine_grace:g}s")
            except ApiException as error:  # the next sweep tries again
                logger.warning(f"sweeping the engines of namespace {namespace}: {error.status}")
        last = ctx.last_full_resync.setdefault(uid, now)
        settled = is_true(dict(body.status).get("conditions", []), "Ready")
        if settled and uid not in ctx.changed and now - last < FULL_RESYNC_SECONDS:
            return  # nothing changed (a service not Ready yet, e.g. waiting for its Secret, is retried)
        ctx.changed.discard(uid)
        ctx.last_full_resync[uid] = now
        try:
            await reconcile(body, patch, logger, **cache_indexes(kwargs))
        except kopf.TemporaryError:
            pass  # the next tick comes anyway

    def builtin_mode(spec: kopf.Spec, **_: Any) -> bool:
        return (spec.get("autoscaling") or {}).get("mode") == AutoscalingMode.BUILTIN.value

    @kopf.timer(GROUP, VERSION, "llmservices", registry=registry, interval=ctx.observe_period,
                initial_delay=ctx.observe_period, id="observe")
    async def observe(body: kopf.Body, patch: kopf.Patch, stopped: kopf.DaemonStopped,
                      **_: Any) -> None:
        """Scrape a Ready service's pods: the KV-cache tokens its engines really allocated
        (next to the planner's prediction) and the KV utilisation now."""
        status = dict(body.status)
        if stopped or not is_true(status.get("conditions", []), "Ready"):
            return
        if builtin_mode(body.spec) and "kvCacheUtilization" in status:
            return  # the autoscaler's scrapes keep it current
        try:
            source = ctx.autoscaler.source(parse_service_spec(dict(body.spec)))
        except SpecInvalid:
            return  # the reconcile reports it
        meta = body.metadata
        samples = await source.kv_samples(meta["namespace"], selector_string(meta["name"], "server"))
        patch.status.update(_status_diff(status, observed(body, status, samples)))

    @kopf.timer(GROUP, VERSION, "llmservices", registry=registry, interval=ctx.autoscale_period,
                initial_delay=ctx.autoscale_period, id="autoscale", when=builtin_mode)
    async def autoscale(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger,
                        stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
        """Builtin mode: the control law sets the workload's replicas (never the spec)."""
        if stopped:
            return
        try:
            spec = parse_service_spec(dict(body.spec))
        except SpecInvalid:
            return  # the reconcile reports it
        status = dict(body.status)
        if not is_true(status.get("conditions", []), "EngineReady"):
            return
        current = workload_replicas(spec, status)
        decision = await ctx.autoscaler.evaluate(body.metadata["namespace"], body.metadata["name"],
                                                 spec, current, _prefill_speed(spec, status),
                                                 api=CachedKubeApi(ctx.api, kwargs),
                                                 request_seconds=_request_seconds(spec, status))
        if decision is None:
            return
        if is_true(status.get("conditions", []), "Ready"):  # what the scrape showed, as observe does
            status = observed(body, status, ctx.autoscaler.latest(body.metadata["namespace"],
                                                                 body.metadata["name"]))
        direction = "up" if decision.desired > current else "down" if decision.desired < current else "hold"
        ctx.telemetry.decisions.labels(body.metadata["namespace"], body.metadata["name"], direction).inc()
        now = _now()
        previous = status.get("autoscaling") or {}
        status["desiredReplicas"] = decision.desired
        if decision.reason != previous.get("lastDecision") or decision.desired != current:
            status["autoscaling"] = {**previous, "lastDecision": decision.reason, "decisionTime": now}
        status["conditions"] = set_condition(
            status.get("conditions", []), ConditionType.SCALING_ACTIVE.value, not decision.held,
            (Reason.METRICS_UNAVAILABLE if decision.held else Reason.METRICS_AVAILABLE).value,
            decision.reason, now, body.metadata.get("generation"))
        settled = status.get("readyReplicas") == current and is_true(status.get("conditions", []), "Ready")
        if decision.desired == current and settled:
            # Nothing to apply or follow: write the decision only (the resync does the rest).
            patch.status.update(_status_diff(dict(body.status), status))
            return
        if decision.desired != current:
            status["autoscaling"]["lastScaleTime"] = now
            up = decision.desired > current
            kopf.event(body, type="Normal", reason=(Reason.SCALED_UP if up else Reason.SCALED_DOWN).value,
                       message=decision.reason)
        try:
            await reconcile(body, patch, logger, status=status, **cache_indexes(kwargs))
        except kopf.TemporaryError:
            pass  # a rollout in progress: the next ticks follow it until it settles

    @kopf.on.event(GROUP, VERSION, "llmservices", registry=registry, id="forget")
    async def forget(event: kopf.RawEvent, **_: Any) -> None:
        """A deleted service leaves no autoscaler history and no metric series behind."""
        if event["type"] != "DELETED":
            return
        meta = event["object"].get("metadata") or {}
        ctx.autoscaler.forget(meta.get("namespace", ""), meta.get("name", ""))
        ctx.changed.discard(meta.get("uid", ""))
        ctx.last_full_resync.pop(meta.get("uid", ""), None)
        ctx.telemetry.forget_service(meta.get("namespace", ""), meta.get("name", ""))

    return registry
