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

Forwarding a held request to the woken Pod: the interceptor dials
``<service>.<namespace>:<port>`` (``interceptor/middleware/routing.go``, ``streamFromHTTPSO``)
through cluster DNS, which this machine lacks. Given ``hosts``, it runs in a mount namespace of
its own (util-linux ``unshare --mount``, private propagation) whose ``/etc/hosts`` adds those
names, which Go's resolver reads before DNS (``hosts: files dns``); a name there points at an
address of this machine that an EndpointSlice may list for a Pod (:func:`pod_address`: not
loopback, which the API server refuses in an EndpointSlice: ``ValidateEndpointIP``,
k8s.io/kubernetes v1.35.4 ``pkg/apis/core/validation/validation.go``). A forward proxy cannot stand in for it (the interceptor
keeps the client's ``Host``, and Go's transport writes that host, not the target's, into a
proxied request line: net/http ``request.go``, ``Request.write``).

The add-on's operator (:class:`AddOnOperator`, the same module's ``operator``) turns each
HTTPScaledObject into KEDA's ScaledObject of the same name, controlled by it, with an
``external-push`` trigger on the add-on's scaler, and puts its finalizer on the HTTPScaledObject
(``operator/controllers/http/httpscaledobject_controller.go``, ``scaled_object.go``,
``finalizer.go``; ``pkg/k8s/scaledobject.go``).

What wakes the target is KEDA's: the add-on's scaler reads each interceptor's pending counts
from its admin port (``GET /queue``, ``pkg/queue/queue_rpc.go``: a JSON object of
``{"<namespace>/<name>": {"Concurrency": n, "RPS": r}}``) and reports the HTTPScaledObject
active while its metric is above zero (``scaler/handlers.go``, ``IsActive``; for concurrency,
the requests pending); KEDA then raises the target
from zero to one. :class:`Waker` reads the same endpoint and does what KEDA does
(:func:`kiln.demo.interceptor.activate`); KEDA and the scaler themselves are not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from kiln.controller.kube import KubeApi
from kiln.demo.interceptor import activate, register_interceptor, unregister_interceptor

from .prometheus import free_port
from .real_cluster import ControlPlane, stop_process, tied_to_parent

__all__ = ["AddOnOperator", "RealInterceptor", "Waker", "pod_address", "private_hosts"]


def pod_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the source of its default
    route), or None: where a simulated Pod can listen and still be listed as an endpoint."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # sends nothing: it only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def private_hosts() -> str | None:
    """Why a program cannot be given an ``/etc/hosts`` of its own here, or None when it can."""
    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    probe = subprocess.run([*_unshare(), "sh", "-c", "mount --bind /etc/hosts /etc/hosts"],
                           capture_output=True, text=True, timeout=10)
    return None if probe.returncode == 0 else f"unshare --mount failed: {probe.stderr.strip()[-300:]}"


def _unshare() -> list[str]:
    """A private mount namespace; as another user than root, in a user namespace of its own."""
    return ["unshare", "--mount", "--propagation", "private",
            *([] if os.geteuid() == 0 else ["--map-root-user"])]


