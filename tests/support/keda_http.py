"""KEDA's HTTP add-on interceptor itself (kedacore/http-add-on v0.12.0, built by
``tests/prometheus/build`` from its Go module) in front of a service on the real control plane.
Kiln renders from v0.15.0's source (``kiln/render/wake.py``); the Go module proxy serves
v0.12.0, whose HTTPScaledObject CRD has the same ``spec`` schema as v0.15.0's
(``tests/support/schemas/http.keda.sh_httpscaledobjects.yaml``).

The interceptor is the add-on's own binary, running as the admin: it lists the
HTTPScaledObjects through the API server, routes a request by host and path prefix (no route:
its 404), counts it as pending for its HTTPScaledObject, and holds it until the Service named by
``scaleTargetRef.service`` has a ready endpoint in its EndpointSlices (the controller-manager's
endpointslice controller writes them), at most the HTTPScaledObject's ``timeouts.conditionWait``,
past which it answers 502 (``interceptor/middleware/routing.go``,
``interceptor/forward_wait_func.go``, ``interceptor/proxy_handlers.go``).

Forwarding a held request to the woken Pod is not exercised here: the interceptor dials
``<service>.<namespace>:<port>`` through cluster DNS, which this machine lacks, and a forward
proxy cannot stand in for it (the interceptor keeps the client's ``Host``, and Go's transport
writes that host, not the target's, into a proxied request line: net/http ``request.go``,
``Request.write``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from kiln.controller.kube import KubeApi
from kiln.demo.interceptor import register_interceptor, unregister_interceptor

from .prometheus import free_port
from .real_cluster import ControlPlane, stop_process, tied_to_parent

__all__ = ["RealInterceptor"]


class RealInterceptor:
    """The interceptor on ``plane``, registered as the add-on's interceptor Service in
    namespace ``keda`` (which must exist) until :meth:`stop`."""

    def __init__(self, binaries: Path, plane: ControlPlane, api: KubeApi) -> None:
        self.binaries, self.plane, self.api = binaries, plane, api
        self.proxy_port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-interceptor-")
        self.log = Path(self._dir.name) / "interceptor.log"
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, ready_timeout: float = 60.0) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig),
               "KEDA_HTTP_CURRENT_NAMESPACE": "keda", "KEDA_HTTP_PROXY_PORT": str(self.proxy_port),
               "KEDA_HTTP_ADMIN_PORT": str(free_port()), "OTEL_PROM_EXPORTER_PORT": str(free_port())}
        with self.log.open("w") as log:
            self._process = subprocess.Popen([str(self.binaries / "interceptor")], env=env, stdout=log,
                                             stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        deadline = time.monotonic() + ready_timeout
        async with aiohttp.ClientSession() as client:
            while not await self._ready(client):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the interceptor did not start: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.2)
        await register_interceptor(self.api, self.proxy_port)

    async def _ready(self, client: aiohttp.ClientSession) -> bool:
        """What a kubelet's readiness probe asks: the proxy port answers a ``kube-probe/``
        user agent from its probe handler, healthy once the routing table has synced
        (``interceptor/middleware/routing.go``, ``isProbe``; ``interceptor/handler/probe.go``)."""
        try:
            async with client.get(f"http://127.0.0.1:{self.proxy_port}/",
                                  headers={"User-Agent": "kube-probe/1.35"}) as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    async def stop(self) -> None:
        await unregister_interceptor(self.api)
        if self._process is not None:
            stop_process(self._process, 10)
        self._dir.cleanup()
