"""The per-service requeue daemon (controller/handlers.py, ``requeue``) against its own writes,
and one reconcile of a service at a time."""

from __future__ import annotations

import asyncio
import copy
import time
from types import SimpleNamespace

import kopf

from kiln.controller import handlers
from kiln.controller import reconcile as reconcile_module
from kiln.controller.context import OperatorContext
from kiln.controller.requeue import Requeue
from kiln.decide import Actions
from kiln.decide.status import parse_status


class _Stopped:
    def __init__(self) -> None:
        self.flag = False

    def __bool__(self) -> bool:
        return self.flag

    async def wait(self, timeout: float | None = None) -> None:
        while not self.flag:
            await asyncio.sleep(0.01)


class _Body:
    """kopf's live view of an object: the daemon's ``body`` follows the watch."""

    def __init__(self, version: str) -> None:
        self.metadata = {"name": "svc", "namespace": "ns", "resourceVersion": version}


def _daemon(monkeypatch):
    """The daemon of a service whose status was written from the body at resourceVersion 7
    and that is due now; ``reconcile`` records the version it ran from and stops it."""
    seen: list[str] = []
    body, stopped, due = _Body("7"), _Stopped(), Requeue()

    async def reconcile(body, memo, kwargs):
        seen.append(body.metadata["resourceVersion"])
        stopped.flag = True
        return None

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    due.wrote("7")
    due.after(0.0)
    daemon = asyncio.ensure_future(handlers.requeue(body=body, memo=SimpleNamespace(requeue=due, requeues={}), stopped=stopped))
    return daemon, body, seen


async def test_a_poll_waits_for_the_watch_to_deliver_the_status_the_handler_wrote(monkeypatch):
    """The change handler wrote the status from the body at resourceVersion 7 (kopf PATCHes
    it after the handler returns). A poll due before the watch delivers that write would
    reconcile from a body without the status, find every condition new and write them all
    again with new transition times: on the real API server on a loaded machine, one extra
    write of the LLMService. The poll waits until the body has moved past 7."""
    daemon, body, seen = _daemon(monkeypatch)
    await asyncio.sleep(0.3)
    assert seen == []  # still the view the status was written from
    body.metadata["resourceVersion"] = "8"  # the watch delivers the write
    await asyncio.wait_for(daemon, 2.0)
    assert seen == ["8"]


async def test_a_write_the_watch_never_delivers_does_not_stop_the_polls(monkeypatch):
    """A write that failed (or a view that never moves) is waited for a bounded time only."""
    monkeypatch.setattr(Requeue, "catch_up_seconds", 0.2)
    daemon, _, seen = _daemon(monkeypatch)
    await asyncio.wait_for(daemon, 2.0)
    assert seen == ["7"]


def _service(name: str, version: str) -> kopf.Body:
    return kopf.Body({"apiVersion": "kiln.dev/v1alpha1", "kind": "LLMService",
                      "metadata": {"name": name, "namespace": "ns", "uid": name, "resourceVersion": version,
                                   "generation": 1},
                      "spec": {}, "status": {}})


async def test_a_service_is_reconciled_by_one_handler_at_a_time(monkeypatch):
    """kopf runs a resource's timers and daemons beside its change handlers ("Timers & daemons
    run in parallel by design", nolar/kopf discussions #1046): the autoscale tick, the resync,
    the requeue daemon and a spec change could reconcile one service at once, and the one
    that read the older spec apply it after the newer. As controller-runtime's work queue
    never hands one object to two workers, a service's reconciles take turns; other
    services' run beside them (up to the slots)."""
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def slow(body, api, models, at, policy=None, observed=None, parsed=None):
        name = body["metadata"]["name"]
        in_flight[name] = in_flight.get(name, 0) + 1
        most[name] = max(most.get(name, 0), in_flight[name])
        await asyncio.sleep(0.05)
        in_flight[name] -= 1
        return Actions(status=parse_status({}))

    monkeypatch.setattr(reconcile_module, "reconcile_service", slow)
    monkeypatch.setattr(reconcile_module, "write_status", lambda patch, current, actions: None)
    ctx = OperatorContext(api=None)  # type: ignore[arg-type]
    memo, other_memo = copy.copy(ctx), copy.copy(ctx)  # kopf's per-object copies
    body, other = _service("svc", "7"), _service("other", "3")
    started = time.perf_counter()
    await asyncio.gather(*(reconcile_module.reconcile(body, memo, {}) for _ in range(3)),
                         reconcile_module.reconcile(other, other_memo, {}))
    assert most == {"svc": 1, "other": 1}
    assert time.perf_counter() - started < 0.05 * 3 + 0.1  # the other service did not wait its turn


