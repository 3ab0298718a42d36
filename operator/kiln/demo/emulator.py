"""An API server emulator good enough for the operator: kmock's, plus what kopf and Kiln rely on.

kmock 0.8's ``KubernetesEmulator`` stores objects as plain dicts, and keeps every request it
served (trimmed here to the recent ones, see :meth:`KilnEmulator._handle`). A real API server also
(1) creates objects on server-side apply, (2) keeps ``status`` apart from the rest behind the
``/status`` subresource, (3) sets ``uid``, ``resourceVersion``, ``generation`` and
``creationTimestamp``, (4) sends no watch event for a no-op write, and (5) garbage-collects
dependents through ``ownerReferences`` as the delete's propagation policy says, and (6) resumes
a watch from the ``resourceVersion`` a list returned instead of replaying every object (kmock's
list says ``"..."`` and its watch replays all objects as ADDED; kopf lists, then watches, so it would see each object twice and stall on a
stale ``resourceVersion`` after adding its finalizer), and (7) lists only the objects a
``labelSelector`` selects (kmock's list ignores it, so every service's scrape would read
every pod of its namespace). This subclass adds exactly those. It does *not*
validate schemas or CEL rules (tests check those against the generated CRDs separately),
and server-side apply here replaces each top-level field Kiln sends, which equals the real
merge only because Kiln is the sole manager of every field it applies.

Where the real control plane (tests/controlplane, the integration suite's ``real`` back-end)
behaves differently and this emulator does not follow: it installs any CRD (a real API server
evaluates a CRD's CEL rules on its defaults and refused Kiln's ``{}`` defaults), admits any
object (no schema, CEL, strict field validation, null defaulting or name validation; the
admission parity test runs on the real server), fills in no schema default (the real server
sets a CRD's ``default`` values on every write and every read from etcd: the spec's come from
the same pydantic models the operator parses a spec with, so both back-ends decide alike, and
the status schemas have none, as a default there put back what the operator removed; see
:func:`kiln.api.crd._status_schema`), authorizes every request (RBAC is audited
here, enforced there), and runs no ReplicaSet or Deployment controller (the simulated
kubelet writes a Deployment's status here; there, the controllers do from the Pods' status)
and of the Job controller only the pod a new Job gets (the simulated kubelet finishes it).
"""

from __future__ import annotations

import copy
import datetime
import json
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp.web
import jsonpatch
import attrs
import yaml
from kmock import (KubernetesEmulator, KubernetesError, KubernetesObjectNotFoundError,
                   KubernetesResourceNotFoundError, action, resource)
from kmock import KubernetesScaffold
from kmock._internal.dicts import json_patch_dict  # kmock's own RFC 6902 implementation

from ..controller.kube import KINDS, Kind

__all__ = ["KilnEmulator", "declare_resources", "RESOURCES"]

_REQUEST_LOG = 100
_ALL_VERBS = ["list", "watch", "get", "create", "update", "patch", "delete"]

# Subresources the emulator serves, by kind; the kinds and their plurals are the operator's
# own table (controller/kube.py) plus what a cluster has besides (Nodes, Events, CRDs).
_SUBRESOURCES: dict[str, list[str]] = {
    "Node": ["status"], "Pod": ["status"], "Service": ["status"], "PersistentVolumeClaim": ["status"],
    "Deployment": ["status", "scale"], "StatefulSet": ["status", "scale"], "Job": ["status"],
    "ScaledObject": ["status"], "HTTPScaledObject": ["status"], "HorizontalPodAutoscaler": ["status"],
    "LeaderWorkerSet": ["status", "scale"], "InferencePool": ["status"], "HTTPRoute": ["status"],
    "LLMService": ["status", "scale"], "LLMEngine": ["status"],
}
_CLUSTER_KINDS = [Kind("v1", "Namespace", "namespaces", False), Kind("v1", "Event", "events", True),
                  Kind("events.k8s.io/v1", "Event", "events", True),
                  Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                       "customresourcedefinitions", False),
                  Kind("v1", "Node", "nodes", False)]
