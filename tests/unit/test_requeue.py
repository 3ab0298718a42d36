"""The per-service requeue daemon (controller/handlers.py, ``requeue``) against its own writes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kiln.controller import handlers
from kiln.controller.requeue import Requeue


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

    async def reconcile(body, patch, memo, kwargs):
        seen.append(body.metadata["resourceVersion"])
        stopped.flag = True
        return None

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    due.wrote("7")
    due.after(0.0)
    daemon = asyncio.ensure_future(handlers.requeue(body=body, memo=SimpleNamespace(requeue=due), stopped=stopped))
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
