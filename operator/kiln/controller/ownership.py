"""Kiln writes only objects it owns: a child that exists without the service as its
controller is a conflict, never taken over.

Server-side apply with ``force`` would otherwise rewrite any object that happens to have a
child's name (a Service ``web-server``, a ServiceAccount ``ci-launcher`` bound to ``admin``)
and add Kiln's owner reference, so that deleting the LLMService would also delete it. The
Deployment controller takes the same stance with its ReplicaSets: an existing one is used
only if ``metav1.GetControllerOf(rs).UID == d.UID``, anything else is a name collision
(kubernetes/kubernetes, pkg/controller/deployment/sync.go, ``getNewReplicaSet``).

The multi-node launcher Role is one more case: RBAC matches its ``resourceNames`` only, so a
pod someone else made under a worker's name would be exec-able by the leader. Before the Role
is written, every existing pod it names must be controlled, link by link (UIDs compared), by
the service's own LeaderWorkerSet (worker pod -> worker StatefulSet -> leader pod -> leader
StatefulSet -> LeaderWorkerSet, as kubernetes-sigs/lws pkg/controllers makes them).

A child is checked on the object the API server holds, read just before the write: the
watch-fed caches see only objects labelled as Kiln's, so a miss there is confirmed with a
read from the API (once per child, until Kiln has created it).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..api import API_VERSION, Reason
from .kube import KINDS
from ..errors import SpecInvalid
from ..render.meta import LABEL_ENGINE

__all__ = ["Reader", "controller_of", "live_child", "check_controlled", "check_engine_job",
           "check_launcher_targets", "conflict"]


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


# worker pod -> worker StatefulSet -> leader pod -> leader StatefulSet -> LeaderWorkerSet
_LWS_HOPS = 4


async def _controlled_by(api: Reader, obj: dict[str, Any], root_uid: str) -> bool:
    """Whether ``obj``'s chain of controllers reaches the object with UID ``root_uid``, each
    link read from the API and matched by UID."""
    read = getattr(api, "get_fresh", None) or api.get
    namespace = (obj.get("metadata") or {}).get("namespace")
    for _ in range(_LWS_HOPS):
        ref = controller_of(obj)
        if ref is None or (ref.get("apiVersion"), ref.get("kind")) not in KINDS:
            return False
        if ref.get("uid") == root_uid:
            return True
        found = await read(str(ref["apiVersion"]), str(ref["kind"]), str(ref.get("name")), namespace)
        if found is None or (found.get("metadata") or {}).get("uid") != ref.get("uid"):
            return False
        obj = found
    return False


async def check_launcher_targets(api: Any, role: dict[str, Any], workload: dict[str, Any],
                                 lws: dict[str, Any] | None, owner: str) -> None:
    """Raise a ResourceConflict naming the first existing pod the launcher ``role`` would let
    the leader exec into that is not a pod of ``lws`` (the service's own LeaderWorkerSet, or
    None before it exists)."""
    names = {name for rule in role.get("rules") or [] if "pods/exec" in rule.get("resources", [])
             for name in rule.get("resourceNames") or []}
    namespace = role["metadata"]["namespace"]
    lws_uid = ((lws or {}).get("metadata") or {}).get("uid")
    for pod in sorted(await api.list("v1", "Pod", namespace), key=lambda p: p["metadata"]["name"]):
        name = pod["metadata"]["name"]
        if name not in names:
            continue
        pod = {**pod, "metadata": {**pod["metadata"], "namespace": namespace}}
        if lws_uid is None or not await _controlled_by(api, pod, str(lws_uid)):
            raise conflict({"kind": "Pod", "metadata": pod["metadata"]}, owner,
                           f"is not a pod of LeaderWorkerSet {workload['metadata']['name']}, and "
                           f"the launcher Role {role['metadata']['name']} would let the leader "
                           f"exec into it")
