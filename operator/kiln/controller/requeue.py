"""A service's next reconcile while it waits for a build or a rollout, kept in memory.

A change handler that raises ``kopf.TemporaryError`` is retried by kopf through the object
itself: the failure is stored in the progress annotations (one PATCH of the LLMService), and
when the delay is over kopf PATCHes a dummy annotation to wake its own watch
(kopf/_core/actions/application.py, ``apply``: "Sleep strictly after patching" and the
``touch`` that follows). Two writes per poll, each also a watch event for every watcher of
the kind: at a thousand services that was most of the operator's writes to the API server.
Like controller-runtime's ``RequeueAfter``, which puts the request back on an in-memory work
queue (controller-runtime, pkg/internal/controller/controller.go, ``reconcileHandler``:
``c.Queue.AddAfter(req, result.RequeueAfter)``), Kiln keeps the wait here and a per-service
daemon (handlers.py, ``requeue``) reconciles when it is due. A restarted operator loses
nothing: kopf's resume handler reconciles every service at startup, and the resync tick every
service not Ready.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Requeue", "requeue_of"]


class _Stopped(Protocol):
    """kopf's ``DaemonStopped``: true once the daemon should exit, ``wait()`` awaitable."""

    def __bool__(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Any: ...


@dataclass
class Requeue:
    """When a service is next due for a reconcile (None: not until something changes),
    whether the daemon's view of it has caught up with the operator's last status write, and
    whose turn it is to reconcile it."""

    due: float | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Held by each reconcile of the service and each status write of its timers
    # (controller/reconcile.py). kopf runs an object's timers and daemons beside its change
    # handlers ("Timers & daemons run in parallel by design": nolar/kopf discussions #1046),
    # so the autoscale tick, the resync, this daemon and a spec change could reconcile one
    # service at once, and the one that read the older spec apply it after the newer. As
    # controller-runtime's work queue never hands one object to two workers, they take turns.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The resourceVersion of the body the last status write was made from. The daemon's
    # ``body`` follows the watch (a "live view", which kopf substitutes on every change it
    # sees: kopf docs/daemons.rst, "Resource fields access"); a reconcile from a view that has
    # not delivered that write finds none of its conditions, takes them all for transitions
    # and writes them again with new times (seen on the real API server on a loaded machine).
    written_from: str | None = None
    # The resourceVersion that write made, while a view may not have it yet (None: none such).
    written: str | None = None
    caught_up_by: float = 0.0
    # How long a due reconcile waits for the watch, at most: a write that failed never shows.
    catch_up_seconds = 5.0
    # The time ``soon`` asked for, until a reconcile starts: a reconcile already running when
    # it was asked may have read its snapshot before the event, and its own ``after`` or
    # ``cancel`` must not put the event's reconcile off.
    _soon: float | None = None

    def wrote(self, version: str | None, made: str | None = None) -> None:
        """A status write was made from the body at ``version``, and made ``made``."""
        self.written_from, self.written = version, made
        self.caught_up_by = time.monotonic() + self.catch_up_seconds

    def delivered(self, version: str | None) -> bool:
        """Whether a view at ``version`` has the last status write: it is the version that
        write made, or none was made within ``catch_up_seconds``. Else the reconcile reads
        the service from the API server."""
        if self.written is None or version == self.written or time.monotonic() >= self.caught_up_by:
            self.written = None
            return True
        return False

    def behind(self, version: str | None) -> bool:
        """Whether the view at ``version`` has not yet delivered the last write; if so, the
        reconcile is put off a moment."""
        if not self.lags(version):
            return False
        self.after(0.05)
        return True

    def lags(self, version: str | None) -> bool:
        """Whether the view at ``version`` is still the one the last write was made from, within
        ``catch_up_seconds`` of that write."""
        if self.written_from is None or version != self.written_from or time.monotonic() >= self.caught_up_by:
            self.written_from = None
            return False
        return True

    async def caught_up(self, body: Any) -> None:
        """Wait until ``body``, a live view (a timer's), has delivered the last write, for
        ``catch_up_seconds`` at most. Not for a change handler's body: kopf delivers nothing
        more of the object while its handler runs."""
        while self.lags(body.metadata.get("resourceVersion")):
            await asyncio.sleep(0.05)

    def after(self, delay: float) -> None:
        """Reconcile again ``delay`` seconds from now (the latest call wins, but never later
        than a pending :meth:`soon`)."""
        at = time.monotonic() + delay
        self.due = at if self._soon is None else min(at, self._soon)
        self._wake.set()

    def soon(self, delay: float) -> None:
        """Reconcile within ``delay`` seconds: sooner than that if already due sooner."""
        at = time.monotonic() + delay
        self._soon = at if self._soon is None else min(self._soon, at)
        if self.due is None or self.due > at:
            self.due = at
            self._wake.set()

    def cancel(self) -> None:
        self.due = self._soon

    async def next(self, stopped: _Stopped) -> bool:
        """Wait until the reconcile is due (True) or the daemon is stopped (False)."""
        while not stopped:
            left = None if self.due is None else self.due - time.monotonic()
            if left is not None and left <= 0:
                self.due = self._soon = None
                return True
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopped.wait())]
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return False


def requeue_of(memo: Any) -> Requeue:
    """The service's own :class:`Requeue`, on its memo (an ``OperatorContext``): kopf hands
    each object's handlers the same shallow copy of the operator's context
    (kopf/_core/reactor/inventory.py, ``ResourceMemories.recall``), so a value set on it is
    that object's alone, where one made with the context would be shared by all."""
    if memo.requeue is None:
        memo.requeue = Requeue()
    return memo.requeue
