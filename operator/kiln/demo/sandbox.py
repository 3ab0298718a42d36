"""A whole simulated cluster in one process: API emulator, GPU nodes, kubelet and the operator.

``kiln demo`` and the integration tests both run on it. The operator is the real one (kopf,
the handlers, the reconcile, server-side apply over HTTP); what stands in for a cluster is
named in :mod:`kiln.demo.emulator` and :mod:`kiln.demo.kubelet`.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from kmock import Server, resource

from ..api import API_VERSION
from ..api.crd import crds
from ..controller.autoscaler import DecisionClock
from ..controller.context import OperatorContext, Timings
from ..controller.kube import KINDS, KubeApi
from ..controller.models import ModelResolver
from ..controller.operator import run_operator
from ..decide.policy import Policy
from .connections import require_connections_closed
from .emulator import KilnEmulator
from .kubelet import SimulatedCluster
from .login import OPERATOR_TOKEN, TokenLogin

__all__ = ["Sandbox", "emulator_operator"]


def emulator_operator(url: str, **options: Any) -> OperatorContext:
    """The operator's context for an emulator at ``url``: its own bearer token (so its
    requests can be told from the tests' and the kubelet's) and only catalog models (nothing
    downloads). ``options`` go to :class:`OperatorContext`; kopf logs in with
    ``TokenLogin(url)``."""
    return OperatorContext(api=KubeApi.for_url(url, token=OPERATOR_TOKEN),
                           models=ModelResolver(allow_download=False), **options)


class Sandbox:
    """Use as ``async with Sandbox() as sb``; then ``await sb.start_operator()``.

    The operator polls builds and rollouts every ``retry_delay`` at most, and runs its timers
    at the given periods (``timings``: any other :class:`Timings` field); the autoscaler
    takes ``autoscale_timing`` over its control law's timing, and the demo's
    ``decision_clock``."""

    def __init__(self, *, build_seconds: float = 1.0, start_seconds: float = 0.5,
                 retry_delay: float = 0.5, on_event: Callable[[str], None] | None = None,
                 fail_builds: Callable[[dict[str, Any]], bool] | None = None,
                 autoscale_period: float = 15.0, observe_period: float = 1.0,
                 autoscale_timing: dict[str, float] | None = None,
                 leader_worker_set: bool = True, emulator: KilnEmulator | None = None,
                 exit_timeout: float | None = None, policy: Policy | None = None,
                 timings: dict[str, float] | None = None,
                 decision_clock: DecisionClock | None = None) -> None:
        self.emulator = emulator if emulator is not None else KilnEmulator()
        if not leader_worker_set:  # a cluster without the LeaderWorkerSet CRD
            del self.emulator.resources["leaderworkerset.x-k8s.io/v1/leaderworkersets"]
        self._server = Server(self.emulator)
        self._build_seconds = build_seconds
        self._start_seconds = start_seconds
        self._on_event = on_event
        self._fail_builds = fail_builds
        self._timings = Timings(max_retry_delay=retry_delay, autoscale_period=autoscale_period,
                                observe_period=observe_period, exit_timeout=exit_timeout,
                                **(timings or {}))
        self._autoscale_timing = autoscale_timing or {}
        self._decision_clock = decision_clock
        self._policy = policy or Policy()
        self._operator: tuple[threading.Thread, threading.Event] | None = None
        self.operator_context: OperatorContext | None = None
        self.operator_error: BaseException | None = None
        self._kubelet: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self.url = ""
        self.api: KubeApi

    async def __aenter__(self) -> Sandbox:
        await self.emulator.__aenter__()
        await self._server.__aenter__()
        self.url = str(self._server.url).rstrip("/")
        self.api = KubeApi.for_url(self.url)
        self.cluster = SimulatedCluster(self.emulator, self.api, build_seconds=self._build_seconds,
                                        start_seconds=self._start_seconds,
                                        fail_builds=self._fail_builds, on_event=self._on_event)
        self.cluster.add_nodes()
        for crd in crds():
            await self.create(crd)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_operator()
        await self.stop_kubelet()
        await self.api.close()
        await self._server.__aexit__(*exc)
        await self.emulator.__aexit__(*exc)

    # --- the cluster ------------------------------------------------------------------

    def ns(self, name: str) -> str:
        """The server-side name of namespace ``name`` (the same here; a shared real server
        gives each sandbox its own)."""
        return name

    def add_namespace(self, name: str, *, shared: bool = False) -> None:
        """Create namespace ``name``. ``shared``: one that keeps its name on a shared real server
        too, because objects Kiln renders name it (the KEDA HTTP add-on's ``keda``)."""
        # kmock cannot route POST /api/v1/namespaces: seed the object directly.
        self.emulator.objects[resource("v1/namespaces"), None, name] = {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    async def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        await self.create({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """POST an object as ``kubectl create`` would."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        if kind == "CustomResourceDefinition":
            path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        else:
            namespace = obj["metadata"].get("namespace") or "default"
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
            path = KINDS[(api_version, kind)].path(namespace)
        async with self._server.client.post(path, json=obj) as response:
            if response.status >= 300:
                raise RuntimeError(f"creating {kind} {obj['metadata']['name']}: "
                                   f"{response.status} {await response.text()}")
            return await response.json()  # type: ignore[no-any-return]

    async def patch_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> None:
        """A merge patch of an LLMService's spec, as ``kubectl patch --type=merge`` sends."""
        path = f"/apis/{API_VERSION}/namespaces/{namespace}/llmservices/{name}"
        async with self._server.client.patch(path, json={"spec": spec}, headers={
                "Content-Type": "application/merge-patch+json"}) as response:
            if response.status >= 300:
                raise RuntimeError(f"patching {name}: {response.status} {await response.text()}")

    def objects(self, plural: str) -> list[dict[str, Any]]:
        """Live objects of a kind, sorted by namespace and name."""
        return sorted(self.emulator.live(plural),
                      key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return self.emulator.get_live(plural, namespace, name)

    def changes(self, *plurals: str) -> Any:
        """A value that differs once any object of these kinds was written (here: the watch
        events the API server sent for them)."""
        return sum(len(self.emulator.history(plural)) for plural in plurals)

    def events(self, plural: str) -> list[tuple[str, dict[str, Any]]]:
        """Every watch event the API server sent for a kind: (type, object)."""
        return [(e["type"], e["object"]) for _, e in self.emulator.history(plural)]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20.0,
                       what: str = "condition") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = predicate()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    # --- the moving parts ---------------------------------------------------------------

    async def start_operator(self) -> None:
        """Start the operator in its own thread and event loop, as it runs in its own pod.

        kopf treats every task created in its loop after startup as its own and cancels them
        when it stops; sharing the loop with the emulator's connection handlers would tear
        those down with it.
        """
        stop = threading.Event()
        thread = threading.Thread(target=self._run_operator, args=(stop,), name="kiln-operator",
                                  daemon=True)
        thread.start()
        self._operator = (thread, stop)

    def _operator_context(self, **options: Any) -> OperatorContext:
        return emulator_operator(self.url, **options)

    def _login(self) -> TokenLogin:
        return TokenLogin(self.url)

    def _run_operator(self, stop: threading.Event) -> None:
        async def main() -> None:
            ctx = self.operator_context = self._operator_context(policy=self._policy,
                                                                 timings=self._timings)
            # The law's record goes into the status every four decisions, as at 15 s a minute.
            ctx.autoscaler = dataclasses.replace(ctx.autoscaler, timing=dict(self._autoscale_timing),
                                                 decision_clock=self._decision_clock,
                                                 record_every=4 * self._timings.autoscale_period)
            async with self._login() as login:
                try:
                    await run_operator(ctx, stop, login=login.handler)
                finally:
                    await ctx.api.close()
            await require_connections_closed("the operator")
        try:
            asyncio.run(main())
        except BaseException as error:  # reported by stop_operator()
            self.operator_error = error

    async def stop_operator(self) -> None:
        if self._operator is not None:
            thread, stop = self._operator
            self._operator = None
            stop.set()
            await asyncio.to_thread(thread.join, 30)
            if thread.is_alive():
                raise RuntimeError("the operator did not stop within 30 s")

    def start_kubelet(self) -> None:
        stop = asyncio.Event()
        self._kubelet = (asyncio.create_task(self.cluster.run(stop)), stop)

    async def stop_kubelet(self) -> None:
        if self._kubelet is not None:
            task, stop = self._kubelet
            self._kubelet = None
            stop.set()
            await task