# (resource key, kind, namespaced, subresources)
RESOURCES: list[tuple[str, str, bool, list[str]]] = [
    (f"{kind.api_version}/{kind.plural}", kind.kind, kind.namespaced, _SUBRESOURCES.get(kind.kind, []))
    for kind in (*_CLUSTER_KINDS, *KINDS.values())]


def declare_resources(emulator: KubernetesEmulator) -> None:
    for key, kind, namespaced, subresources in RESOURCES:
        emulator.resources[key] = {"kind": kind, "namespaced": namespaced, "verbs": _ALL_VERBS,
                                   "subresources": subresources}


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _audit_entry(request: Any, absent: bool) -> tuple[str, str, str, str, str | None, bool, str | None]:
    """The RBAC verb the API server would authorize: a server-side apply that creates the
    object is authorized as ``create``, one that changes it as ``patch``. Entries are (token,
    verb, group, resource, namespace, whether an apply, name)."""
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    if method == "GET":
        watching = str(request.params.get("watch", "")).lower() in ("true", "1")
        verb = "watch" if watching else "get" if request.name else "list"
    else:
        verb = _VERBS.get(method, method.lower())
    applies = verb == "patch" and "apply-patch" in str(request.headers.get("Content-Type", ""))
    if applies and absent:
        verb = "create"
    if method == "DELETE" and not request.name:
        verb = "deletecollection"
    token = str(request.headers.get("Authorization", "")).removeprefix("Bearer ").strip()
    resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    return token, verb, request.resource.group or "", resource, request.namespace, applies, request.name


