"""A simulated KEDA HTTP add-on: its interceptor (holds requests while a target has no ready
replica) and the part of its scaler that wakes a target (pending requests raise it to one).

What it does is what kedacore/http-add-on v0.15.0 does, as its source says:

- **Routing** (``pkg/routing/key.go``, ``interceptor/middleware/routing.go``): a request
  goes to the HTTPScaledObject whose ``hosts`` hold the request's ``Host`` with the port
  stripped (no hosts, ``""`` or ``*``: any host) and whose ``pathPrefixes`` match its path
  (none: any path), the longest prefix winning; no match is a 404.
- **Counting**: each routed request is pending from its arrival until its response ends;
  the scaler reports that count per HTTPScaledObject.
- **Holding** (``interceptor/proxy_handlers.go``): the request waits until
  ``scaleTargetRef.service`` has a ready endpoint, at most ``spec.timeouts.conditionWait``
  (default ``KEDA_CONDITION_WAIT_TIMEOUT``, 1.5 s, ``interceptor/config/timeouts.go``); past
  that it is answered 502 ``error on backend (...)``. Then it is proxied, streamed, to
  ``<service>.<namespace>:<port>``.
- **Waking**: KEDA activates a ScaledObject whose external-push metric (the pending count)
  is above zero: a target at zero replicas is set to one through its ``/scale``
  subresource. For an LLMService that subresource's replicas are ``spec.replicas``, which
  is what this scaler patches. Scaling beyond one and back to zero stay KEDA's (an HPA on
  the same metric, after ``scaledownPeriod``) and are not simulated.

It runs as a Pod behind the Service ``keda-add-ons-http-interceptor-proxy`` in namespace
``keda`` (which must exist), so a client reaches it through the cluster network of
:mod:`kiln.demo.network`, like any in-cluster client. The Pod is bound to a node of its own,
``INTERCEPTOR_NODE``, which no simulated kubelet runs: its status is this process's, and
:meth:`SimulatedHttpAddOn.stop` deletes it and the Service.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiohttp.web

from ..api import API_VERSION
from ..controller.kube import ApiException, KubeApi
from ..render.wake import (HTTP_SCALED_OBJECT_API, INTERCEPTOR_NAMESPACE, INTERCEPTOR_PORT,
                           INTERCEPTOR_SERVICE)
from .network import ServiceNotReachable, resolve

__all__ = ["SimulatedHttpAddOn", "Held", "INTERCEPTOR_NODE", "activate", "relay", "register_interceptor",
           "unregister_interceptor"]

INTERCEPTOR_NODE = "keda-add-ons-http"
DEFAULT_CONDITION_WAIT_SECONDS = 1.5
_POLL_SECONDS = 0.05
_POD = "keda-add-ons-http-interceptor-0"
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Hop-by-hop headers a proxy does not forward (RFC 9110 7.6.1), and what aiohttp recomputes.
_NOT_FORWARDED = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                  "proxy-authorization", "proxy-authenticate", "content-length", "host"}


def _seconds(duration: str | None) -> float:
    """A Go duration of one unit ("126s", "1500ms", "2m"), as the CRD's timeouts are written."""
    match = _DURATION.match(duration or "")
    if not match:
        return DEFAULT_CONDITION_WAIT_SECONDS
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def relay(request: aiohttp.web.Request, upstream: aiohttp.ClientResponse,
                dropped: set[str]) -> aiohttp.web.StreamResponse:
    """``upstream``'s status, headers (less the ``dropped`` ones, lower-case) and body, streamed
    back to ``request``'s client as they arrive."""
    response = aiohttp.web.StreamResponse(status=upstream.status, headers={
        k: v for k, v in upstream.headers.items() if k.lower() not in dropped})
    await response.prepare(request)
    async for chunk in upstream.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


@dataclass
class Held:
    """One request the interceptor routed: how long it waited for a ready replica."""

    http_scaled_object: str
    cold: bool            # the target had no ready endpoint when it arrived
    waited_seconds: float
    status: int = 0


