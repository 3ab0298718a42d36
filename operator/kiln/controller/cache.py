"""Watch-fed caches of the objects Kiln owns, so that a reconcile reads memory, not the API.

A controller-runtime controller reads its owned objects from informers; this is the same
with kopf's indexes: kopf lists and watches each kind below (objects labelled
``app.kubernetes.io/managed-by: kiln``), keeps a slim copy of each (what the reconcile
reads: identity, Kiln's annotations, generation and status), and holds every handler back
until the first list is in. A resync of a settled service then costs two reads (the
model-token Secret, never cached, and the cluster-scoped LLMEngine) instead of seven.

A cache can trail the server by one watch event. The reconcile is written for that: a
missing object is applied (server-side apply of an object that exists is a no-op, and
names are deterministic, so nothing is created twice), and an out-of-date one is
re-applied or polled again.

Cached are the kinds every API server serves and that the chart lets the operator list and
watch in every namespace it manages. Read from the API instead: the kinds whose API may be
absent (LeaderWorkerSet, KEDA, the Gateway API and Inference Extension: kopf watches only the
kinds discovery lists, kopf/_core/reactor/observation.py ``revise_resources``, and starts a
watch when a CRD appears, so an empty cache could mean an absent API or a watch not yet
listed), the autoscaling API's HorizontalPodAutoscaler (one per
service in hpa mode), and the Roles, RoleBindings and ConfigMaps of multi-node and gateway
services: the chart grants those only in ``multiNode.namespaces`` and ``gateway.namespaces``,
and a cluster-wide watch of them would be refused.

The serving pods are cached too, for the timers: every Ready service's pods are read every
15 s (builtin autoscaling) or 60 s (the KV observer) to find the endpoints to scrape, and at a
thousand services that was 1,800 pod lists a minute on the API server. A controller-runtime
operator reads them from its pod informer the same way. The pod cache keeps, per pod, only
what picking the ready endpoints reads (``slim_pod``), indexed by namespace, instance and
component, so that a service's pods are one lookup; a list whose selector is not exactly a
service's ``app.kubernetes.io/instance`` and ``app.kubernetes.io/component`` goes to the API.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from ..render.meta import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, selector_terms
from .claims import CLAIMS_INDEX
from .kube import KINDS, Kind, KubeApi

__all__ = ["CACHED_KINDS", "CachedKubeApi", "cache_indexes", "register_caches", "slim_pod"]

# The kinds read from kopf's indexes; their plurals come from the one table of kinds.
CACHED_KINDS: dict[tuple[str, str], Kind] = {key: KINDS[key] for key in (
    ("apps/v1", "Deployment"), ("batch/v1", "Job"), ("v1", "Service"), ("v1", "ServiceAccount"),
    ("networking.k8s.io/v1", "NetworkPolicy"), ("policy/v1", "PodDisruptionBudget"))}


_PREFIX = "kiln_cache_"
_POD = KINDS[("v1", "Pod")]


def _index_id(plural: str) -> str:
    return _PREFIX + plural


def cache_indexes(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The caches among a handler's keyword arguments (to hand on to another call)."""
    return {key: value for key, value in kwargs.items() if key.startswith(_PREFIX)}


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconcile reads of an owned object."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "generation": meta.get("generation"), "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items()
                            if k.startswith("kiln.dev/")},
            "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k.startswith("kiln.dev/")},
            # Who controls it: a cached object is written only if it is the service's own.
            "ownerReferences": copy.deepcopy(list(meta.get("ownerReferences") or [])),
        },
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


# The scheduler's message for a pod it cannot place, as kept (and said in a condition).
UNSCHEDULABLE_MESSAGE_CHARS = 400


# A container's termination message as kept: the kubelet keeps at most 4,096 bytes of the
# file, or 2,048 of the log's tail (``terminationMessagePolicy: FallbackToLogsOnError``).
TERMINATION_MESSAGE_CHARS = 4096


def _ended(terminated: Any) -> dict[str, Any] | None:
    """A container's termination, if it was a failure (a non-zero exit code)."""
    if not isinstance(terminated, Mapping) or terminated.get("exitCode") in (None, 0):
        return None
    return {"exitCode": terminated.get("exitCode"), "reason": terminated.get("reason"),
            "message": str(terminated.get("message") or "")[:TERMINATION_MESSAGE_CHARS]}


def _slim_container(container: Mapping[str, Any]) -> dict[str, Any]:
    """Of a container's status, what says it fails: its restarts and its failed terminations."""
    states = {key: {"terminated": ended} for key in ("state", "lastState")
              if (ended := _ended((container.get(key) or {}).get("terminated"))) is not None}
    return {"name": container.get("name"), "restartCount": container.get("restartCount"), **states}


