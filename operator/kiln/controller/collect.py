"""What nobody wants any more: superseded build Jobs and unreferenced LLMEngine records.

A build Job runs for hours on GPUs. When a service's spec moves to another engine while its
build runs, and no other service of the namespace wants that engine, the Job is deleted at
once (with its pods). LLMEngine records outlive services on purpose (they are the cache's
index), but one that no LLMService has referenced for ``grace`` seconds is deleted; the
engine's files stay in the cache (the record of a later service that wants them again finds
them there and its build publishes nothing new).

"Referenced" is ``status.engine.name`` of the services in the engine's cache namespace: an
engine a workload still serves while its successor builds is referenced by nothing once the
service moved on, so the grace period (a day by default) must be longer than any build.
"""

from __future__ import annotations

import datetime
from typing import Any

from ..api import API_VERSION
from ..render.meta import LABEL_CACHE_NAMESPACE, child_name
from .kube import KubeApi
from .ownership import live_child

__all__ = ["ENGINE_GRACE_SECONDS", "ENGINE_SWEEP_SECONDS", "wanted_engines",
           "cancel_superseded_build", "sweep_engines"]

ENGINE_GRACE_SECONDS = 24 * 3600.0
# How often one namespace's engines are swept (from its services' resync ticks).
ENGINE_SWEEP_SECONDS = 300.0


async def wanted_engines(api: KubeApi, namespace: str, skip: str | None = None) -> set[str]:
    """Names of the engines the namespace's services reference (but service ``skip``'s)."""
    services = await api.list(API_VERSION, "LLMService", namespace)
    return {str(((svc.get("status") or {}).get("engine") or {}).get("name"))
            for svc in services if svc["metadata"].get("name") != skip}


def _running(job: dict[str, Any]) -> bool:
    return not any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                   for c in (job.get("status") or {}).get("conditions") or [])


async def cancel_superseded_build(api: KubeApi, namespace: str, service: str, engine: str) -> str | None:
    """Delete the running build Job of ``engine`` if no other service of the namespace wants
    it; the Job's name if deleted."""
    if engine in await wanted_engines(api, namespace, skip=service):
        return None
    # The Job may be seconds old and not in the watch-fed cache yet: a miss is asked again.
    job = await live_child(api, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": child_name(engine, "build"), "namespace": namespace}})
    if job is None or not _running(job):
        return None
    await api.delete(job, background=True)
    return str(job["metadata"]["name"])


def _age(since: str, now: str) -> float:
    def parse(text: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parse(now) - parse(since)).total_seconds()


async def sweep_engines(api: KubeApi, namespace: str, now: str,
                        grace: float = ENGINE_GRACE_SECONDS) -> list[str]:
    """Mark the namespace's unreferenced engines, unmark referenced ones, delete those
    unreferenced for ``grace`` seconds (and their running build Job); the names deleted."""
    wanted = await wanted_engines(api, namespace)
    engines = await api.list(API_VERSION, "LLMEngine",
                             label_selector=f"{LABEL_CACHE_NAMESPACE}={namespace}")
    deleted = []
    for engine in engines:
        name = engine["metadata"]["name"]
        since = (engine.get("status") or {}).get("unreferencedSince")
        if name in wanted:
            if since:
                await api.patch_status(engine, {"unreferencedSince": None})
        elif not since:
            await api.patch_status(engine, {"unreferencedSince": now})
        elif _age(since, now) >= grace:
            job = await api.get("batch/v1", "Job", child_name(name, "build"), namespace)
            if job is not None and _running(job):
                await api.delete(job, background=True)
            await api.delete(engine)
            deleted.append(name)
    return deleted