class RealInterceptor:
    """The interceptor on ``plane``, registered as the add-on's interceptor Service in
    namespace ``keda`` (which must exist) until :meth:`stop`. ``hosts``: names it resolves
    to these addresses, as cluster DNS would (see the module's docstring)."""

    def __init__(self, binaries: Path, plane: ControlPlane, api: KubeApi,
                 hosts: dict[str, str] | None = None) -> None:
        self.binaries, self.plane, self.api = binaries, plane, api
        self.hosts = dict(hosts or {})
        self.proxy_port, self.admin_port = free_port(), free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-interceptor-")
        self.log = Path(self._dir.name) / "interceptor.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        binary = str(self.binaries / "interceptor")
        if not self.hosts:
            return [binary]
        hosts = Path(self._dir.name) / "hosts"
        hosts.write_text(Path("/etc/hosts").read_text()
                         + "".join(f"{address} {name}\n" for name, address in self.hosts.items()))
        # exec keeps the process, so PR_SET_PDEATHSIG and stop_process's signals reach it.
        return [*_unshare(), "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$1"', str(hosts), binary]

    async def start(self, ready_timeout: float = 60.0) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig),
               "KEDA_HTTP_CURRENT_NAMESPACE": "keda", "KEDA_HTTP_PROXY_PORT": str(self.proxy_port),
               "KEDA_HTTP_ADMIN_PORT": str(self.admin_port), "OTEL_PROM_EXPORTER_PORT": str(free_port())}
        with self.log.open("w") as log:
            self._process = subprocess.Popen(self._command(), env=env, stdout=log,
                                             stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        deadline = time.monotonic() + ready_timeout
        async with aiohttp.ClientSession() as client:
            while not await self._ready(client):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the interceptor did not start: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.2)
        await register_interceptor(self.api, self.proxy_port)

    async def pending(self, client: aiohttp.ClientSession) -> dict[str, int]:
        """The requests pending per HTTPScaledObject (``"<namespace>/<name>"``), as the add-on's
        scaler reads them from the admin port."""
        async with client.get(f"http://127.0.0.1:{self.admin_port}/queue") as response:
            response.raise_for_status()
            counts = await response.json(content_type=None)  # it sets no Content-Type
        return {key: int(count["Concurrency"]) for key, count in counts.items()}

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


class Waker:
    """KEDA and the add-on's scaler, as far as waking goes: every ``period`` seconds, the
    interceptor's pending counts; an HTTPScaledObject with a request pending has its target
    raised from zero to one (:func:`kiln.demo.interceptor.activate`). ``seen``: every count
    above zero read, ``wakes``: the services woken."""

    def __init__(self, interceptor: RealInterceptor, period: float = 0.1) -> None:
        self.interceptor, self.period = interceptor, period
        self.seen: list[tuple[str, int]] = []
        self.wakes: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Waker:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as client:
            while True:
                for key, count in (await self.interceptor.pending(client)).items():
                    if count > 0:
                        self.seen.append((key, count))
                        namespace, name = key.split("/", 1)
                        woken = await activate(self.interceptor.api, namespace, name)
                        if woken is not None:
                            self.wakes.append(woken)
                await asyncio.sleep(self.period)


class AddOnOperator:
    """The add-on's operator on ``plane`` until :meth:`stop`, running as the admin, its
    external scaler named ``SCALER`` in namespace ``keda`` (the address it writes into each
    ScaledObject's trigger; the scaler itself is not run)."""

    SCALER, SCALER_PORT = "keda-add-ons-http-external-scaler", 9090

    def __init__(self, binaries: Path, plane: ControlPlane) -> None:
        self.binaries, self.plane = binaries, plane
        self.probe_port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-http-add-on-operator-")
        self.log = Path(self._dir.name) / "operator.log"
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, ready_timeout: float = 60.0) -> None:
        # Its configuration: operator/controllers/http/config/config.go.
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig), "KEDA_HTTP_OPERATOR_NAMESPACE": "keda",
               "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_SERVICE": self.SCALER,
               "KEDAHTTP_OPERATOR_EXTERNAL_SCALER_PORT": str(self.SCALER_PORT)}
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(self.binaries / "http-add-on-operator"), f"--metrics-bind-address=127.0.0.1:{free_port()}",
                 f"--health-probe-bind-address=127.0.0.1:{self.probe_port}"],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        deadline = time.monotonic() + ready_timeout
        async with aiohttp.ClientSession() as client:
            while True:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with client.get(f"http://127.0.0.1:{self.probe_port}/readyz") as response:
                        if response.status == 200:
                            return
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the add-on's operator did not start: {self.log.read_text()[-2000:]}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, 10)
        self._dir.cleanup()
