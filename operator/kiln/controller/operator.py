"""Run the operator: against the current kubeconfig (`kiln run`) or an emulator URL."""

from __future__ import annotations

import asyncio
import threading

import kopf

from .context import OperatorContext
from .handlers import build_registry
from .kube import KubeApi
from .metrics import PodMetrics
from ..decide.policy import Policy
from .telemetry import METRICS_PORT

__all__ = ["run_operator", "run_against_kubeconfig"]


async def run_operator(ctx: OperatorContext, stop_flag: asyncio.Event | threading.Event,
                       namespaces: list[str] | None = None) -> None:
    """Run kopf with Kiln's handlers until ``stop_flag`` is set.

    kopf closes its API sessions in its cleanup stage, which is skipped when that stage is
    cancelled, and a task still finishing after it can open a new one. So on exit the
    operator waits for such stragglers and then closes the session its login handler lent
    to kopf (:attr:`OperatorContext.kopf_session`).
    """
    try:
        await kopf.operator(
            registry=build_registry(ctx),
            clusterwide=not namespaces,
            namespaces=namespaces or [],
            standalone=True,
            stop_flag=stop_flag,
            liveness_endpoint="http://0.0.0.0:8080/healthz" if ctx.login_url is None else None,
            memo=ctx,  # every handler's ``memo``: a shallow copy per object (controller/context.py)
        )
    finally:
        await _finish_stragglers()
        if isinstance(ctx.metrics, PodMetrics):
            await ctx.metrics.close()
        await ctx.autoscaler.close()
        if ctx.kopf_session is not None:
            await ctx.kopf_session.close()


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
                                 policy: Policy | None = None) -> None:
    """The operator as it runs in its pod: health on :8080/healthz, metrics on ``metrics_port``."""
    api = await KubeApi.from_kubeconfig()
    ctx = OperatorContext(api=api, policy=policy or Policy())
    if metrics_port:
        ctx.telemetry.serve(metrics_port)
    try:
        await run_operator(ctx, stop_flag or asyncio.Event(), namespaces)
    finally:
        await api.close()