def slim_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What choosing a pod to scrape reads (``metrics.ready_pods``, ``metrics._metrics_port``),
    why a pod is not placed (``PodScheduled`` False) and how its containers failed, if they
    did (the rollout says both), in the pod's own shape."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    ports = [{"name": port.get("name"), "containerPort": port.get("containerPort")}
             for container in (body.get("spec") or {}).get("containers") or []
             for port in container.get("ports") or [] if port.get("name") == "metrics"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                     "deletionTimestamp": meta.get("deletionTimestamp")},
        "spec": {"containers": [{"ports": ports}]},
        "status": {"phase": status.get("phase"), "podIP": status.get("podIP"),
                   "conditions": [{"type": c.get("type"), "status": c.get("status")}
                                  for c in status.get("conditions") or [] if c.get("type") == "Ready"]
                   + [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                       "message": str(c.get("message") or "")[:UNSCHEDULABLE_MESSAGE_CHARS]}
                      for c in status.get("conditions") or []
                      if c.get("type") == "PodScheduled" and c.get("status") == "False"],
                   "containerStatuses": [_slim_container(c) for c in status.get("containerStatuses") or []
                                         if isinstance(c, Mapping)]},
    }


def _pod_key(namespace: str | None, selector: str | None) -> tuple[str, str, str] | None:
    """The pod cache's key for a list of ``selector`` in ``namespace``, if it is exactly a
    service's instance and component (``render.meta.selector_string``)."""
    if not namespace or not selector:
        return None
    terms = selector_terms(selector)
    if set(terms) != {LABEL_INSTANCE, LABEL_COMPONENT} or len(terms) != selector.count(",") + 1:
        return None
    return namespace, terms[LABEL_INSTANCE], terms[LABEL_COMPONENT]


def register_caches(registry: kopf.OperatorRegistry, changed: Callable[[str], None],
                    deleted: Callable[[str], None]) -> None:
    """The caches, and ``changed(owner uid)`` on every event of an owned object (a Job that
    completed, a Deployment whose replicas became ready, one someone edited), so that the
    owner's next resync tick reconciles it (see ``handlers.resync``); ``deleted(owner uid)``
    when one is deleted, which reconciles the owner at once (``OperatorContext.child_deleted``)."""
    async def index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): slim(body)}

    async def notice(event: kopf.RawEvent, **_: Any) -> None:
        told = deleted if event.get("type") == "DELETED" else changed
        for owner in (event.get("object") or {}).get("metadata", {}).get("ownerReferences") or []:
            if owner.get("uid"):
                told(owner["uid"])

    for kind in CACHED_KINDS.values():
        group, _, version = kind.api_version.rpartition("/")
        selection = {"registry": registry, "labels": {LABEL_MANAGED_BY: MANAGED_BY}}
        kopf.index(group, version, kind.plural, id=_index_id(kind.plural), **selection)(index)
        kopf.on.event(group, version, kind.plural, id=f"kiln_changed_{kind.plural}", **selection)(notice)

    async def index_pod(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        labels = body.metadata.labels
        return {(namespace, labels.get(LABEL_INSTANCE), labels.get(LABEL_COMPONENT)): slim_pod(body)}

    kopf.index("", "v1", _POD.plural, id=_index_id(_POD.plural), registry=registry,
               labels={LABEL_MANAGED_BY: MANAGED_BY})(index_pod)


class CachedKubeApi:
    """A :class:`KubeApi` whose ``get`` of a cached kind reads the index kopf passed to the
    handler (``indexes``: the handler's keyword arguments); every other call goes through."""

    def __init__(self, api: KubeApi, indexes: Mapping[str, Any]) -> None:
        self._api = api
        self._indexes = {key: indexes[_index_id(kind.plural)]
                         for key, kind in CACHED_KINDS.items() if _index_id(kind.plural) in indexes}
        self._pods = indexes.get(_index_id(_POD.plural))
        self.claims = indexes.get(CLAIMS_INDEX)  # who claims a model name on a Gateway (claims.py)

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        index = self._indexes.get((api_version, kind))
        if index is None:
            return await self._api.get(api_version, kind, name, namespace)
        for cached in index.get((namespace, name), ()):
            return copy.deepcopy(cached)
        return None

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        """A service's pods from the pod cache; every other list from the API."""
        key = _pod_key(namespace, label_selector) if (api_version, kind) == ("v1", "Pod") else None
        if field_selector:
            return await self._api.list(api_version, kind, namespace, label_selector, field_selector=field_selector)
        if key is None or self._pods is None:
            return await self._api.list(api_version, kind, namespace, label_selector)
        return [copy.deepcopy(pod) for pod in self._pods.get(key, ())]

    def caches(self, api_version: str, kind: str) -> bool:
        """Whether ``get`` reads this kind from a cache (so that a miss may be someone else's
        object, unlabelled, rather than none)."""
        return (api_version, kind) in self._indexes

    async def get_fresh(self, api_version: str, kind: str, name: str,
                        namespace: str | None = None) -> dict[str, Any] | None:
        """A read from the API, past the cache (which holds only Kiln's labelled objects)."""
        return await self._api.get(api_version, kind, name, namespace)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._api, attribute)