def _selector(text: str) -> list[tuple[str, str, str | None]]:
    """A label selector's equality-based terms (``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``),
    as (key, operator, value); kmock's list ignores ``labelSelector``."""
    terms: list[tuple[str, str, str | None]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif term.startswith("!"):
            terms.append((term[1:].strip(), "!", None))
        else:
            terms.append((term, "exists", None))
    return terms


def _matches(terms: list[tuple[str, str, str | None]], labels: dict[str, str]) -> bool:
    for key, op, value in terms:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


@attrs.define(kw_only=True)
class KilnEmulator(KubernetesEmulator):
    """kmock's emulator with apply-creates, a status subresource, object meta and owner GC."""

    _last_version: int = attrs.field(default=0, init=False)
    # Every event per resource with the resourceVersion it was sent at, so that a watch can
    # resume where a list left off. The demo and the tests are short: it is not trimmed.
    _history: dict[Any, list[tuple[int, dict[str, Any]]]] = attrs.field(factory=dict, init=False)
    # Every resource request as (bearer token, RBAC verb, API group, resource[/subresource],
    # namespace, server-side apply?, name): what an audit log would show; the chart's RBAC is
    # checked against it.
    audit: list[tuple[str, str, str, str, str | None, bool, str | None]] = attrs.field(factory=list, init=False)
    # The stored objects by resource, so that a list or the kubelet's poll reads one kind
    # instead of every object. Objects put into ``objects`` directly (the demo's nodes and
    # namespaces) are picked up by a rebuild whenever the counts disagree.
    _index: dict[Any, dict[tuple[str | None, str | None], Any]] = attrs.field(factory=dict, init=False)
    _indexed: int = attrs.field(default=0, init=False)
    # What creation and deletion timestamps read; the demo sets its simulated clock here so
    # that the AGE it prints is the same on every run.
    clock: Callable[[], datetime.datetime] = attrs.field(
        default=lambda: datetime.datetime.now(datetime.UTC))

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        declare_resources(self)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.resource.plural:  # not discovery
            key = (request.resource, request.namespace, request.name)
            creates = key not in self._objects or self._objects[key].deleted
            self.audit.append(_audit_entry(request, creates))
        mutating = request.action in (action.CREATE, action.UPDATE, action.DELETE)
        if request.resource is not None and mutating and (request.name or request.action == action.CREATE):
            async with self._lock:
                await self._mutate(request)
        # kmock finds the reaction for a request by searching its whole request log for it
        # (``request in view`` iterates the log), so every request costs more than the last,
        # and at a thousand services that is all the server does. Nothing here reads old
        # requests: the log is cut to this one request just before the (synchronous) search.
        self._requests[:] = [request]
        for payload in self._payloads:
            del payload._requests[:-_REQUEST_LOG]
        return await KubernetesScaffold._handle(self, request)

    def history(self, plural: str) -> list[tuple[int, dict[str, Any]]]:
        """Every event sent for a resource, with its resourceVersion (for tests and the demo)."""
        return [item for res, events in self._history.items() if res.plural == plural
                for item in events]

    def _next_version(self) -> str:
        self._last_version += 1
        return str(self._last_version)

    # Get, update and delete by key: kmock's own scan every stored object for each request.
    def _by_key(self, request: Any, namespace: str | None, name: str | None) -> Any:
        try:
            return self._objects[request.resource, namespace, name]
        except KeyError:
            return None

    async def _serve_fetch(self, request: Any) -> Any:
        obj = self._by_key(request, request.namespace, request.name)
        if obj is None or obj.deleted:
            raise KubernetesObjectNotFoundError()
        return obj.raw

    async def _serve_create(self, request: Any) -> Any:
        meta = request.data.get("metadata", {})
        return self._by_key(request, request.namespace or meta.get("namespace"),
                            request.name or meta.get("name")).raw

    async def _serve_update(self, request: Any) -> Any:
        return self._by_key(request, request.namespace, request.name).last.raw

    async def _serve_delete(self, request: Any) -> Any:
        return self._by_key(request, request.namespace, request.name).last.raw

    def _refresh_index(self) -> None:
        if self._indexed != len(self._objects):
            self._index = {}
            for (res, ns, name), obj in self._objects.items():
                self._index.setdefault(res, {})[ns, name] = obj
            self._indexed = len(self._objects)

    def live(self, plural: str) -> list[dict[str, Any]]:
        """Every stored object of a resource (by its plural name) that is not deleted."""
        self._refresh_index()
        return [obj.raw for res, objs in list(self._index.items()) if res.plural == plural
                for obj in list(objs.values()) if not obj.deleted]

    def get_live(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """One stored object by its plural, namespace and name, or None."""
        self._refresh_index()
        for res, objs in self._index.items():
            if res.plural == plural and (obj := objs.get((namespace, name))) is not None and not obj.deleted:
                return obj.raw
        return None

    def _get_resources(self) -> list[Any]:
        """kmock's reads every stored object's key, per request; the index has them."""
        self._refresh_index()
        return list({*super(KubernetesEmulator, self)._get_resources(), *self._index})

    def _current(self, request: Any) -> list[dict[str, Any]]:
        self._refresh_index()
        wanted = _selector(str(request.params.get("labelSelector", "")))
        return [obj.raw for (ns, _), obj in list(self._index.get(request.resource, {}).items())
                if not obj.deleted and (request.namespace is None or ns == request.namespace)
                and _matches(wanted, (obj.raw.get("metadata") or {}).get("labels") or {})]

    async def _serve_list(self, request: Any) -> Any:
        """A list with a real ``resourceVersion`` to watch from."""
        if request.resource not in self._get_resources():
            raise KubernetesResourceNotFoundError()
        async with self._lock:
            return {"metadata": {"resourceVersion": str(self._last_version)},
                    "items": self._current(request)}

    async def _serve_watch(self, request: Any) -> Any:
        """From a ``resourceVersion``: the events after it. Without one: every current object
        as ADDED. Then the live events. The bus is marked under the same lock as the replay,
        so no event falls in between (kmock subscribes after listing)."""
        yield b""
        bus = self._buses[request.resource]
        since = request.params.get("resourceVersion", "")
        async with self._lock:
            mark = await bus.mark()
            if since.isdigit() and int(since) > 0:
                replay = [event for version, event in self._history.get(request.resource, [])
                          if version > int(since)]
            else:
                replay = [{"type": "ADDED", "object": raw} for raw in self._current(request)]
        for event in replay:
            namespace = event["object"].get("metadata", {}).get("namespace")
            if request.namespace is None or namespace == request.namespace:
                yield event
        try:
            async for event in bus.stream(mark):
                namespace = event.get("object", {}).get("metadata", {}).get("namespace")
                if request.namespace is None or namespace == request.namespace:
                    yield event
        finally:
            await bus.unmark(mark)

    def _body(self, request: Any) -> Any:
        if isinstance(request.data, (dict, list)):
            return request.data
        return yaml.safe_load(request.body or b"{}") or {}

    def _stamp_new(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["uid"] = str(uuid.uuid4())
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_version()
        meta["creationTimestamp"] = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        return obj

    async def _mutate(self, request: Any) -> None:
        resource = request.resource
        body = self._body(request)
        if request.action == action.CREATE:
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            name = meta.get("name")
            namespace = request.namespace or body.get("metadata", {}).get("namespace")
            key = (resource, namespace, name)
            if key in self._objects and not self._objects[key].deleted:
                raise KubernetesError(status=409, reason="AlreadyExists",
                                      message=f"{resource.plural} {name!r} already exists")
            await self._create(key, self._stamp_new(copy.deepcopy(body)))
            return
        key = (resource, request.namespace, request.name)
        exists = key in self._objects and not self._objects[key].deleted
        if request.action == action.DELETE:
            if not exists:
                raise KubernetesObjectNotFoundError()
            # DeleteOptions.preconditions (uid, resourceVersion), as the API server checks them: a 409 Conflict
            # (kubernetes/kubernetes, staging/src/k8s.io/apiserver/pkg/storage/etcd3/store.go,
            # ``checkPreconditions``: "Precondition failed: UID in precondition").
            preconditions = (body or {}).get("preconditions") or {}
            held = self._objects[key].raw.get("metadata", {})
            for field, name in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                if preconditions.get(field) and preconditions[field] != held.get(field):
                    raise KubernetesError(status=409, reason="Conflict",
                                          message=f"Precondition failed: {name} in precondition: {preconditions[field]}")
            await self._delete(key, _propagation(request, body))
            return
        content_type = request.headers.get("Content-Type", "")
        if not exists:
            if "apply-patch" not in content_type or request.subresource:
                raise KubernetesObjectNotFoundError()
            body.setdefault("metadata", {}).setdefault("namespace", request.namespace)
            if request.namespace is None:
                body["metadata"].pop("namespace", None)
            await self._create(key, self._stamp_new(copy.deepcopy(body)))
            return
        current = copy.deepcopy(self._objects[key].raw)
        # A resourceVersion in a patch is a precondition, as the API server checks it
        # (k8s.io/apiserver, pkg/registry/generic/registry/store.go, ``Update``).
        wanted = ((body.get("metadata") or {}) if isinstance(body, dict) else {}).get("resourceVersion")
        if wanted and wanted != current.get("metadata", {}).get("resourceVersion"):
            raise KubernetesError(status=409, reason="Conflict", message=(
                f"Operation cannot be fulfilled on {resource.plural} {request.name!r}: the object has "
                "been modified; please apply your changes to the latest version and try again"))
        if request.subresource == "status":
            updated = dict(current)
            if "apply-patch" in content_type:
                updated["status"] = body.get("status", {})
            else:
                updated = _merge_patch(current, {"status": body.get("status")})
        elif request.subresource == "scale":
            replicas = body.get("spec", {}).get("replicas")
            updated = _merge_patch(current, {"spec": {"replicas": replicas}})
        elif "apply-patch" in content_type:
            updated = dict(current)
            for field, value in body.items():
                if field == "metadata":
                    meta = dict(current.get("metadata", {}))
                    for part in ("labels", "annotations"):
                        if part in value:
                            meta[part] = {**meta.get(part, {}), **value[part]}
                    if "ownerReferences" in value:
                        meta["ownerReferences"] = value["ownerReferences"]
                    updated["metadata"] = meta
                elif field not in ("status", "apiVersion", "kind"):
                    updated[field] = copy.deepcopy(value)
        elif isinstance(body, list):  # RFC 6902 JSON patch (kopf uses it for finalizers)
            try:
                updated = dict(json_patch_dict(current, body))
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict) as error:
                raise KubernetesError(status=422, reason="Invalid", message=str(error)) from None
        else:
            patch = {k: v for k, v in body.items() if k != "status" or not self._has_status(resource)}
            updated = _merge_patch(current, patch)
        if updated == current:
            return  # a no-op write changes nothing and sends no event, as on a real server
        meta = updated.setdefault("metadata", {})
        spec_changed = {k: v for k, v in updated.items() if k not in ("metadata", "status")} != \
            {k: v for k, v in current.items() if k not in ("metadata", "status")}
        if spec_changed:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_version()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            # The last finalizer of an object being deleted: it goes now, and watchers see
            # only its DELETED event (the stored body must lose the finalizer first, or the
            # deletion would wait for it forever).
            self._objects[key].create(updated)
            await self._delete(key)
            return
        await self._store(key, updated, "MODIFIED")

    async def _create(self, key: Any, obj: dict[str, Any]) -> None:
        await self._store(key, obj, "ADDED")
        if (key[0].group, key[0].plural) == ("batch", "jobs") and not (obj.get("spec") or {}).get("suspend"):
            await self._start_job(obj)

    async def _start_job(self, job: dict[str, Any]) -> None:
        """What the Job controller does for a new Job at once: its pod, pending, the Job its
        controller, labelled with the Job's name and UID (kubernetes/kubernetes,
        pkg/controller/job/job_controller.go, ``manageJob``; the labels are the ones
        ``pkg/registry/batch/job/strategy.go`` adds to the template). The simulated kubelet
        finishes it with its Job."""
        meta, template = job["metadata"], (job.get("spec") or {}).get("template") or {}
        labels = {**((template.get("metadata") or {}).get("labels") or {}),
                  **{key: meta["name"] for key in ("job-name", "batch.kubernetes.io/job-name")},
                  **{key: meta["uid"] for key in ("controller-uid", "batch.kubernetes.io/controller-uid")}}
        name = f"{meta['name']}-{uuid.uuid4().hex[:5]}"
        pod = {"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Pending"},
               "metadata": {"name": name, "namespace": meta["namespace"], "labels": labels, "ownerReferences": [{
                   "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                   "controller": True, "blockOwnerDeletion": True}]},
               "spec": copy.deepcopy(template.get("spec") or {})}
        await self._store((resource("v1/pods"), meta["namespace"], name), self._stamp_new(pod), "ADDED")

    def _has_status(self, resource: Any) -> bool:
        try:
            return "status" in self.resources[resource].subresources
        except KeyError:
            return False

    async def _store(self, key: Any, obj: dict[str, Any], event: str) -> None:
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._refresh_index()
            self._objects[key] = obj
            self._index.setdefault(key[0], {})[key[1:]] = self._objects[key]
            self._indexed += 1
        await self._publish(key[0], event, obj)

    async def _publish(self, resource: Any, event: str, obj: dict[str, Any]) -> None:
        message = {"type": event, "object": json.loads(json.dumps(obj))}
        self._history.setdefault(resource, []).append(
            (int(obj["metadata"]["resourceVersion"]), message))
        await self._buses[resource].put(message)

    async def _delete(self, key: Any, policy: str | None = "Background") -> None:
        """Delete the object at ``key``, its dependents as ``policy`` says (None: the kind's
        default, as the API server's :func:`_default_policy` gives it)."""
        obj = self._objects[key]
        meta = obj.raw.get("metadata", {})
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                now = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
                updated = _merge_patch(obj.raw, {"metadata": {"deletionTimestamp": now}})
                updated["metadata"]["resourceVersion"] = self._next_version()
                await self._store(key, updated, "MODIFIED")
            return
        if (policy or _default_policy(key[0])) == "Orphan":
            await self._orphan_dependents(meta.get("uid"))
        raw = copy.deepcopy(obj.raw)
        raw.setdefault("metadata", {})["resourceVersion"] = self._next_version()
        obj.delete()
        await self._publish(key[0], "DELETED", raw)
        await self._collect_dependents(meta.get("uid"))

    async def _orphan_dependents(self, uid: str | None) -> None:
        """What the garbage collector does for an owner deleted with the ``orphan`` finalizer:
        each dependent loses its references to that owner and stays (garbagecollector.go,
        ``orphanDependents``)."""
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            owners = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if not any(owner.get("uid") == uid for owner in owners):
                continue
            updated = copy.deepcopy(obj.raw)
            updated["metadata"]["ownerReferences"] = [o for o in owners if o.get("uid") != uid]
            updated["metadata"]["resourceVersion"] = self._next_version()
            await self._store(key, updated, "MODIFIED")

    async def _collect_dependents(self, uid: str | None) -> None:
        """Background cascading deletion, as the garbage collector does: a dependent of the
        deleted owner goes only if none of its owners is left; one that has another owner
        loses the references to owners that are gone (kubernetes/kubernetes,
        pkg/controller/garbagecollector/garbagecollector.go, ``attemptToDeleteItem``: solid
        owners keep the item, and its dangling references are patched away)."""
        if not uid:
            return
        alive = {obj.raw.get("metadata", {}).get("uid") for obj in self._objects.values() if not obj.deleted}
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            owners = obj.raw.get("metadata", {}).get("ownerReferences", [])
            if not any(owner.get("uid") == uid for owner in owners):
                continue
            solid = [owner for owner in owners if owner.get("uid") in alive]
            if not solid:
                await self._delete(key)
                continue
            updated = copy.deepcopy(obj.raw)
            updated["metadata"]["ownerReferences"] = solid
            updated["metadata"]["resourceVersion"] = self._next_version()
            await self._store(key, updated, "MODIFIED")


def _propagation(request: Any, body: Any) -> str | None:
    """The propagation policy a delete asks for, read as the API server reads DeleteOptions:
    from the body alone when one is sent, else from the query (k8s.io/apiserver,
    pkg/endpoints/handlers/delete.go, ``DeleteResource``); the legacy ``orphanDependents``
    too. None: the kind's default."""
    options = body if request.body else request.params
    policy = options.get("propagationPolicy")
    if policy is None and str(options.get("orphanDependents", "")).lower() in ("true", "false"):
        policy = "Orphan" if str(options["orphanDependents"]).lower() == "true" else "Background"
    return str(policy) if policy else None


def _default_policy(resource: Any) -> str:
    """What a delete without a policy does with the dependents: batch/v1 Jobs and core/v1
    ReplicationControllers orphan them, for compatibility (kubernetes/kubernetes,
    pkg/registry/batch/job/strategy.go and pkg/registry/core/replicationcontroller/strategy.go,
    ``DefaultGarbageCollectionPolicy``); every other kind Kiln meets deletes them
    (k8s.io/apiserver, pkg/registry/generic/registry/store.go). Foreground deletion is not
    modelled: it deletes the dependents too, only the owner goes first here."""
    orphaning = {("batch", "v1", "jobs"), ("", "v1", "replicationcontrollers")}
    return "Orphan" if (resource.group or "", resource.version, resource.plural) in orphaning else "Background"
