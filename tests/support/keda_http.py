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

The add-on's scaler (:class:`AddOnScaler`) finds the interceptors through the EndpointSlices of
their admin Service and reads each one's pending counts (``GET /queue``,
``scaler/queue_pinger.go``; ``pkg/queue/queue_rpc.go``), and answers KEDA's external-scaler
calls from them (``scaler/handlers.go``: ``IsActive`` while the metric is above zero;
``GetMetricSpec``'s target is the HTTPScaledObject's ``scalingMetric``). KEDA itself is a
stand-in here (:class:`KedaActivation`), doing only what it does to wake a target from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import grpc

from kiln.controller.kube import KINDS, ApiException, KubeApi
from kiln.demo.interceptor import INTERCEPTOR_NODE, register_interceptor, unregister_interceptor

from .prometheus import free_port
from .real_cluster import ControlPlane, stop_process, tied_to_parent

__all__ = ["AddOnOperator", "AddOnScaler", "KedaActivation", "RealInterceptor", "pod_address", "private_hosts",
           "ready_endpoints"]


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


async def ready_endpoints(api: KubeApi, namespace: str, service: str) -> list[str]:
    """The ready addresses the EndpointSlices of ``service`` list (as the endpointslice
    controller writes them, labelled ``kubernetes.io/service-name``)."""
    slices = await api.request("GET", f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                               query=[("labelSelector", f"kubernetes.io/service-name={service}")])
    return [address for s in slices["items"] for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") for address in e["addresses"]]


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
                 hosts: dict[str, str] | None = None, admin_service: str | None = None) -> None:
        """``admin_service``: the Service the add-on's scaler finds the admin port by, its Pod
        then on :func:`pod_address` (an EndpointSlice lists no loopback address) and on a Node
        of its own, which the endpointslice controller requires
        (k8s.io/endpointslice v0.35.4 ``reconciler.go``: a Pod whose Node is not found is skipped)."""
        self.binaries, self.plane, self.api = binaries, plane, api
        self.hosts, self.admin_service = dict(hosts or {}), admin_service
        self.address = (pod_address() or "127.0.0.1") if admin_service else "127.0.0.1"
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
        if self.admin_service:
            try:
                await self.api.request("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                                                 "metadata": {"name": INTERCEPTOR_NODE}})
            except ApiException as error:
                if error.status != 409:
                    raise
        await register_interceptor(self.api, self.proxy_port, address=self.address,
                                   admin=(self.admin_service, self.admin_port) if self.admin_service else None)
        if self.admin_service:
            await self._listed(self.admin_service, deadline)

    async def _listed(self, service: str, deadline: float) -> None:
        """Until the endpointslice controller lists this interceptor's Pod behind ``service``
        (where the add-on's scaler looks for it)."""
        while self.address not in await ready_endpoints(self.api, "keda", service):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no EndpointSlice of Service keda/{service} lists {self.address}")
            await asyncio.sleep(0.2)

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
        await unregister_interceptor(self.api, self.admin_service)
        if self.admin_service:
            with contextlib.suppress(ApiException):
                await self.api.request("DELETE", f"/api/v1/nodes/{INTERCEPTOR_NODE}")
        if self._process is not None:
            stop_process(self._process, 10)
        self._dir.cleanup()


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


@cache
def externalscaler(proto_dir: Path) -> tuple[ModuleType, ModuleType]:
    """KEDA's externalscaler.proto compiled by grpcio-tools: its messages and its stub."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="kiln-externalscaler-"))
    if protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                    "externalscaler.proto"]) != 0:
        raise RuntimeError(f"protoc could not compile {proto_dir / 'externalscaler.proto'}")
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("externalscaler_pb2"), importlib.import_module("externalscaler_pb2_grpc")
    finally:
        sys.path.remove(str(out))


class AddOnScaler:
    """The add-on's scaler on ``plane`` until :meth:`stop`, running as the admin, pinging the
    interceptors behind Service ``ADMIN_SERVICE`` in namespace ``keda`` on ``admin_port``;
    KEDA's calls to it over gRPC on this machine (its configuration: ``scaler/config.go``)."""

    ADMIN_SERVICE = "keda-add-ons-http-interceptor-admin"

    def __init__(self, binaries: Path, plane: ControlPlane, admin_port: int) -> None:
        self.binaries, self.plane, self.admin_port = binaries, plane, admin_port
        self.port = free_port()
        self._pb, self._grpc = externalscaler(binaries / "keda-proto")
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-http-add-on-scaler-")
        self.log = Path(self._dir.name) / "scaler.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self, ready_timeout: float = 60.0) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.plane.kubeconfig), "KEDA_HTTP_SCALER_PORT": str(self.port),
               "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE": "keda",
               "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE": self.ADMIN_SERVICE,
               "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT": "keda-add-ons-http-interceptor",
               "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT": str(self.admin_port)}
        with self.log.open("w") as log:
            self._process = subprocess.Popen([str(self.binaries / "http-add-on-scaler")], env=env, stdout=log,
                                             stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        try:
            await asyncio.wait_for(self._channel.channel_ready(), ready_timeout)
        except TimeoutError:
            raise RuntimeError(f"the add-on's scaler did not start: {self.log.read_text()[-2000:]}") from None

    def _ref(self, scaled_object: dict[str, Any], trigger: dict[str, Any]) -> Any:
        """The reference KEDA sends for ``trigger`` of ``scaled_object``
        (kedacore/keda ``pkg/scalers/external_scaler.go``, ``NewExternalPushScaler``)."""
        meta = scaled_object["metadata"]
        return self._pb.ScaledObjectRef(name=meta["name"], namespace=meta["namespace"],
                                        scalerMetadata=trigger.get("metadata") or {})

    async def is_active(self, scaled_object: dict[str, Any], trigger: dict[str, Any]) -> bool:
        stub = self._grpc.ExternalScalerStub(self._channel)
        return bool((await stub.IsActive(self._ref(scaled_object, trigger), timeout=5)).result)

    async def metric(self, scaled_object: dict[str, Any], trigger: dict[str, Any]) -> tuple[str, int, int]:
        """(metric name, its target per replica, its value now), as KEDA's HPA reads them."""
        stub = self._grpc.ExternalScalerStub(self._channel)
        ref = self._ref(scaled_object, trigger)
        [spec] = (await stub.GetMetricSpec(ref, timeout=5)).metricSpecs
        [value] = (await stub.GetMetrics(self._pb.GetMetricsRequest(scaledObjectRef=ref, metricName=spec.metricName),
                                         timeout=5)).metricValues
        return spec.metricName, int(spec.targetSize), int(value.metricValue)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._process is not None:
            stop_process(self._process, 10)
        self._dir.cleanup()


class KedaActivation:
    """KEDA itself, as far as waking from zero goes (kedacore/keda v2.18.3): every ``period``
    seconds, each ScaledObject in ``namespace`` whose ``external-push`` trigger the add-on's
    operator wrote is asked of ``scaler`` (``IsActive``), and an active one whose target is at
    zero is raised to its ``minReplicaCount``, or one, through the target's ``/scale``
    subresource (``pkg/scaling/executor/scale_scaledobjects.go``, ``scaleFromZeroOrIdle``). The
    HPA KEDA makes for scaling beyond that is not run. ``active``: the ScaledObjects the scaler
    called active, once per call; ``wakes``: "<namespace>/<target>" raised."""

    def __init__(self, api: KubeApi, scaler: AddOnScaler, namespace: str, period: float = 0.1) -> None:
        self.api, self.scaler, self.namespace, self.period = api, scaler, namespace, period
        self.active: list[str] = []
        self.wakes: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KedaActivation:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            listed = await self.api.request("GET", KINDS[("keda.sh/v1alpha1", "ScaledObject")].path(self.namespace))
            for scaled_object in listed["items"]:
                for trigger in scaled_object["spec"].get("triggers") or []:
                    if trigger.get("type") != "external-push":
                        continue
                    try:
                        active = await self.scaler.is_active(scaled_object, trigger)
                    except grpc.aio.AioRpcError:
                        continue  # KEDA asks again at its next poll
                    if active:
                        self.active.append(scaled_object["metadata"]["name"])
                        await self._activate(scaled_object)
            await asyncio.sleep(self.period)

    async def _activate(self, scaled_object: dict[str, Any]) -> None:
        spec, target = scaled_object["spec"], scaled_object["spec"]["scaleTargetRef"]
        path = KINDS[(target["apiVersion"], target["kind"])].path(self.namespace, target["name"], "scale")
        if (await self.api.request("GET", path))["spec"].get("replicas", 0) != 0:
            return
        replicas = spec.get("minReplicaCount") or 1
        await self.api.request("PATCH", path, {"spec": {"replicas": replicas}},
                               content_type="application/merge-patch+json")
        self.wakes.append(f"{self.namespace}/{target['name']}")
