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

The record is deleted only as the sweep listed it (a resourceVersion precondition): a service
that takes an engine up again unmarks it first (decide/engine.py), before it uses it, so a
sweep that listed the services before that service's status landed cannot delete the record
from under it; and a service that read the record just before the sweep deleted it fails to
unmark it (404) and retries, building it again. Its build Job and its files go only after the
record has.

If the platform team opts in (``delete_files``; chart ``engineCache.deleteUnreferencedFiles``),
the sweep then starts a Job that removes the engine's cache entry (render/purge.py); one the
API server refuses is logged with the entry's key, and the files stay. The
entry is named by ``spec.key`` alone, in the cache of the namespace being swept; an engine
whose key or cache is not what Kiln writes loses its record and keeps its files, and so does one
whose key another record of the namespace has (the entry is that one's too).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from ..api import API_VERSION
from ..decide.conditions import job_state
from ..decide.engine import cancelled_status
from ..decide.ownership import other_owners, owned_by_services_alone
from ..decide.snapshot import Superseded
from ..errors import SpecInvalid
from ..render.meta import LABEL_CACHE_NAMESPACE, LABEL_ENGINE, child_name
from ..render.purge import purge_job
from .kube import ApiException, KubeApi
from .ownership import live_child

__all__ = ["ENGINE_GRACE_SECONDS", "ENGINE_SWEEP_SECONDS", "wanted_engines",
           "superseded_build", "deleted_mid_build", "tell_engine", "sweep_engines", "seconds_between"]

ENGINE_GRACE_SECONDS = 24 * 3600.0
# How long an engine stays unreferenced before the sweep deletes a running build of it none
# of whose owners waits on it (at most; half the grace period if that is shorter).
SETTLE_SECONDS = 600.0
# How often one namespace's engines are swept (from its services' resync ticks).
ENGINE_SWEEP_SECONDS = 300.0

logger = logging.getLogger(__name__)


async def wanted_engines(api: KubeApi, namespace: str, skip: str | None = None) -> set[str]:
    """Names of the engines the namespace's services reference (but service ``skip``'s)."""
    return set(_engines_of(await api.list(API_VERSION, "LLMService", namespace), skip).values())


def _engines_of(services: list[dict[str, Any]], skip: str | None = None) -> dict[str, str]:
    """The engine each service's status names, by the service's UID (but service ``skip``'s);
    "None" for one whose status names none yet."""
    return {str(svc["metadata"].get("uid")): str(((svc.get("status") or {}).get("engine") or {}).get("name"))
            for svc in services if svc["metadata"].get("name") != skip}


async def _namespace_engine(api: KubeApi, name: str, namespace: str) -> dict[str, Any] | None:
    """The LLMEngine ``name`` if it is one of ``namespace``'s cache (as the sweep lists them),
    else None: a name read from a service's status is the tenant's to write, and the record
    of another namespace's engine is never told of this one's builds."""
    record = await api.get(API_VERSION, "LLMEngine", name)
    labels = ((record or {}).get("metadata") or {}).get("labels") or {}
    return record if labels.get(LABEL_CACHE_NAMESPACE) == namespace else None


async def superseded_build(api: KubeApi, namespace: str, service: str, engine: str) -> Superseded | None:
    """The running build Job of ``engine``, which service ``service`` no longer wants: with
    the engine's record, and whether another service of the namespace names the engine in
    its status (decide deletes the Job, with its pods, only if no other service wants it or
    owns it)."""
    # The Job may be seconds old and not in the watch-fed cache yet: a miss is asked again.
    job = await live_child(api, {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
        "name": child_name(engine, "build"), "namespace": namespace}})
    if job is None or job_state(job) != "Running":
        return None
    wanted = engine in await wanted_engines(api, namespace, skip=service)
    return Superseded(job=job, engine=await _namespace_engine(api, engine, namespace), wanted=wanted)


