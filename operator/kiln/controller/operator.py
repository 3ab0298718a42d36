"""Run the operator: against the current kubeconfig (`kiln run`) or an emulator URL."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.web
import kopf

from .context import MAX_CONCURRENT_RECONCILES, OperatorContext
from .handlers import build_registry
from .kube import KubeApi
from .lease import LEASE_NAME, LeaderLease, random_identity
from .models import ModelResolver
from .metrics import PodMetrics
from ..decide.policy import Policy
from .telemetry import METRICS_PORT

__all__ = ["run_operator", "run_against_kubeconfig", "settle_garbage_collector", "HEALTH_PORT", "LEASE_LOST_EXIT"]

# Where the operator's pod is probed (charts/kiln/templates/deployment.yaml; `kiln run --health-port`).
HEALTH_PORT = 8080
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# `kiln run`'s exit code when it lost the Lease (its pod restarts and waits for it again).
LEASE_LOST_EXIT = 4

# Allocations (less deallocations) between young collections; CPython's default is 700. A
# reconcile's request and response bodies are garbage within a few hundred milliseconds, but
# at 700 they outlive two young collections, reach the oldest generation and trigger its
# full collections: each walks every tracked object (the caches of a thousand services) and
# pauses every call in flight for up to seconds. At 20,000 they still die young, and each
# young collection, which pauses every call in flight too, is shorter than at 50,000: at a
# thousand services on the loaded 2-core machine of docs/benchmarks.md, the longest young
# pause of a run was 0.23-0.47 s against 0.61-1.09 s, with no full collection after startup.
YOUNG_COLLECTION_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Collect once, then move everything alive (modules, classes, the imports' tables) to
    the permanent generation that no later collection walks (``gc.freeze``: "Freeze all the
    objects tracked by gc - move them to a permanent generation and ignore all the future
    collections", https://docs.python.org/3/library/gc.html#gc.freeze), and make young
    collections rarer (``YOUNG_COLLECTION_THRESHOLD``). Only objects alive now are frozen:
    garbage made later is collected as usual."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


async def run_operator(ctx: OperatorContext, stop_flag: asyncio.Event | threading.Event,
                       namespaces: list[str] | None = None, *,
                       login: Callable[..., Awaitable[Any]] | None = None,
                       identity: str | None = None) -> None:
    """Run kopf with Kiln's handlers until ``stop_flag`` is set. ``login``: a
    ``@kopf.on.login`` handler (None: kopf's, from the kubeconfig or the pod's
    ServiceAccount). ``identity``: the operator's name to kopf, never left to kopf to find:
    without ``$POD_ID`` kopf asks ``getpass.getuser()`` (``kopf/_core/engines/peering.py``,
    ``detect_own_id``), which raises for the image's uid 65532, not in its /etc/passwd.

    kopf closes its API sessions in its cleanup stage, which is skipped when that stage is
    cancelled, and a task still finishing after it can open a new one. So on exit the
    operator waits for such stragglers before it returns (and the caller closes what
    ``login`` lent to kopf).
    """
    try:
        await kopf.operator(
            registry=build_registry(ctx, login),
            clusterwide=not namespaces,
            namespaces=namespaces or [],
            standalone=True,
            stop_flag=stop_flag,
            identity=identity or random_identity(),  # type: ignore[arg-type]  # kopf: NewType(str)
            memo=ctx,  # every handler's ``memo``: a shallow copy per object (controller/context.py)
        )
    finally:
        await _finish_stragglers()
        if isinstance(ctx.autoscaler.metrics, PodMetrics):
            await ctx.autoscaler.metrics.close()
        await ctx.autoscaler.close()


async def _finish_stragglers(timeout: float = 10.0) -> None:
    """Cancel and await the tasks kopf left in this loop (posting, timers mid-request)."""
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


async def run_against_kubeconfig(namespaces: list[str] | None = None,
                                 stop_flag: asyncio.Event | threading.Event | None = None,
                                 metrics_port: int | None = METRICS_PORT,
                                 policy: Policy | None = None,
                                 max_concurrent_reconciles: int = MAX_CONCURRENT_RECONCILES,
                                 lease_namespace: str | None = None,
                                 health_port: int = HEALTH_PORT,
                                 lease_name: str = LEASE_NAME) -> None:
    """The operator as it runs in its pod: health on ``health_port``'s /healthz (and readiness
    on its /readyz), metrics on
    ``metrics_port``. ``lease_namespace``: first take the Lease ``lease_name`` there (controller/lease.py) and
    act only while holding it; identity ``$POD_NAME`` (the chart's downward API) or a random
    one. While it waits it is a standby: its health endpoint answers (so that its liveness
    probe keeps it) and its metrics say ``kiln_operator_leader 0``, as controller-runtime's
    manager serves its probes and metrics before it is elected."""
    settle_garbage_collector()  # the process is the operator's alone (not a test's or the demo's)
    api = await KubeApi.from_kubeconfig()
    lease = LeaderLease(api, lease_namespace, name=lease_name,
                        identity=os.environ.get("POD_NAME")) if lease_namespace else None
    policy = policy or Policy()
    ctx = OperatorContext(api=api, policy=policy, models=ModelResolver(endpoint=policy.platform.hub_endpoint),
                          reconcile_slots=asyncio.Semaphore(max_concurrent_reconciles))
    if metrics_port:
        ctx.telemetry.serve(metrics_port)
    leading = None
    health = _Health(lease)
    try:
        async with _health_endpoint(health_port, health):
            if lease is not None:
                ctx.telemetry.leader.set(0)
                await lease.acquire()
                ctx.telemetry.leader.set(1)
                leading = asyncio.ensure_future(_exit_when_lost(lease))
            health.leading = True
            await run_operator(ctx, stop_flag or asyncio.Event(), namespaces,
                               identity=lease.identity if lease is not None else os.environ.get("POD_NAME"))
    finally:
        if leading is not None:
            leading.cancel()
        if lease is not None:
            await lease.release()
        await api.close()


class _Health:
    def __init__(self, lease: LeaderLease | None) -> None:
        self.lease, self.leading = lease, False

    def answer(self) -> dict[str, Any]:
        if self.lease is None:
            return {"leader": self.leading}
        return {"leader": self.leading, "lease": f"{self.lease.namespace}/{self.lease.name}",
                "holder": self.lease.holder}

    def ready(self) -> bool:
        """The leader, or a standby the API server answers about the Lease, so that it can
        take over: one that cannot reach the API server, or whose every read of the Lease
        fails, is not Ready, and a rollout waits for it."""
        return self.leading or (self.lease is not None and self.lease.answering())


@contextlib.asynccontextmanager
async def _health_endpoint(port: int, health: _Health) -> AsyncIterator[None]:
    """/healthz on ``port``, 200 with whether this operator leads and who holds the Lease, from
    its start (a standby's liveness probe keeps it) to its exit. On every address family the
    host has (``host=None``: asyncio binds each, IPv6 with V6ONLY): a pod on an IPv6-only or
    IPv6-primary network is probed at its IPv6 address. kopf's own liveness endpoint cannot
    do that: it binds the one host its URL names (``kopf/_core/engines/probing.py``)."""
    async def healthz(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(health.answer())

    async def readyz(request: aiohttp.web.Request) -> aiohttp.web.Response:
        ready = health.ready()
        return aiohttp.web.json_response({**health.answer(), "ready": ready}, status=200 if ready else 503)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.get(HEALTH_PATH, healthz), aiohttp.web.get(READY_PATH, readyz)])
    runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, None, port).start()
        yield
    finally:
        await runner.cleanup()


async def _exit_when_lost(lease: LeaderLease) -> None:
    """Once the Lease is lost, stop at once, as controller-runtime's manager does: another
    operator may take it over ``lease.duration`` after the last renewal, and a graceful stop
    would let the reconciles in flight write past that."""
    try:
        await lease.hold()
    except asyncio.CancelledError:  # the operator stopped: it releases the Lease
        raise
    except BaseException:  # noqa: BLE001 - whatever ended the renewals, the Lease is not held
        logging.getLogger(__name__).exception("the Lease's renewals stopped")
    logging.shutdown()
    os._exit(LEASE_LOST_EXIT)
