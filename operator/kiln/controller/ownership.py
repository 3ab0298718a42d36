"""Kiln writes only objects it owns: a child that exists without the service as its
controller is a conflict, never taken over.

Server-side apply with ``force`` would otherwise rewrite any object that happens to have a
child's name (a Service ``web-server``, a ServiceAccount ``ci-launcher`` bound to ``admin``)
and add Kiln's owner reference, so that deleting the LLMService would also delete it. The
Deployment controller takes the same stance with its ReplicaSets: an existing one is used
only if ``metav1.GetControllerOf(rs).UID == d.UID``, anything else is a name collision
(kubernetes/kubernetes, pkg/controller/deployment/sync.go, ``getNewReplicaSet``).

A child is checked on the object the API server holds, read just before the write: the
watch-fed caches see only objects labelled as Kiln's, so a miss there is confirmed with a
read from the API (once per child, until Kiln has created it).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..api import API_VERSION, Reason
from ..errors import SpecInvalid
from ..render.meta import LABEL_ENGINE

__all__ = ["Reader", "controller_of", "live_child", "check_controlled", "check_engine_job",
           "conflict"]


class Reader(Protocol):
    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None: ...


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The owner reference marked ``controller: true``, if any (at most one may be)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def _where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta.get("name"))


def conflict(obj: dict[str, Any], owner: str, why: str) -> SpecInvalid:
    return SpecInvalid(
        f"{obj['kind']} {_where(obj)} already exists and {why}; Kiln does not take over objects "
        f"it did not create. Rename LLMService {owner}, or remove or rename that "
        f"{obj['kind']}", reason=Reason.RESOURCE_CONFLICT.value)


async def live_child(api: Reader, desired: dict[str, Any]) -> dict[str, Any] | None:
    """The object the API server holds under ``desired``'s name: the cache first, the API on
    a miss (an object someone else created is not in Kiln's label-filtered caches)."""
    meta = desired["metadata"]
    args = (desired["apiVersion"], desired["kind"], meta["name"], meta.get("namespace"))
    live = await api.get(*args)
    if live is None:
        fresh = getattr(api, "get_fresh", None)
        if fresh is not None:
            live = await fresh(*args)
    return live


def check_controlled(live: dict[str, Any] | None, desired: dict[str, Any], owner_uid: str | None,
                     owner: str) -> None:
    """Raise a ResourceConflict unless ``live`` is absent or controlled by ``owner_uid``."""
    if live is None or owner_uid is None:
        return
    ref = controller_of(live)
    if ref is None:
        raise conflict(desired, owner, "has no controller")
    if ref.get("uid") != owner_uid:
        raise conflict(desired, owner, f"is controlled by {ref.get('kind')} {ref.get('name')}")


def check_engine_job(live: dict[str, Any] | None, desired: dict[str, Any], owner: str) -> None:
    """A build Job is shared by every service that wants its engine, so any LLMService may
    control it; but it must be an LLMService's, and build this engine."""
    if live is None:
        return
    ref = controller_of(live) or {}
    if ref.get("apiVersion") != API_VERSION or ref.get("kind") != "LLMService":
        raise conflict(desired, owner, "is not controlled by an LLMService")
    wanted = desired["metadata"]["labels"][LABEL_ENGINE]
    if ((live.get("metadata") or {}).get("labels") or {}).get(LABEL_ENGINE, wanted) != wanted:
        raise conflict(desired, owner, "builds another engine")