async def test_a_timer_waits_for_the_watch_to_deliver_the_last_status_write_too(monkeypatch):
    """The resync and the autoscale tick reconcile from the same live view as the requeue
    daemon: from one without the last status write, every condition reads as new."""
    seen: list[str] = []

    async def reconcile(body, memo, kwargs, observed=None, parsed=None):
        seen.append(body.metadata["resourceVersion"])

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    due, body = Requeue(), _Body("7")
    due.wrote("7")
    timer = asyncio.ensure_future(handlers._reconcile_quietly(body, SimpleNamespace(requeue=due), {}))
    await asyncio.sleep(0.3)
    assert seen == []
    body.metadata["resourceVersion"] = "8"
    await asyncio.wait_for(timer, 2.0)
    assert seen == ["8"]


class _Server:
    """The API server's copy of one LLMService: status patches land on it, GETs read it."""

    def __init__(self, status: dict) -> None:
        self.status, self.version, self.gets = dict(status), 10, 0

    def _object(self) -> dict:
        return {"apiVersion": "kiln.dev/v1alpha1", "kind": "LLMService",
                "metadata": {"name": "svc", "namespace": "ns", "uid": "svc", "generation": 1,
                             "resourceVersion": str(self.version)},
                "spec": {}, "status": dict(self.status)}

    async def patch_status(self, obj, status, *, resource_version=None):
        self.status.update(status)
        self.version += 1
        return self._object()

    async def list(self, api_version, kind, namespace=None, label_selector=None, field_selector=None):
        assert field_selector == "metadata.name=svc"
        self.gets += 1
        return [self._object()]


async def test_a_reconcile_reads_the_status_the_last_one_wrote_though_the_watch_has_not_brought_it(monkeypatch):
    """The autoscale tick's reconcile wrote desiredReplicas 4; a spec change's reconcile in
    the next turn, from a view the watch had not yet brought that write to, read 2 and
    applied a workload of two replicas, killing the two that were starting. Each reconcile
    writes its status within its turn, and the next one, if its view lags that write, reads
    the service from the API server."""
    server = _Server({"desiredReplicas": 2})
    seen: list[int] = []

    async def reconciled(body, api, models, at, policy=None, observed=None, parsed=None):
        seen.append(body["status"].get("desiredReplicas"))
        status = parse_status(body["status"])
        status.desired_replicas = 4
        return Actions(status=status)

    monkeypatch.setattr(reconcile_module, "reconcile_service", reconciled)
    memo = copy.copy(OperatorContext(api=server))  # type: ignore[arg-type]
    view = kopf.Body(server._object())  # the watch's view: rv 10, 2 replicas
    await reconcile_module.reconcile(view, memo, {})
    assert server.status["desiredReplicas"] == 4 and server.gets == 0
    await reconcile_module.reconcile(view, memo, {})  # the view still at rv 10
    assert seen == [2, 4] and server.gets == 1
    await reconcile_module.reconcile(kopf.Body(server._object()), memo, {})  # the view has it
    assert server.gets == 1


async def test_soon_brings_a_later_reconcile_forward_and_never_puts_one_off():
    due = Requeue()
    due.after(30)
    due.soon(1)
    assert due.due is not None and due.due - time.monotonic() <= 1
    due.after(0.1)
    first = due.due
    due.soon(1)
    assert due.due == first


class _StopFlag:
    def __init__(self):
        self.flag = False

    def __bool__(self):
        return self.flag

    async def wait(self, timeout=None):
        while not self.flag:
            await asyncio.sleep(0.01)


class _ServiceBody:
    def __init__(self):
        self.metadata = {"name": "svc", "namespace": "ns", "resourceVersion": "1", "uid": "u1"}


async def test_a_deletion_seen_during_a_reconcile_is_reconciled_within_a_second(monkeypatch):
    # The running reconcile may have read its snapshot before the child went; its own
    # after() or cancel() when it returns must not put the deletion's reconcile off.
    due, stopped, runs = Requeue(), _StopFlag(), []
    memo = SimpleNamespace(requeue=due, requeues={}, changed=set())
    memo.child_deleted = lambda uid: OperatorContext.child_deleted(memo, uid)

    async def reconcile(body, memo_, kwargs):
        runs.append(time.monotonic())
        if len(runs) == 1:
            await asyncio.sleep(0.2)  # the reconcile read its snapshot, then ...
            memo.child_deleted("u1")  # ... the child's DELETED event arrives
            await asyncio.sleep(0.2)
        return None  # nothing to wait for: due.cancel()

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    due.after(0.0)
    daemon = asyncio.ensure_future(handlers.requeue(body=_ServiceBody(), memo=memo, stopped=stopped))
    await asyncio.sleep(2.5)
    stopped.flag = True
    await asyncio.wait_for(daemon, 2)
    assert len(runs) == 2, f"reconciles: {len(runs)} (the deletion's wake was dropped by _follow)"
