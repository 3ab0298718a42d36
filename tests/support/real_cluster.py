"""The sandbox on a real control plane: kube-apiserver, kube-controller-manager and etcd.

``tests/controlplane/start`` runs them (built from ``k8s.io/kubernetes`` Go modules).
:class:`ControlPlane` starts it, installs the CRDs Kiln's objects need and the chart's RBAC, and
hands out credentials: an admin's, and the operator ServiceAccount's, whose rights are exactly
the chart's ClusterRole, so a verb the chart lacks is a real 403. :class:`RealSandbox` has the
interface of :class:`kiln.demo.sandbox.Sandbox` on top of it, with :class:`ApiKubelet` as the
scheduler and kubelet; the Job, Deployment, ReplicaSet, StatefulSet, garbage-collector and
namespace controllers are the real ones, and so is the LeaderWorkerSet controller (LWS v0.8.0).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import urllib3
import yaml


from kiln.api.crd import crds
from kiln.controller.context import OperatorContext
from kiln.controller.kube import KINDS, Kind, KubeApi
from kiln.controller.models import ModelResolver
from kiln.demo.apikubelet import ApiKubelet
from kiln.demo.login import TokenLogin
from kiln.demo.sandbox import Sandbox
from kiln.demo.watch import ListWatch

from .cluster import chart_rbac

__all__ = ["ControlPlane", "RealSandbox", "KINDS_BY_PLURAL", "OPERATOR_USER", "answers", "free_port", "path_of",
           "stop_process", "tied_to_parent"]

OPERATOR_NAMESPACE = "kiln-system"
OPERATOR_SERVICE_ACCOUNT = "kiln"  # the chart's, for a release named "kiln"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"

# The operator's kinds (controller/kube.py) and the others the tests read, by plural.
KINDS_BY_PLURAL: dict[str, Kind] = {k.plural: k for k in (
    *KINDS.values(),
    Kind("v1", "Event", "events", True), Kind("v1", "Namespace", "namespaces", False),
    Kind("v1", "Node", "nodes", False), Kind("apps/v1", "ReplicaSet", "replicasets", True),
    Kind("v1", "ResourceQuota", "resourcequotas", True),
    Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    Kind("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Kind("apiregistration.k8s.io/v1", "APIService", "apiservices", False),
    Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors", True))}
_PLURAL_OF = {k.kind: k.plural for k in KINDS_BY_PLURAL.values()}


def path_of(plural: str, namespace: str | None = None, name: str | None = None) -> str:
    return KINDS_BY_PLURAL[plural].path(namespace, name)


class ControlPlane:
    """``tests/controlplane/start`` as a child process, with clients for its two identities."""

    def __init__(self, start_script: Path, extra_crds: list[dict[str, Any]],
                 rbac: list[dict[str, Any]], ready_timeout: float = 240.0,
                 audit_log: Path | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="kiln-real-")
        self._start_script = start_script
        work = Path(self._dir.name)
        self.kubeconfig = work / "admin.kubeconfig"
        self.audit_log = audit_log  # kube-apiserver's audit log (tests/support/audit.py), if asked for
        operator_kubeconfig = work / "operator.kubeconfig"
        self.log = work / "controlplane.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [str(start_script), "--kubeconfig", str(self.kubeconfig),
                 "--operator-kubeconfig", str(operator_kubeconfig),
                 "--operator-user", OPERATOR_USER,
                 "--data-dir", str(work / "state"),
                 *(["--audit-log", str(audit_log)] if audit_log else [])],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while not self.kubeconfig.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the control plane did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        self.server, ca, self.admin_token = _read_kubeconfig(self.kubeconfig)
        _, _, self.operator_token = _read_kubeconfig(operator_kubeconfig)
        self.ca_file = str(work / "ca.crt")
        Path(self.ca_file).write_text(ca)
        self.http = requests.Session()
        self.http.verify = self.ca_file
        # requests lets REQUESTS_CA_BUNDLE (and proxy variables) override the session's CA.
        self.http.trust_env = False
        self.http.headers["Authorization"] = f"Bearer {self.admin_token}"
        self.version = self.http.get(f"{self.server}/version", timeout=10).json()["gitVersion"]
        # A CRD the control plane installs itself (the LeaderWorkerSet's, with its controller's
        # release) is left as it is.
        extra_crds = [crd for crd in extra_crds if self.http.get(
            self.server + path_of("customresourcedefinitions", name=crd["metadata"]["name"]),
            timeout=10).status_code == 404]
        for crd in [*crds(), *extra_crds]:
            self.apply(crd)
        for crd in [*crds(), *extra_crds]:
            self.wait_established(crd["metadata"]["name"])
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
        for obj in rbac:
            self.apply(obj)

    def apply(self, obj: dict[str, Any], *, plural: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as the admin (field manager ``kiln-tests``); ``plural`` for a kind
        the sandbox does not read (:data:`KINDS_BY_PLURAL`), whose CRD a test installs;
        ``dry_run``: validated and admitted as ``kubectl apply --server-side --dry-run=server``
        does, with strict field validation, and not stored."""
        meta = obj["metadata"]
        kind = KINDS_BY_PLURAL[_PLURAL_OF[obj["kind"]]] if plural is None else \
            Kind(obj["apiVersion"], obj["kind"], plural, "namespace" in meta)
        params = {"fieldManager": "kiln-tests", "force": "true",
                  **({"dryRun": "All", "fieldValidation": "Strict"} if dry_run else {})}
        response = self.http.patch(
            self.server + kind.path(meta.get("namespace"), meta["name"]),
            data=yaml.safe_dump(obj), params=params,
            headers={"Content-Type": "application/apply-patch+yaml"}, timeout=30)
        if response.status_code >= 300:
            raise RuntimeError(f"applying {obj['kind']} {meta['name']}: {response.status_code} "
                               f"{response.text}")
        return response.json()  # type: ignore[no-any-return]

    def delete(self, obj: dict[str, Any]) -> None:
        """Delete as the admin; gone already is fine."""
        meta = obj["metadata"]
        response = self.http.delete(
            self.server + path_of(_PLURAL_OF[obj["kind"]], meta.get("namespace"), meta["name"]), timeout=30)
        if response.status_code >= 300 and response.status_code != 404:
            raise RuntimeError(f"deleting {obj['kind']} {meta['name']}: {response.status_code} {response.text}")

    def wait_established(self, crd: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.http.get(self.server + path_of("customresourcedefinitions", name=crd),
                                  timeout=10).json()
            if any(c["type"] == "Established" and c["status"] == "True"
                   for c in (found.get("status") or {}).get("conditions") or []):
                return
            time.sleep(0.1)
        raise TimeoutError(f"CRD {crd} not Established after {timeout}s")

    @contextlib.contextmanager
    def without_crd(self, name: str, timeout: float = 60.0) -> Iterator[None]:
        """The cluster without this CRD for the block: deleted, and gone from discovery, before
        it; installed again as it was (and Established) after it. The session's other tests
        share the control plane, so the CRD is back even when the block fails."""
        url = self.server + path_of("customresourcedefinitions", name=name)
        crd = self.http.get(url, timeout=10).json()
        served = [f"/apis/{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v["served"]]
        kind = crd["spec"]["names"]["kind"]
        self.http.delete(url, timeout=10).raise_for_status()
        try:
            deadline = time.monotonic() + timeout
            # Deleting a CRD first deletes its objects; discovery drops the kind once it is gone.
            while self.http.get(url, timeout=10).status_code != 404 or any(
                    self._discovered(path, kind) for path in served):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} still served after {timeout}s")
                time.sleep(0.2)
            yield
        finally:
            meta = {key: crd["metadata"][key] for key in ("name", "labels", "annotations")
                    if key in crd["metadata"]}
            self.apply({"apiVersion": crd["apiVersion"], "kind": crd["kind"], "metadata": meta,
                        "spec": crd["spec"]})
            self.wait_established(name, timeout=timeout)

    def _discovered(self, group_version_path: str, kind: str) -> bool:
        response = self.http.get(self.server + group_version_path, timeout=10)
        return response.status_code == 200 and any(
            r.get("kind") == kind for r in response.json().get("resources") or [])

    @property
    def pid(self) -> int:
        """The control plane's process (etcd runs in it; the API server and the
        controller-manager are its children)."""
        return self._process.pid

    def api(self, *, operator: bool = False) -> KubeApi:
        return KubeApi.for_url(self.server, token=self.operator_token if operator else self.admin_token,
                               ca_file=self.ca_file)

    @contextlib.contextmanager
    def scheduler(self, ready_timeout: float = 60.0) -> Iterator[Path]:
        """kube-scheduler, from the control plane's own binary (``start`` does not run it),
        binding every unbound Pod until the block ends; yields its log. It is ready once its
        informers have synced (its ``/readyz``, on a port of its own)."""
        binary = subprocess.run([str(self._start_script.parent / "build")], capture_output=True, text=True,
                                check=True, env={**os.environ, "KILN_CONTROLPLANE_BUILD": "never"}).stdout.strip()
        log = Path(self._dir.name) / "kube-scheduler.log"
        port = free_port()
        with log.open("w") as out:
            process = subprocess.Popen(
                [binary, "kube-scheduler", f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
                 f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
                 "--bind-address=127.0.0.1", f"--secure-port={port}"],
                stdout=out, stderr=subprocess.STDOUT, preexec_fn=tied_to_parent)
        try:
            deadline = time.monotonic() + ready_timeout
            while not answers(f"https://127.0.0.1:{port}/readyz", self.admin_token):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"kube-scheduler did not start: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield log
        finally:
            stop_process(process, 10)

    def stop(self) -> None:
        stop_process(self._process, 60)
        self._dir.cleanup()


def answers(url: str, token: str | None = None) -> bool:
    """Whether a component's HTTPS ``url`` answers 200 (to ``token``, if given). Its serving
    certificate is self-signed at its start: only readiness is asked here, so it is not
    verified."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return requests.get(url, headers=headers, verify=False, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tied_to_parent() -> None:
    """``preexec_fn`` for a server a test starts: SIGTERM to it when the thread that started
    it ends (prctl(2), ``PR_SET_PDEATHSIG``), so a test run killed with SIGKILL, which runs no
    teardown, leaves nothing running. Start it from the thread that outlives it (the tests'
    main thread), not from a worker thread."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def stop_process(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, and SIGKILL if ``process`` has not exited ``grace`` seconds later."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_kubeconfig(path: Path) -> tuple[str, str, str]:
    config = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return cluster["server"], ca, config["users"][0]["user"]["token"]


class RealSandbox(Sandbox):
    """A :class:`Sandbox` whose cluster is a :class:`ControlPlane`. Each sandbox gets fresh
    namespaces (``name`` maps to ``name-<suffix>`` on the server; reads and writes translate
    it), and on exit deletes its namespaces and the LLMEngines its services made."""

    def __init__(self, plane: ControlPlane, *, operator_url: str | None = None, **options: Any) -> None:
        """``operator_url``: where the operator reaches the API server, a plain-HTTP proxy
        in front of it (:class:`tests.support.proxy.FaultProxy`); the server itself if None."""
        options.pop("leader_worker_set", None)  # the LeaderWorkerSet CRD is installed
        super().__init__(**options)
        self._operator_url = operator_url
        # Sandbox's emulator is never started here: nothing may read it by mistake.
        self.emulator = None
        del self._server
        self.plane = plane
        self.url = plane.server
        self._suffix = uuid.uuid4().hex[:6]
        self._namespaces: dict[str, str] = {}

    def ns(self, name: str) -> str:
        """The server-side name of this sandbox's namespace ``name``."""
        return self._namespaces.get(name, name)

    async def __aenter__(self) -> RealSandbox:
        self.api = self.plane.api()
        watch = ListWatch(self.plane.server, self.plane.admin_token, self.plane.ca_file)
        self.cluster = ApiKubelet(self.api, watch, build_seconds=self._build_seconds,
                                  start_seconds=self._start_seconds, fail_builds=self._fail_builds,
                                  on_event=self._on_event)
        await self.cluster.register_nodes()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_operator()
        await self.stop_kubelet()
        # With the operator gone nothing would remove its finalizers: drop them, so the
        # namespaces and the (cluster-scoped, shared) engines are really gone for the next test.
        for plural in ("llmservices", "llmengines"):
            for obj in self.objects(plural):
                where = self.plane.server + path_of(plural, obj["metadata"].get("namespace"),
                                                    obj["metadata"]["name"])
                if obj["metadata"].get("finalizers"):
                    self.plane.http.patch(where, json={"metadata": {"finalizers": None}}, timeout=30,
                                          headers={"Content-Type": "application/merge-patch+json"})
                self.plane.http.delete(where, timeout=30)
        for namespace in self._namespaces.values():
            self.plane.http.delete(self.plane.server + path_of("namespaces", name=namespace), timeout=30)
        await self.api.close()

    def _operator_context(self, **options: Any) -> OperatorContext:
        api = self.plane.api(operator=True) if self._operator_url is None else \
            KubeApi.for_url(self._operator_url, token=self.plane.operator_token)
        return OperatorContext(api=api, models=ModelResolver(allow_download=False), **options)

    def _login(self) -> TokenLogin:
        if self._operator_url is not None:
            return TokenLogin(self._operator_url, self.plane.operator_token)
        return TokenLogin(self.plane.server, self.plane.operator_token, self.plane.ca_file)

    def add_namespace(self, name: str, *, shared: bool = False) -> None:
        """``name-<suffix>``, deleted on exit; ``shared``: ``name`` itself, kept for the next
        sandbox (what is in it is its user's to remove)."""
        actual = name if shared else self._namespaces.setdefault(name, f"{name}-{self._suffix}")
        self.plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": actual}})
        # Pods are refused until the ServiceAccount controller made the namespace's default one.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.plane.http.get(
                self.plane.server + path_of("serviceaccounts", actual, "default"), timeout=30).status_code != 200:
            time.sleep(0.05)

    def grant_chart_roles(self, namespace: str, *, multi_node: bool = False, gateway: bool = False,
                          gateway_provider: str = "", model_list: bool = False) -> None:
        """The chart's Roles in this sandbox's ``namespace``, as ``multiNode.namespaces`` and
        ``gateway.namespaces`` listing it grant them (the chart grants the leader's Role and
        the gateway's objects nowhere else), with ``gateway.provider`` as given; with
        ``model_list``, the release namespace's Role for the ConfigMap of the Gateways' model
        lists (a ``gateway.modelList`` with a Gateway in it)."""
        values: dict[str, Any] = {key: {"namespaces": [self.ns(namespace)]}
                                  for key, wanted in (("multiNode", multi_node), ("gateway", gateway)) if wanted}
        if gateway and gateway_provider:
            values["gateway"]["provider"] = gateway_provider
        if gateway and model_list:
            values["gateway"]["modelList"] = {"gateways": ["gateway/inference-gateway"]}
        for obj in chart_rbac(values):
            if obj["kind"] in ("Role", "RoleBinding"):
                self.plane.apply(obj)

    def _translated(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return {**obj, "metadata": {**meta, "namespace": self.ns(meta.get("namespace") or "default")}}

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] != "CustomResourceDefinition":
            obj = self._translated(obj)
        meta = obj["metadata"]
        response = self.plane.http.post(
            self.plane.server + path_of(_PLURAL_OF[obj["kind"]], meta.get("namespace")), json=obj,
            params={"fieldValidation": "Strict"}, timeout=30)  # as kubectl sends it
        if response.status_code >= 300:
            raise RuntimeError(f"creating {obj['kind']} {meta['name']}: {response.status_code} {response.text}")
        return response.json()  # type: ignore[no-any-return]

    async def patch_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        response = self.plane.http.patch(
            self.plane.server + path_of("llmservices", self.ns(namespace), name), json={"spec": spec},
            headers={"Content-Type": "application/merge-patch+json"}, timeout=30)
        if response.status_code >= 300:
            raise RuntimeError(f"patching {name}: {response.status_code} {response.text}")

    def objects(self, plural: str) -> list[dict[str, Any]]:
        mine = set(self._namespaces.values())
        found = self.plane.http.get(self.plane.server + path_of(plural), timeout=30).json()
        items = [o for o in found.get("items") or []
                 if not KINDS_BY_PLURAL[plural].namespaced or o["metadata"].get("namespace") in mine]
        return sorted(items, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        response = self.plane.http.get(
            self.plane.server + path_of(plural, self.ns(namespace) if namespace else None, name), timeout=30)
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    def changes(self, *plurals: str) -> Any:
        """Every live object's resourceVersion: a real write moves it, a no-op write does not."""
        return {(plural, o["metadata"].get("namespace"), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                for plural in plurals for o in self.objects(plural)}

    def events(self, plural: str) -> list[tuple[str, dict[str, Any]]]:
        """The live objects as ADDED events: a real server keeps no watch history."""
        return [("ADDED", o) for o in self.objects(plural)]


def start_script(root: Path) -> Path | None:
    """``tests/controlplane/start`` if its binary is built for the current sources, else None."""
    script = root / "tests" / "controlplane" / "start"
    result = subprocess.run([str(root / "tests" / "controlplane" / "build")], capture_output=True,
                            text=True, env={**os.environ, "KILN_CONTROLPLANE_BUILD": "never"})
    return script if result.returncode == 0 else None
