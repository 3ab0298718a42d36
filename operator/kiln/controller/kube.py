"""The one way Kiln talks to the API server: get, server-side apply, status patch, events.

Built on the ``kubernetes`` asyncio client's transport. Paths come from the table of kinds
Kiln manages (no discovery round-trips); writes use server-side apply with one field
manager. ``KIND_PATHS`` is also what the chart's RBAC is checked against.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from kubernetes.aio import client as aio_client
from kubernetes.aio import config as aio_config
from kubernetes.aio.client.exceptions import ApiException

from ..api import Reason
from ..errors import SpecInvalid
from ..render import FIELD_MANAGER

__all__ = ["KubeApi", "Kind", "KINDS", "API_VERSION_OF", "ApiException", "kind_of", "REFUSED_STATUSES",
           "PARALLEL_CALLS", "API_CONNECTIONS", "concurrently"]

T = TypeVar("T")

# Calls one reconcile has in flight at once (the reads of its children, the writes of one
# stage). Reconciles are bounded too (MAX_CONCURRENT_RECONCILES in context.py): the API
# server sees at most the product.
PARALLEL_CALLS = 6
# Connections the operator's client keeps to the API server (the kubernetes client's default
# is 100). Each TLS connection holds a 256 KiB read buffer of its own (CPython,
# Lib/asyncio/sslproto.py: ``SSLProtocol.max_size``): at a thousand services the operator had
# 130 open, a few reconciles' worth of calls at a time needs far fewer.
API_CONNECTIONS = 32

# The API server refuses the object itself (invalid, malformed, too large): writing it again
# cannot succeed until the manifest changes.
REFUSED_STATUSES = (400, 413, 422)


def _refusal(error: ApiException, obj: dict[str, Any]) -> SpecInvalid:
    """The API server's own message, one line, as a permanent error naming the object."""
    try:
        message = str(json.loads(error.reason or "").get("message") or "")
    except (ValueError, AttributeError):
        message = str(error.reason or "")
    message = " ".join(message.split())[:400] or f"HTTP {error.status}"
    name = str(obj["metadata"].get("name"))[:80]
    return SpecInvalid(f"the API server refused {obj['kind']} {name}: {message}",
                       reason=Reason.APPLY_REFUSED.value)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


KINDS: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in (
    Kind("serving.kiln.dev/v1alpha1", "LLMService", "llmservices", True),
    Kind("serving.kiln.dev/v1alpha1", "LLMEngine", "llmengines", False),
    Kind("batch/v1", "Job", "jobs", True),
    Kind("apps/v1", "Deployment", "deployments", True),
    Kind("apps/v1", "StatefulSet", "statefulsets", True),
    Kind("v1", "Service", "services", True),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    Kind("v1", "Secret", "secrets", True),
    Kind("v1", "Pod", "pods", True),
    Kind("v1", "Event", "events", True),
    Kind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", True),
    Kind("http.keda.sh/v1alpha1", "HTTPScaledObject", "httpscaledobjects", True),
    Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    Kind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets", True),
    Kind("v1", "ServiceAccount", "serviceaccounts", True),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    Kind("v1", "ConfigMap", "configmaps", True),
    Kind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools", True),
    Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", True),
    Kind("networking.istio.io/v1", "DestinationRule", "destinationrules", True),
    Kind("coordination.k8s.io/v1", "Lease", "leases", True),
)}


# A kind's apiVersion, by kind alone (each kind above is served at one version).
API_VERSION_OF: dict[str, str] = {kind: api_version for api_version, kind in KINDS}


def kind_of(obj: dict[str, Any]) -> Kind:
    return KINDS[(obj["apiVersion"], obj["kind"])]


