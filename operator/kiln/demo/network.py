"""The demo's cluster network: in-cluster Service URLs reach the simulated pods.

What CoreDNS and kube-proxy do for a client in a real cluster, done in the client: a request
to ``http://<service>.<namespace>.svc[.cluster.local]:<port>/...`` reads that Service from
the API (an ``ExternalName`` Service is followed to the name it gives, as its DNS CNAME
is), takes the Service port with that number, picks one of the ready Pods its selector
matches (round robin) and sends the request to the Pod's IP on the target port (a number,
or the container port of that name). No other host is reachable. It is an httpx transport,
so the OpenAI Python client runs unchanged on top of it: the same code a user points at
``status.endpoints.openai`` in a real cluster.
"""

from __future__ import annotations

import importlib
import itertools
from typing import Any

from ..controller.kube import KubeApi
from ..controller.metrics import ready_pods

__all__ = ["ServiceNotReachable", "resolve", "cluster_http_client"]


class ServiceNotReachable(Exception):
    """No Service, Service port or ready Pod behind an in-cluster URL."""


def _split_host(host: str) -> tuple[str, str]:
    parts = host.split(".")
    if len(parts) >= 3 and parts[2] == "svc" and (len(parts) == 3 or
                                                   parts[3:] == ["cluster", "local"]):
        return parts[0], parts[1]
    raise ServiceNotReachable(f"{host}: not an in-cluster Service name (<name>.<namespace>.svc)")


def _container_port(pod: dict[str, Any], target: int | str) -> int | None:
    if isinstance(target, int):
        return target
    for container in pod.get("spec", {}).get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


_turns = itertools.count()


async def resolve(api: KubeApi, host: str, port: int, _hops: int = 0) -> tuple[str, int]:
    """(pod IP, port) that a connection to ``host:port`` reaches, as kube-proxy routes it."""
    name, namespace = _split_host(host)
    service = await api.get("v1", "Service", name, namespace)
    if service is None:
        raise ServiceNotReachable(f"service {namespace}/{name} does not exist")
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        if _hops >= 8:
            raise ServiceNotReachable(f"service {namespace}/{name}: ExternalName loop")
        return await resolve(api, str(spec.get("externalName", "")), port, _hops + 1)
    entry = next((p for p in spec.get("ports", []) if p.get("port") == port), None)
    if entry is None:
        raise ServiceNotReachable(f"service {namespace}/{name} has no port {port}")
    selector = ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items()))
    backends = []
    for pod in ready_pods(await api.list("v1", "Pod", namespace, selector)):
        target = _container_port(pod, entry.get("targetPort", port))
        if target is not None:
            backends.append((pod["status"]["podIP"], target))
    if not backends:
        raise ServiceNotReachable(f"service {namespace}/{name}:{port} has no ready endpoints")
    return backends[next(_turns) % len(backends)]


def _httpx_of_openai() -> Any:
    """The httpx module the installed OpenAI client is built on (httpx, or its successor)."""
    import openai

    client_class = next(c for c in openai.DefaultAsyncHttpxClient.__mro__
                        if c.__name__ == "AsyncClient")
    return importlib.import_module(client_class.__module__.split(".")[0])


def cluster_http_client(api: KubeApi) -> Any:
    """An ``AsyncClient`` for ``openai.AsyncOpenAI(http_client=...)`` that routes in-cluster
    Service URLs to the Pods behind them."""
    import openai

    httpx = _httpx_of_openai()

    class ClusterTransport(httpx.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self._inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: Any) -> Any:
            try:
                ip, port = await resolve(api, request.url.host, request.url.port or 80)
            except ServiceNotReachable as error:
                raise httpx.ConnectError(str(error), request=request) from None
            request.url = request.url.copy_with(host=ip, port=port)
            return await self._inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self._inner.aclose()

    return openai.DefaultAsyncHttpxClient(transport=ClusterTransport())
