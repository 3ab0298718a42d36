"""One reconcile of an LLMService: gather the snapshot, decide, execute, write the status.

Every handler that reconciles (a change, the resync, an autoscale decision to roll out) comes
through :func:`reconcile`. A settled service's new observations, which change nothing but its
status, come through :func:`record`: no read, no apply, not a reconcile. Both write the status
once, by :func:`kiln.controller.execute.write_status`, and nowhere else.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

import kopf

from ..api import API_VERSION
from ..decide import Actions, EventReason, Observed, Parsed, decide, decide_observed
from ..decide.policy import Policy
from ..decide.status import forbidden, parse_status
from .cache import CachedKubeApi
from .context import OperatorContext
from .execute import execute, write_status
from .gather import confirm_misses, gather
from .kube import ApiException, KubeApi
from .models import ModelResolver
from .requeue import Requeue, requeue_of
from .telemetry import BUILD_RESULTS

__all__ = ["reconcile", "reconcile_service", "record", "now", "error_backoff", "ERROR_BACKOFF_SECONDS"]

# Retries after a failed reconcile: 1 s, doubling to at most 5 minutes (controller-runtime's
# per-object rate limiter does the same, from 5 ms to 1000 s).
ERROR_BACKOFF_SECONDS = (1.0, 300.0)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile_service(body: Mapping[str, Any], api: KubeApi, models: ModelResolver, at: str,
                            policy: Policy | None = None, observed: Observed | None = None,
                            parsed: Parsed | None = None) -> Actions:
    """Gather, decide and execute everything but the status write, which the caller makes
    (``parsed``: the body's spec, if the caller has already parsed it)."""
    snapshot = await gather(body, api, models, at, policy or Policy(), observed, parsed)
    actions = decide(snapshot)
    if (confirmed := await confirm_misses(api, snapshot, actions)) is not None:
        actions = decide(confirmed)  # an object the caches missed is there: decided with it
    return await execute(actions, api, body.get("status") or {}, at, snapshot.generation)


async def reconcile(body: kopf.Body, ctx: OperatorContext, kwargs: Mapping[str, Any],
                    observed: Observed | None = None, parsed: Parsed | None = None) -> float | None:
    """Reconcile the service and write its status, in the service's turn: the seconds after
    which to reconcile it again while it waits (a build, a rollout), or None. A failure
    raises kopf.TemporaryError with the backoff for ``kwargs["retry"]``, the failures
    before it.

    The status is written before the turn passes on, and the next reconcile reads it even
    if the watch has not brought it to the handler's view yet (:func:`_view`): the builtin
    autoscaler's ``desiredReplicas`` is read from the status, and a reconcile that read the
    one before the last write would apply a workload of the old size."""
    due = requeue_of(ctx)
    async with due.turn:  # one reconcile of a service at a time
        return await _reconcile(body, ctx, due, kwargs, observed, parsed)


async def _reconcile(body: kopf.Body, ctx: OperatorContext, due: Requeue, kwargs: Mapping[str, Any],
                     observed: Observed | None, parsed: Parsed | None) -> float | None:
    handed, queued = dict(body.spec), time.perf_counter()
    async with ctx.reconcile_slots:  # the time waiting for a slot is not the reconcile's
        ctx.telemetry.queue_seconds.labels("LLMService").observe(time.perf_counter() - queued)
        # Read once the slot is ours: kopf keeps the body it hands a timer up to date with
        # the watch (``live_fresh_body``, kopf/_core/reactor/processing.py), and a status
        # computed against the body as it was before the wait would rewrite values the
        # server already holds.
        started, raw = time.perf_counter(), _body(body)
        try:
            raw = await _view(raw, ctx, due)
            if raw["spec"] != handed:
                parsed = None  # the spec changed while waiting: parse what is there now
            actions, error = await reconcile_service(raw, CachedKubeApi(ctx.api, kwargs), ctx.models,
                                                     now(), ctx.policy, observed, parsed), None
        except Exception as caught:
            actions, error = _failed(body, raw["status"], ctx, caught), caught
        finally:
            ctx.telemetry.reconcile_seconds.labels("LLMService").observe(time.perf_counter() - started)
    status: dict[str, Any] = {}
    write_status(status, raw["status"], actions)
    if status:
        try:
            await _write(ctx, due, raw, status)
        except ApiException as failed:
            if error is None:
                ctx.telemetry.reconcile_errors.labels("LLMService", type(failed).__name__).inc()
                error = failed
    if error is not None:
        delay = _capped(ctx, error_backoff(int(kwargs.get("retry") or 0)))
        said = _said(error)
        kopf.event(body, type="Warning", reason="ReconcileError",
                   message=f"{type(error).__name__}: {said}; retrying in {delay:g}s")
        raise kopf.TemporaryError(f"{type(error).__name__}: {said}", delay=delay) from error
    meta = body.metadata
    ctx.telemetry.observe_service(meta["namespace"], meta["name"], raw["spec"], actions.status)
    _post(body, ctx, actions)
    return None if actions.requeue is None else _capped(ctx, actions.requeue.delay)


def _body(body: kopf.Body) -> dict[str, Any]:
    return {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}


async def _view(raw: dict[str, Any], ctx: OperatorContext, due: Requeue) -> dict[str, Any]:
    """The service as this reconcile reads it: ``raw``, the handler's view of it, unless that
    view may not have the last status write yet (it is not at the version that write made,
    within a few seconds of it); then the API server's, read by a list of that name."""
    if due.delivered(raw["metadata"].get("resourceVersion")):
        return raw
    meta = raw["metadata"]
    # A list by name, not a get: the operator lists and watches LLMServices, and the chart
    # grants it no more (a list with no resourceVersion is a consistent read).
    listed = await ctx.api.list(API_VERSION, "LLMService", meta.get("namespace"),
                                field_selector=f"metadata.name={meta['name']}")
    fresh = next((item for item in listed if (item.get("metadata") or {}).get("name") == meta["name"]), None)
    if fresh is None:
        return raw
    return {"metadata": dict(fresh.get("metadata") or {}), "spec": dict(fresh.get("spec") or {}),
            "status": dict(fresh.get("status") or {})}


async def _write(ctx: OperatorContext, due: Requeue, raw: Mapping[str, Any], status: dict[str, Any],
                 resource_version: str | None = None) -> bool:
    """Write ``status`` (a patch of it) and say so to ``due``: the version it was made from
    and the one it made. False if the service is gone (or, with ``resource_version``, has
    been written since)."""
    meta = raw["metadata"]
    service = {"apiVersion": API_VERSION, "kind": "LLMService",
               "metadata": {"name": meta["name"], "namespace": meta["namespace"]}}
    try:
        written = await ctx.api.patch_status(service, status, resource_version=resource_version)
    except ApiException as error:
        if error.status == 404 or (error.status == 409 and resource_version is not None):
            return False
        raise
    due.wrote(meta.get("resourceVersion"), ((written or {}).get("metadata") or {}).get("resourceVersion"))
    return True


async def record(body: kopf.Body, ctx: OperatorContext, observed: Observed) -> bool:
    """Write what a timer observed of a settled service (a scrape, an autoscale decision that
    keeps the replicas) into its status, with its Events; nothing if it changes nothing.
    Whether a write was made.

    Not a reconcile: nothing is read or applied, so it takes no slot and no time in the
    reconcile histogram (the resync still reconciles the service in full). The status is the
    timer's view of it (``body``, which follows the watch), and a reconcile's write may have
    landed since without the watch having brought it: a patch made from that view would put
    the older conditions back over the newer (Ready True over a rollout). So the write is made
    on the view's resourceVersion, and refused (409) once the status has moved on; the next
    tick observes again, from a view that has caught up."""
    async with requeue_of(ctx).turn:  # not between a reconcile's read and its write
        return await _record(body, ctx, observed)


async def _record(body: kopf.Body, ctx: OperatorContext, observed: Observed) -> bool:
    due = requeue_of(ctx)
    current = dict(body.status)
    meta = body.metadata
    if not due.delivered(meta.get("resourceVersion")):
        return False  # the view lacks the last write: the write would be refused
    actions = decide_observed(parse_status(current), observed, now(), meta.get("generation"))
    if actions is None:
        return False
    patch: dict[str, Any] = {}
    write_status(patch, current, actions)
    if not await _write(ctx, due, _body(body), patch, resource_version=meta.get("resourceVersion")):
        return False  # deleted, or written since this view
    ctx.telemetry.observe_service(meta["namespace"], meta["name"], dict(body.spec), actions.status)
    _post(body, ctx, actions)
    return True


def error_backoff(retry: int) -> float:
    first, most = ERROR_BACKOFF_SECONDS
    return min(most, first * 2 ** min(retry, 16))


def _said(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def _capped(ctx: OperatorContext, delay: float) -> float:
    cap = ctx.timings.max_retry_delay
    return delay if cap is None else min(delay, cap)


def _failed(body: kopf.Body, status: Mapping[str, Any], ctx: OperatorContext, error: Exception) -> Actions:
    """A conflict, an API outage, anything unexpected: counted (alerts see it), posted, and
    retried with exponential backoff; the status is touched only for a 403, which retrying
    cannot help until someone grants the verb (said where `kubectl get llms` looks)."""
    ctx.telemetry.reconcile_errors.labels("LLMService", type(error).__name__).inc()
    actions = Actions(status=parse_status(status))
    if isinstance(error, ApiException) and error.status == 403:
        forbidden(actions.status, _said(error), now())
    return actions


def _post(body: kopf.Body, ctx: OperatorContext, actions: Actions) -> None:
    """The reconcile's Events, and the counters that follow them."""
    telemetry = ctx.telemetry
    for type_, reason, message in actions.events:
        if reason == EventReason.ENGINE_REUSED:
            key = (actions.engine or {}).get("spec", {}).get("key", "")
            if not telemetry.first_hit(str(body["metadata"].get("uid")), key):
                continue  # the same hit, read again off a status not yet written back
            telemetry.cache_hits.inc()
        kopf.event(body, type=type_, reason=reason, message=message)
        if reason in BUILD_RESULTS:
            telemetry.builds.labels(BUILD_RESULTS[reason]).inc()
        elif type_ == "Warning":
            telemetry.reconcile_errors.labels("LLMService", reason).inc()
    if actions.build_seconds is not None:
        telemetry.build_seconds.observe(actions.build_seconds)