async def concurrently(calls: Iterable[Awaitable[T]], limit: int = PARALLEL_CALLS) -> list[T | Exception]:
    """Await ``calls``, at most ``limit`` at a time: each one's result, or the exception it
    raised, in the order given (so that the caller can act on the first failure in that order)."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call
    results = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, Exception):
            raise result  # a cancellation or an exit is not a call's failure
    return results  # type: ignore[return-value]


class KubeApi:
    """Async access to the handful of calls the operator makes."""

    def __init__(self, api_client: aio_client.ApiClient) -> None:
        self._client = api_client
        self._served: set[tuple[str, str]] = set()  # (apiVersion, kind) seen in discovery

    @classmethod
    async def from_kubeconfig(cls) -> KubeApi:
        configuration = aio_client.Configuration(connection_pool_maxsize=API_CONNECTIONS)
        try:
            aio_config.load_incluster_config(client_configuration=configuration)
        except aio_config.ConfigException:
            # KUBECONFIG as it is now (kubernetes_asyncio reads it once, at import).
            where = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            try:
                await aio_config.load_kube_config(config_file=where, client_configuration=configuration)
            except aio_config.ConfigException as error:
                raise SpecInvalid(
                    f"no cluster configured ({where}: {error}): point KUBECONFIG at a kubeconfig file or "
                    "create ~/.kube/config (for example with `kind create cluster`); "
                    "`kiln demo` runs without a cluster") from None
            except (OSError, yaml.YAMLError, TypeError, ValueError, AttributeError, KeyError) as error:
                # A file that is not a kubeconfig: kubernetes_asyncio reads whatever YAML it holds.
                why = " ".join(str(error.strerror if isinstance(error, OSError) else error).split())[:120]
                raise SpecInvalid(
                    f"the kubeconfig {where} cannot be read ({type(error).__name__}: {why}): point "
                    "KUBECONFIG at a kubeconfig file (`kubectl config view` shows what it should "
                    "hold)") from None
        return cls(aio_client.ApiClient(configuration))

    @classmethod
    def for_url(cls, url: str, token: str = "kiln", ca_file: str | None = None) -> KubeApi:
        """A client with a bearer token; TLS verified against ``ca_file`` when given (a real
        API server), not at all otherwise (the emulator speaks plain HTTP)."""
        configuration = aio_client.Configuration(host=url.rstrip("/"), connection_pool_maxsize=API_CONNECTIONS)
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        configuration.verify_ssl = ca_file is not None
        configuration.ssl_ca_cert = ca_file
        return cls(aio_client.ApiClient(configuration))

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, method: str, path: str, body: Any = None, *,
                    content_type: str = "application/json",
                    query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        request = self._client.param_serialize(
            method, path, query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        if hasattr(request, "__await__"):
            request = await request
        response = await self._client.call_api(*request)
        data = await response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=data.decode(errors="replace")[:500])
        return json.loads(data) if data else {}

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = "application/json",
                      query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        """Any call by path, for the kinds outside :data:`KINDS` that a simulated kubelet
        writes (Nodes, Bindings); the operator itself keeps to the typed methods."""
        return await self._call(method, path, body, content_type=content_type, query=query)

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return await self._call("GET", KINDS[(api_version, kind)].path(namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves this kind (e.g. is the LeaderWorkerSet CRD installed?).

        Discovery, not a get: a 404 on an object cannot tell a missing object from a missing
        API. A positive answer is remembered; a negative one is asked again next time, so
        installing the CRD is noticed at the next reconcile."""
        if (api_version, kind) in self._served:
            return True
        try:
            found = await self._call("GET", f"/apis/{api_version}" if "/" in api_version
                                     else f"/api/{api_version}")
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        if any(r.get("kind") == kind for r in found.get("resources") or []):
            self._served.add((api_version, kind))
            return True
        return False

    async def list(self, api_version: str, kind: str, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        result = await self._call("GET", KINDS[(api_version, kind)].path(namespace), query=query)
        return list(result.get("items") or [])

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, field manager ``kiln``, taking over conflicting fields.

        An object the API server refuses raises SpecInvalid with its message: the service
        stalls once instead of retrying a write that cannot succeed."""
        kind = kind_of(obj)
        meta = obj["metadata"]
        try:
            return await self._call(
                "PATCH", kind.path(meta.get("namespace"), meta["name"]), body=obj,
                content_type="application/apply-patch+yaml",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")])
        except ApiException as error:
            if error.status in REFUSED_STATUSES:
                raise _refusal(error, obj) from None
            raise

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create ``obj``; None if an object of that name exists already. Unlike an apply, of
        several concurrent creates exactly one succeeds, so "I started it" is known."""
        meta = obj["metadata"]
        try:
            return await self._call("POST", kind_of(obj).path(meta.get("namespace")), body=obj,
                                    query=[("fieldManager", FIELD_MANAGER)])
        except ApiException as error:
            if error.status == 409:
                return None
            raise

    async def delete(self, obj: dict[str, Any], *, background: bool = False,
                     unchanged: bool = False) -> bool:
        """Delete ``obj`` (gone already is fine), the very object read if it has a UID;
        whether this call deleted it. ``background``: its dependents too, at once.
        ``unchanged``: only if it is still at the resourceVersion read (a precondition, as the
        UID: k8s.io/apiserver, pkg/storage/interfaces.go, ``Preconditions.Check``).
        A batch/v1 Job deleted without a propagation policy orphans its pods, which would go
        on using the GPUs (kubernetes/kubernetes, pkg/registry/batch/job/strategy.go:
        ``DefaultGarbageCollectionPolicy`` is OrphanDependents for batch/v1)."""
        meta = obj["metadata"]
        query = [("propagationPolicy", "Background")] if background else []
        # Only the object that was read: one deleted and made again under its name since
        # (by someone else) is refused by the API server, 409, and left alone.
        preconditions = {"uid": meta["uid"]} if meta.get("uid") else {}
        if unchanged:
            preconditions["resourceVersion"] = meta["resourceVersion"]
        # With a body, the API server reads the DeleteOptions from it alone and ignores the
        # query's (k8s.io/apiserver, pkg/endpoints/handlers/delete.go ``DeleteResource``): the
        # propagation policy goes in the body too, or a Job's pods are orphaned.
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions,
                **({"propagationPolicy": "Background"} if background else {})} if preconditions else None
        try:
            await self._call("DELETE", kind_of(obj).path(meta.get("namespace"), meta["name"]),
                             body, query=query)
        except ApiException as error:
            if error.status not in (404, 409):
                raise
            return False
        return True

    async def patch(self, obj: dict[str, Any], patch: dict[str, Any], *,
                    resource_version: str | None = None, subresource: str | None = None) -> dict[str, Any]:
        """A merge patch of ``obj`` (or of its ``subresource``). ``resource_version``: only onto
        that version of the object, else 409 Conflict (a resourceVersion in the patched object
        is a precondition: k8s.io/apiserver, pkg/registry/generic/registry/store.go, ``Update``,
        "the object has been modified; please apply your changes to the latest version")."""
        meta = obj["metadata"]
        if resource_version is not None:
            patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}
        return await self._call("PATCH", kind_of(obj).path(meta.get("namespace"), meta["name"], subresource),
                                body=patch, content_type="application/merge-patch+json")

    async def json_patch(self, obj: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
        """An RFC 6902 JSON patch of ``obj``: applied to the object as stored, its ``test``
        operations are preconditions (422 Unprocessable if one fails), and an ``add`` to a
        list's end (``/-``) from concurrent writers appends each."""
        meta = obj["metadata"]
        return await self._call("PATCH", kind_of(obj).path(meta.get("namespace"), meta["name"]),
                                body=operations, content_type="application/json-patch+json")

    async def patch_status(self, obj: dict[str, Any], status: dict[str, Any], *,
                           resource_version: str | None = None) -> dict[str, Any]:
        """A merge patch of ``obj``'s status (see :meth:`patch`)."""
        return await self.patch(obj, {"status": status}, resource_version=resource_version, subresource="status")
