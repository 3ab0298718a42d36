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

A child is checked on the object the API server holds, read before the write: the
watch-fed caches see only objects labelled as Kiln's, so a miss there is confirmed with a
read from the API in every reconcile that writes (controller/gather.py, ``confirm_misses``).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..decide.ownership import conflict, controller_of
from .kube import KINDS, concurrently

__all__ = ["Reader", "live_child", "check_launcher_targets"]


class Reader(Protocol):
    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None: ...


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
    names = sorted({name for rule in role.get("rules") or [] if "pods/exec" in rule.get("resources", [])
                    for name in rule.get("resourceNames") or []})
    namespace = role["metadata"]["namespace"]
    lws_uid = ((lws or {}).get("metadata") or {}).get("uid")
    # The named pods, read by name: a list of the namespace would carry every pod in it.
    pods = await concurrently(api.get("v1", "Pod", name, namespace) for name in names)
    for pod in pods:
        if isinstance(pod, Exception):
            raise pod
        if pod is None:
            continue
        pod = {**pod, "metadata": {**pod["metadata"], "namespace": namespace}}
        if lws_uid is None or not await _controlled_by(api, pod, str(lws_uid)):
            raise conflict({"kind": "Pod", "metadata": pod["metadata"]}, owner,
                           f"is not a pod of LeaderWorkerSet {workload['metadata']['name']}, and "
                           f"the launcher Role {role['metadata']['name']} would let the leader "
                           f"exec into it")