async def deleted_mid_build(api: KubeApi, service: dict[str, Any], now: str) -> str | None:
    """A service deleted while its engine built: if no other service of its namespace names
    the engine and its build Job has no other owner, the garbage collector deletes the Job
    with the service, and the engine's record says so (else it would say EngineBuilding,
    naming a Job that is gone, until it is collected a day later). The engine's name if its
    record was told."""
    meta = service.get("metadata") or {}
    namespace, name, uid = str(meta.get("namespace")), str(meta.get("name")), meta.get("uid")
    engine = ((service.get("status") or {}).get("engine") or {}).get("name")
    if not engine:
        return None
    record = await _namespace_engine(api, str(engine), namespace)
    status = cancelled_status(record, f"it was deleted with LLMService {namespace}/{name}, the last service "
                              "that wanted the engine", now)
    if record is None or status is None or engine in await wanted_engines(api, namespace, skip=name):
        return None
    job = await api.get("batch/v1", "Job", child_name(str(engine), "build"), namespace)
    if job is not None and (job_state(job) != "Running" or other_owners(job, uid)):
        return None
    await tell_engine(api, record, status)
    return str(engine)


async def tell_engine(api: KubeApi, record: dict[str, Any], status: dict[str, Any]) -> None:
    """``status`` onto the record as read: one that moved on since (a service took the
    engine up again, or the sweep deleted it) is left as it is."""
    try:
        await api.patch_status(record, status, resource_version=record["metadata"].get("resourceVersion"))
    except ApiException as error:
        if error.status not in (404, 409):
            raise


