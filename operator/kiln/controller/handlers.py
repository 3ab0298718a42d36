"""Thin kopf handlers: observe, call the one reconcile, write status once, post Events."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..api import GROUP, VERSION
from .kube import KubeApi
from .metrics import MetricsSource, PodMetrics
from .models import ModelResolver
from .service import reconcile_service

__all__ = ["OperatorContext", "build_registry", "RESYNC_SECONDS"]

RESYNC_SECONDS = 30.0


@dataclass
class OperatorContext:
    """What the handlers share: the API client, the model resolver, and (for the emulator)
    where to log in."""

    api: KubeApi
    models: ModelResolver = field(default_factory=ModelResolver)
    login_url: str | None = None
    # The demo and the tests poll builds and rollouts faster than a real cluster needs.
    max_retry_delay: float | None = None
    metrics: MetricsSource | None = None

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = PodMetrics(self.api)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_diff(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in desired.items() if current.get(k) != v}


def build_registry(ctx: OperatorContext) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kiln.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kiln.dev", key="last-handled-configuration")
        settings.posting.level = logging.INFO
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        settings.execution.max_workers = 8

    if ctx.login_url is not None:
        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=ctx.login_url, scheme="Bearer", token="kiln",
                                       insecure=True)

    async def reconcile(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
        raw = {"metadata": dict(body.metadata), "spec": dict(body.spec),
               "status": dict(body.status)}
        outcome = await reconcile_service(raw, ctx.api, ctx.models, _now(), ctx.metrics)
        diff = _status_diff(raw["status"], outcome.status)
        if diff:
            patch.status.update(diff)
        for type_, reason, message in outcome.events:
            kopf.event(body, type=type_, reason=reason, message=message)
        if outcome.retry is not None:
            delay = outcome.retry.delay
            if ctx.max_retry_delay is not None:
                delay = min(delay, ctx.max_retry_delay)
            raise kopf.TemporaryError(outcome.retry.message, delay=delay)

    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, "llmservices", registry=registry,
                  id="reconcile")(reconcile)  # type: ignore[arg-type]

    @kopf.timer(GROUP, VERSION, "llmservices", registry=registry, interval=RESYNC_SECONDS,
                initial_delay=RESYNC_SECONDS, id="resync")
    async def resync(body: kopf.Body, patch: kopf.Patch, logger: logging.Logger, **_: Any) -> None:
        """Pick up what changes outside the spec: builds finishing, replicas failing."""
        try:
            await reconcile(body, patch, logger)
        except kopf.TemporaryError:
            pass  # the next tick comes anyway

    return registry
