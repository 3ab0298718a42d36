"""Thin kopf handlers, at module level: each one observes and, if there is something to do,
calls the one reconcile (controller/reconcile.py), which writes the status.

Per-operator state reaches them as kopf's ``memo`` (an :class:`OperatorContext`, passed to
``kopf.operator(memo=...)`` by controller/operator.py). The timers refresh what the snapshot
reads (a scrape, an autoscale decision): a decision to change the replicas, or one about a
service still rolling out, is reconciled; what changes nothing but a settled service's status
is recorded (``reconcile.record``: no reads, no applies).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from ..api import GROUP, VERSION, AutoscalingMode, ConditionType, Precision
from ..api.validation import parse_service_spec
from ..decide import Observed, Parsed, parse, workload_replicas
from ..decide.status import is_true, parse_status
from ..errors import SpecInvalid
from ..planner import ModelConfig, cold_start_for_weights, lookup_gpu
from ..planner.perf import PerfModel, attention_seconds_per_position, prefill_tokens_per_second
from ..render import ServiceRef
from ..render.meta import selector_string
from .cache import CachedKubeApi, cache_indexes, register_caches
from .claims import register_claims
from .collect import deleted_mid_build, sweep_engines
from .context import FULL_RESYNC_SECONDS, OperatorContext
from .kube import ApiException
from .modellist import ModelListWriter
from .reconcile import now, reconcile, record
from .requeue import Requeue, requeue_of

__all__ = ["build_registry"]

_SERVICES = (GROUP, VERSION, "llmservices")


def build_registry(ctx: OperatorContext,
                   login: Callable[..., Awaitable[Any]] | None = None) -> kopf.OperatorRegistry:
    """The handlers below, on a registry of their own, with ``ctx``'s periods; ``login``
    replaces kopf's own login (controller/operator.py)."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(configure)
    register_caches(registry, ctx.changed.add, ctx.child_deleted)
    writer = (ModelListWriter(ctx.api, ctx.policy.model_list, ctx.policy.model_list_gateways)
              if ctx.policy.model_list else None)
    register_claims(registry, ctx.changed.add, writer.update if writer else None)
    if writer is not None:
        async def list_models(**_: Any) -> None:
            # Once at startup, whatever the claims: a list a stopped operator left is brought
            # up to date (an async handler: kopf runs a sync one in a thread, without the loop).
            writer.schedule()
        kopf.on.startup(registry=registry, id="model_list")(list_models)
    # A registry of one's own gets none of the fallback logins kopf adds to its default one
    # (SmartOperatorRegistry, kopf/_core/intents/registries.py): without this, `kiln run`
    # found no credentials in a kubeconfig or a pod's ServiceAccount.
    kopf.on.login(registry=registry)(login or kopf.login_via_client)
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(*_SERVICES, registry=registry, id="reconcile")(on_change)
    kopf.daemon(*_SERVICES, registry=registry, id="requeue")(requeue)
    timings = ctx.timings
    kopf.timer(*_SERVICES, registry=registry, interval=timings.resync_period,
               initial_delay=timings.resync_period, id="resync")(resync)
    kopf.timer(*_SERVICES, registry=registry, interval=timings.observe_period,
               initial_delay=timings.observe_period, id="observe")(scrape)
    kopf.timer(*_SERVICES, registry=registry, interval=timings.autoscale_period,
               initial_delay=timings.autoscale_period, id="autoscale", when=builtin_mode)(autoscale)
    kopf.on.event(*_SERVICES, registry=registry, id="forget")(forget)
    return registry


def configure(settings: kopf.OperatorSettings, memo: OperatorContext, **_: Any) -> None:
    # kopf's own progress and diff-base go to annotations, so status holds Kiln's fields only.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kiln.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kiln.dev", key="last-handled-configuration")
    # Kiln posts its own Events (kopf.event): one per build, scale decision or condition
    # change. kopf would also post a line per handler run — "failed temporarily" on every
    # build and rollout poll, "succeeded" on every resync — which at a thousand services
    # is a steady stream of Event writes saying nothing new. Unexpected errors are
    # posted by the reconcile.
    settings.posting.level = logging.CRITICAL
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 8
    # On exit, let a timer that is mid-decision finish its reconcile (a scrape times out in
    # 3 s) instead of being orphaned with a half-done patch.
    settings.background.instant_exit_timeout = 10.0
    if memo.timings.exit_timeout is not None:
        settings.queueing.exit_timeout = memo.timings.exit_timeout
        settings.background.instant_exit_timeout = memo.timings.exit_timeout


async def on_change(body: kopf.Body, memo: OperatorContext, **kwargs: Any) -> None:
    """Created, edited, or found at startup. A failure is retried by kopf (with its backoff,
    by the retry count kopf keeps); a wait for a build or a rollout by :func:`requeue`."""
    delay = await reconcile(body, memo, kwargs)
    _follow(requeue_of(memo), delay)