@dataclass
class SimulatedHttpAddOn:
    api: KubeApi
    log: list[Held] = field(default_factory=list)
    wakes: list[str] = field(default_factory=list)  # "<namespace>/<name>" set from 0 to 1
    _pending: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._runner: aiohttp.web.AppRunner | None = None
        self._scaler: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    def pending(self, key: str) -> int:
        return self._pending[key]

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        await self._register()
        self._scaler = asyncio.create_task(self._scale_loop())

    async def stop_scaling(self) -> None:
        """The scaler stops (KEDA down); the interceptor keeps holding and counting."""
        if self._scaler is not None:
            self._scaler.cancel()
            await asyncio.gather(self._scaler, return_exceptions=True)
            self._scaler = None

    async def stop(self) -> None:
        await self.stop_scaling()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await unregister_interceptor(self.api)

    async def _register(self) -> None:
        await register_interceptor(self.api, self.port)

    async def _route(self, host: str, path: str) -> dict[str, Any] | None:
        hostname = _hostname(host).lower()
        best: tuple[int, dict[str, Any]] | None = None
        for hso in await self.api.list(HTTP_SCALED_OBJECT_API, "HTTPScaledObject"):
            spec = hso.get("spec") or {}
            hosts = [_hostname(h).lower() for h in spec.get("hosts") or [""]]
            if hostname not in hosts and not {"", "*"} & set(hosts):
                continue
            for prefix in spec.get("pathPrefixes") or [""]:
                trimmed = prefix.strip("/")
                if trimmed and not (path.strip("/") + "/").startswith(trimmed + "/"):
                    continue
                if best is None or len(trimmed) > best[0]:
                    best = (len(trimmed), hso)
        return best[1] if best else None

    async def _ready(self, host: str, port: int) -> tuple[str, int] | None:
        try:
            return await resolve(self.api, host, port)
        except ServiceNotReachable:
            return None

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        hso = await self._route(request.host, request.path)
        if hso is None:
            return aiohttp.web.Response(status=404, text="no HTTPScaledObject routes this host and path")
        meta, spec = hso["metadata"], hso["spec"]
        key = f"{meta['namespace']}/{meta['name']}"
        target = spec["scaleTargetRef"]
        upstream = f"{target['service']}.{meta['namespace']}.svc"
        port = int(target.get("port") or 0)
        wait = _seconds((spec.get("timeouts") or {}).get("conditionWait"))
        self._pending[key] += 1
        started = time.monotonic()
        held = Held(key, cold=await self._ready(upstream, port) is None, waited_seconds=0.0)
        self.log.append(held)
        try:
            backend = None
            while backend is None:
                backend = await self._ready(upstream, port)
                if backend is None:
                    if time.monotonic() - started > wait:
                        held.status, held.waited_seconds = 502, time.monotonic() - started
                        return aiohttp.web.Response(status=502, text=(
                            f"error on backend (no ready endpoint of {upstream}:{port} "
                            f"within {wait:g}s)"))
                    await asyncio.sleep(_POLL_SECONDS)
            held.waited_seconds = time.monotonic() - started
            return await self._forward(request, backend, held)
        finally:
            self._pending[key] -= 1

    async def _forward(self, request: aiohttp.web.Request, backend: tuple[str, int],
                       held: Held) -> aiohttp.web.StreamResponse:
        assert self._session is not None
        ip, port = backend
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
        async with self._session.request(request.method, f"http://{ip}:{port}{request.path_qs}",
                                         headers=headers, data=await request.read()) as upstream:
            held.status = upstream.status
            return await relay(request, upstream, _NOT_FORWARDED)

    async def _scale_loop(self) -> None:
        while True:
            for key in [k for k, n in self._pending.items() if n > 0]:
                namespace, name = key.split("/", 1)
                woken = await activate(self.api, namespace, name)
                if woken is not None:
                    self.wakes.append(woken)
            await asyncio.sleep(_POLL_SECONDS)


async def activate(api: KubeApi, namespace: str, name: str) -> str | None:
    """What KEDA does when the add-on's scaler reports requests pending for the
    HTTPScaledObject ``namespace/name``: its target, an LLMService at zero replicas, is set to
    one through its ``/scale`` subresource (``spec.replicas``). ``"<namespace>/<service>"``
    when it was woken, None when there was nothing to wake."""
    hso = await api.get(HTTP_SCALED_OBJECT_API, "HTTPScaledObject", name, namespace)
    if hso is None:
        return None
    target = hso["spec"]["scaleTargetRef"]
    if (target.get("apiVersion"), target.get("kind")) != (API_VERSION, "LLMService"):
        return None
    service = await api.get(API_VERSION, "LLMService", target["name"], namespace)
    if service is None or (service.get("spec") or {}).get("replicas", 1) != 0:
        return None
    await api._call(
        "PATCH", f"/apis/{API_VERSION}/namespaces/{namespace}/llmservices/{target['name']}",
        body={"spec": {"replicas": 1}}, content_type="application/merge-patch+json")
    return f"{namespace}/{target['name']}"


async def register_interceptor(api: KubeApi, port: int, *, address: str = "127.0.0.1",
                               admin: tuple[str, int] | None = None) -> None:
    """The add-on's interceptor Service in namespace keda and one ready Pod behind it, at
    ``address``:``port`` (where this machine's interceptor listens); with ``admin`` (a Service
    name and the port), the Service its scaler finds the interceptors' admin port by."""
    labels = {"app.kubernetes.io/component": "interceptor",
              "app.kubernetes.io/part-of": "keda-add-ons-http"}
    await api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": INTERCEPTOR_SERVICE, "namespace": INTERCEPTOR_NAMESPACE},
        "spec": {"selector": labels, "ports": [
            {"name": "http", "port": INTERCEPTOR_PORT, "targetPort": "http"}]}})
    ports = [{"name": "http", "containerPort": port}]
    if admin is not None:
        ports.append({"name": "admin", "containerPort": admin[1]})
        await api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": admin[0], "namespace": INTERCEPTOR_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"name": "admin", "port": admin[1], "targetPort": "admin"}]}})
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": _POD, "namespace": INTERCEPTOR_NAMESPACE, "labels": labels},
           "spec": {"nodeName": INTERCEPTOR_NODE,
                    "containers": [{"name": "interceptor", "image": "simulated", "ports": ports}]}}
    await api.apply(pod)
    await api.patch_status(pod, {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}], "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "1970-01-01T00:00:00Z"}]})


async def unregister_interceptor(api: KubeApi, admin: str | None = None) -> None:
    """What :func:`register_interceptor` made (``admin``: the admin Service's name, if any)."""
    # Its own kubelet, it confirms the Pod's deletion at once (its ports cannot change, and
    # the next add-on's will differ).
    try:
        await api.request("DELETE", f"/api/v1/namespaces/{INTERCEPTOR_NAMESPACE}/pods/{_POD}",
                          query=[("gracePeriodSeconds", "0")])
    except ApiException as error:
        if error.status != 404:
            raise
    await api.delete({"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": INTERCEPTOR_SERVICE, "namespace": INTERCEPTOR_NAMESPACE}})
    if admin is not None:
        await api.delete({"apiVersion": "v1", "kind": "Service", "metadata": {
            "name": admin, "namespace": INTERCEPTOR_NAMESPACE}})