def seconds_between(earlier: str, later: str) -> float:
    """Seconds from one API timestamp to another; infinite if either is not one."""
    def parse(text: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    try:
        return (parse(later) - parse(earlier)).total_seconds()
    except ValueError:
        return float("inf")


def _purge(engine: dict[str, Any], namespace: str) -> dict[str, Any] | None:
    """The Job that removes ``engine``'s cache entry, or None (logged) if its spec names no
    entry of this namespace's cache."""
    name = str(engine["metadata"]["name"])
    spec = engine.get("spec") if isinstance(engine.get("spec"), dict) else {}
    cache = spec.get("cache") if isinstance(spec.get("cache"), dict) else {}
    if cache.get("namespace") != namespace:
        logger.warning(f"LLMEngine {name[:80]}: spec.cache.namespace is not {namespace}, the "
                       "namespace it is labelled with; its cache entry is left alone")
        return None
    try:
        return purge_job(name, spec.get("key"), namespace, cache.get("claimName"))
    except SpecInvalid as error:
        logger.warning(str(error))
        return None


def _key_holders(engines: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The names of the records of each key: one entry of the cache can be several records'
    (names carried a shorter digest of the key before; a service made its record under the
    new name and its build found the entry there)."""
    holders: dict[str, set[str]] = {}
    for engine in engines:
        holders.setdefault(_key(engine), set()).add(str(engine["metadata"]["name"]))
    return holders


def _key(engine: dict[str, Any]) -> str:
    spec = engine.get("spec")
    return str(spec.get("key")) if isinstance(spec, dict) else "None"


def _alone(engine: dict[str, Any], holders: dict[str, set[str]]) -> bool:
    """Whether no other record names ``engine``'s cache entry (else its files stay)."""
    others = holders.get(_key(engine), set()) - {engine["metadata"]["name"]}
    if others:
        logger.info(f"LLMEngine {engine['metadata']['name']}: its cache entry is also LLMEngine "
                    f"{sorted(others)[0]}'s; the files stay")
    return not others


def _build_of(job: dict[str, Any], engine: str) -> bool:
    """Whether ``job`` is Kiln's build of ``engine``: owned by LLMServices alone, or by none
    and labelled as that engine's (its owners gone without it, an orphaning delete). Any
    other Job under the build's name is someone else's, whatever its name."""
    meta = job.get("metadata") or {}
    if meta.get("ownerReferences"):
        return owned_by_services_alone(job)
    return (meta.get("labels") or {}).get(LABEL_ENGINE) == engine


async def _start_purge(api: KubeApi, purge: dict[str, Any], engine: str) -> None:
    """Start the purge Job of a deleted record; one the API server refuses leaves the files
    where they are, said in the log with the entry's key (nothing names them any more)."""
    try:
        if await api.create(purge) is None:
            logger.info(f"LLMEngine {engine}: the Job that removes its cache entry exists already")
    except ApiException as error:
        key = purge["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        logger.error(f"LLMEngine {engine} is deleted but the Job that removes its cache entry "
                     f"{key} was refused ({error.status} {error.reason}); the files stay in the cache")


async def _unwanted_build(api: KubeApi, engine: dict[str, Any], namespace: str, now: str,
                          engines_of: dict[str, str]) -> None:
    """The build of an engine no service of the namespace names. A running build Job none of
    whose owners waits on it (each is gone, or its status names another engine: an owner
    that moved on and whose leave never landed) is deleted, as read; a service that has just
    joined and names no engine yet keeps it. A record that says it is building, whose Job is
    gone or deleted so, says so."""
    name = engine["metadata"]["name"]
    status = cancelled_status(engine, f"no service of namespace {namespace} wants the engine", now)
    if status is None:
        return
    job = await api.get("batch/v1", "Job", child_name(name, "build"), namespace)
    if job is not None:
        refs = (job.get("metadata") or {}).get("ownerReferences") or []
        waiting = any(engines_of.get(str(ref.get("uid"))) in (name, "None") for ref in refs)
        if not owned_by_services_alone(job) or waiting or job_state(job) != "Running":
            return
        if not await api.delete(job, background=True, unchanged=True):
            return
        logger.info(f"deleted build Job {namespace}/{job['metadata']['name']}: none of its owners wants "
                    f"engine {name} any more")
    await tell_engine(api, engine, status)


async def sweep_engines(api: KubeApi, namespace: str, now: str,
                        grace: float = ENGINE_GRACE_SECONDS, delete_files: bool = False) -> list[str]:
    """Mark the namespace's unreferenced engines, unmark referenced ones, delete those
    unreferenced for ``grace`` seconds (and their running build Job, and with
    ``delete_files`` their cache entry and any build Job); the names deleted."""
    engines_of = _engines_of(await api.list(API_VERSION, "LLMService", namespace))
    wanted = set(engines_of.values())
    engines = await api.list(API_VERSION, "LLMEngine",
                             label_selector=f"{LABEL_CACHE_NAMESPACE}={namespace}")
    deleted = []
    holders = _key_holders(engines)
    for engine in engines:
        name = engine["metadata"]["name"]
        since = (engine.get("status") or {}).get("unreferencedSince")
        if name in wanted:
            if since:
                await api.patch_status(engine, {"unreferencedSince": None})
            continue
        # Left to the services' own cancels a while (the sweep deleting a build a service was
        # cancelling raced it); then half the grace period, at most SETTLE_SECONDS.
        if since and seconds_between(since, now) >= min(grace / 2, SETTLE_SECONDS):
            await _unwanted_build(api, engine, namespace, now, engines_of)
        if not since:
            await api.patch_status(engine, {"unreferencedSince": now})
        elif seconds_between(since, now) >= grace and await api.delete(engine, unchanged=True):
            # Only the record as listed: a service that took the engine up again since has
            # unmarked it (decide/engine.py), a new resourceVersion, and the delete is refused.
            # The build and the files go only once the record has.
            purge = _purge(engine, namespace) if delete_files and _alone(engine, holders) else None
            job = await api.get("batch/v1", "Job", child_name(name, "build"), namespace)
            # A finished build Job outlives the record (BUILD_TTL_SECONDS, a week): a service
            # that wants the engine again reads it Complete and takes the engine as built,
            # true unless its files are being removed. Someone else's Job under the build's
            # name is left alone.
            if job is not None and _build_of(job, name) and (job_state(job) == "Running" or purge is not None):
                await api.delete(job, background=True)
            if purge is not None:
                await _start_purge(api, purge, name)
            deleted.append(name)
    return deleted