async def requeue(body: kopf.Body, memo: OperatorContext, stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """Reconcile the service whenever its wait is over (controller/requeue.py)."""
    due, uid = requeue_of(memo), str(body.metadata.get("uid") or "")
    memo.requeues[uid] = due  # a deleted child wakes it (OperatorContext.child_deleted)
    try:
        await _follow_requeues(body, memo, stopped, due, kwargs)
    finally:
        if memo.requeues.get(uid) is due:
            del memo.requeues[uid]


async def _follow_requeues(body: kopf.Body, memo: OperatorContext, stopped: kopf.DaemonStopped,
                           due: Requeue, kwargs: dict[str, Any]) -> None:
    failures = 0
    while await due.next(stopped):
        if due.behind(body.metadata.get("resourceVersion")):
            continue  # the watch has not delivered the last status write yet
        try:
            delay: float | None = await reconcile(body, memo, {**kwargs, "retry": failures})
            failures = 0
        except kopf.TemporaryError as error:  # posted and counted by the reconcile
            delay, failures = error.delay, failures + 1
        _follow(due, delay)


def _follow(due: Requeue, delay: float | None) -> None:
    if delay is None:
        due.cancel()
    else:
        due.after(delay)


async def resync(body: kopf.Body, logger: logging.Logger, memo: OperatorContext,
                 stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """Pick up what changes outside the spec: builds finishing, replicas failing, edits
    to owned objects, a missing Secret created; and, every FULL_RESYNC_SECONDS, whatever
    no watch reported."""
    if stopped:  # the operator is exiting: start nothing it would have to abandon
        return
    await _sweep(body.metadata["namespace"], memo, logger)
    uid, at = body.metadata.get("uid") or "", time.monotonic()
    if memo.last_full_resync is None:
        memo.last_full_resync = at
    settled = is_true(parse_status(body.status), ConditionType.READY.value)
    if settled and uid not in memo.changed and at - memo.last_full_resync < FULL_RESYNC_SECONDS:
        return  # nothing changed (a service not Ready yet, e.g. waiting for its Secret, is retried)
    memo.changed.discard(uid)
    memo.last_full_resync = at
    await _reconcile_quietly(body, memo, kwargs)


async def _sweep(namespace: str, ctx: OperatorContext, logger: logging.Logger) -> None:
    """Collect the namespace's unreferenced engines, at most every ``engine_sweep_period``."""
    at, period, grace = time.monotonic(), ctx.timings.engine_sweep_period, ctx.timings.engine_grace
    if at - ctx.last_sweep.get(namespace, -period) < period:
        return
    ctx.last_sweep[namespace] = at
    try:
        for name in await sweep_engines(ctx.api, namespace, now(), grace,
                                        delete_files=ctx.policy.delete_unreferenced_engine_files):
            logger.info(f"deleted LLMEngine {name}: unreferenced for {grace:g}s")
    except ApiException as error:  # the next sweep tries again
        logger.warning(f"sweeping the engines of namespace {namespace}: {error.status}")


async def _reconcile_quietly(body: kopf.Body, ctx: OperatorContext,
                             kwargs: dict[str, Any], observed: Observed | None = None,
                             parsed: Parsed | None = None) -> None:
    """A reconcile from a timer: the next tick comes anyway (a build or a rollout in
    progress is followed tick by tick until it settles)."""
    await requeue_of(ctx).caught_up(body)
    try:  # a wait it finds is not requeued: the next tick comes anyway
        await reconcile(body, ctx, cache_indexes(kwargs), observed, parsed)
    except kopf.TemporaryError:
        pass


def builtin_mode(spec: kopf.Spec, **_: Any) -> bool:
    return (spec.get("autoscaling") or {}).get("mode") == AutoscalingMode.BUILTIN.value


async def scrape(body: kopf.Body, memo: OperatorContext, stopped: kopf.DaemonStopped,
                 **kwargs: Any) -> None:
    """Scrape a Ready service's pods: the KV-cache tokens its engines really allocated
    (next to the planner's prediction) and the KV utilisation now."""
    status = parse_status(body.status)
    if stopped or not is_true(status, ConditionType.READY.value):
        return
    if builtin_mode(body.spec) and status.kv_cache_utilization is not None:
        return  # the autoscaler's scrapes keep it current
    try:
        source = memo.autoscaler.source(parse_service_spec(dict(body.spec)))
    except SpecInvalid:
        return  # the reconcile reports it
    meta = body.metadata
    samples = await source.kv_samples(meta["namespace"], selector_string(meta["name"], "server"),
                                      CachedKubeApi(memo.api, kwargs))
    await _record_caught_up(body, memo, Observed(samples=tuple(samples)))


async def autoscale(body: kopf.Body, memo: OperatorContext, stopped: kopf.DaemonStopped,
                    **kwargs: Any) -> None:
    """Builtin mode: the control law decides the workload's replicas (never the spec)."""
    if stopped:
        return
    meta = body.metadata
    try:  # parsed once a tick: a reconcile for the decision takes it as it is
        parsed = parse(ServiceRef(meta["name"], meta["namespace"], meta.get("uid")), dict(body.spec),
                       memo.policy)
    except SpecInvalid:
        return  # the reconcile reports it
    spec, status = parsed.spec, parse_status(body.status)
    if not is_true(status, ConditionType.ENGINE_READY.value):
        return
    current = workload_replicas(spec, status.desired_replicas)
    decision = await memo.autoscaler.evaluate(meta["namespace"], meta["name"], spec, current,
                                              _prefill_speed(spec, status.plan),
                                              api=CachedKubeApi(memo.api, kwargs),
                                              request_seconds=_request_seconds(spec, status.plan,
                                                                               memo.models.known(spec)),
                                              record=status.autoscaling.record if status.autoscaling else None,
                                              cold_start=_cold_start(status.plan))
    if decision is None:
        return
    direction = "up" if decision.desired > current else "down" if decision.desired < current else "hold"
    memo.telemetry.decisions.labels(meta["namespace"], meta["name"], direction).inc()
    if spec.autoscaling.ttft_p99_milliseconds is not None:
        memo.telemetry.correction.labels(meta["namespace"], meta["name"]).set(
            memo.autoscaler.correction(meta["namespace"], meta["name"]))
    else:  # an objective removed takes its correction with it
        with contextlib.suppress(KeyError):
            memo.telemetry.correction.remove(meta["namespace"], meta["name"])
    observed = Observed(samples=tuple(memo.autoscaler.latest(meta["namespace"], meta["name"])),
                        decision=decision, current=current,
                        record=memo.autoscaler.record(meta["namespace"], meta["name"]))
    settled = status.ready_replicas == current and is_true(status, ConditionType.READY.value)
    if decision.desired != current or not settled:
        await _reconcile_quietly(body, memo, kwargs, observed, parsed)  # a rollout to make or follow
    else:
        await _record_caught_up(body, memo, observed)


async def _record_caught_up(body: kopf.Body, memo: OperatorContext, observed: Observed) -> None:
    """:func:`record`, once the timer's view has the last status write."""
    await requeue_of(memo).caught_up(body)
    await record(body, memo, observed)


def _prefill_speed(spec: Any, plan: Any) -> float | None:
    """One replica's prefill speed (input tokens/s) from the planned weights per GPU, as the
    simulator's replicas have it; None before the plan is in the status."""
    weight = plan.weight_bytes_per_gpu if plan is not None else None
    gpu = lookup_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    if not weight or gpu is None:
        return None
    return prefill_tokens_per_second(float(weight), Precision(spec.precision), gpu)


def _cold_start(plan: Any) -> float | None:
    """A replica's expected cold start from the planned weights per GPU; None before the plan
    is in the status (the law then reads its ``headroom_horizon``)."""
    return None if plan is None else float(cold_start_for_weights(plan.weight_bytes_per_gpu))


def _request_seconds(spec: Any, plan: Any, model: ModelConfig | None) -> Any:
    """Replica-seconds one request costs at full batch (``PerfModel.request_seconds``), from
    the planned status and the model's shape (``model``: the resolver's, for the attention
    term) as the simulator's replicas have it; without the shape (a Hub model not resolved
    since the operator started), no attention term. None before the plan is in the status."""
    speed = _prefill_speed(spec, plan)
    gpu = lookup_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    if speed is None or gpu is None or not plan.kv_cache_tokens or not plan.kv_bytes_per_token_per_gpu:
        return None
    attention = 0.0 if model is None else attention_seconds_per_position(model, Precision(spec.precision),
                                                                         gpu, spec.gpus)
    cost = PerfModel(kv_tokens=int(plan.kv_cache_tokens), max_batch=spec.engine.max_batch_size,
                     weight_bytes=float(plan.weight_bytes_per_gpu),
                     kv_bytes_per_token=float(plan.kv_bytes_per_token_per_gpu),
                     bandwidth=gpu.bandwidth_tbs * 1e12, prefill_tokens_per_s=speed,
                     attention_s_per_position=attention,
                     max_num_tokens=spec.engine.max_num_tokens).request_seconds
    return lambda prompt, output: cost(round(prompt), round(output))


async def forget(event: kopf.RawEvent, memo: OperatorContext, logger: logging.Logger, **_: Any) -> None:
    """A deleted service leaves no autoscaler history and no metric series behind, and no
    engine record saying it builds when its build went with it."""
    if event["type"] != "DELETED":
        return
    try:
        await deleted_mid_build(memo.api, event["object"], now())
    except ApiException as error:  # the sweep says it later (controller/collect.py)
        logger.warning(f"reading the build of a deleted service: {error.status}")
    meta = event["object"].get("metadata") or {}
    memo.autoscaler.forget(meta.get("namespace", ""), meta.get("name", ""))
    memo.changed.discard(meta.get("uid", ""))
    memo.telemetry.forget_service(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""))
