"""Fault injection for the restart tests: an API server that freezes the operator mid-reconcile.

A crashed operator is one whose next write never reaches the API server. kmock has no fault
injection, so :class:`FreezingEmulator` adds it: after the operator's ``k``-th write (by its
bearer token; the test's own requests and the simulated kubelet's are not counted) every
further write from it hangs until :meth:`release`, and is then refused with a 503, never
applied. Stopping the operator while it hangs there is a kill at exactly that step.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp.web
import attrs

from kiln.controller.handlers import OPERATOR_TOKEN
from kiln.demo.emulator import KilnEmulator

__all__ = ["FreezingEmulator"]

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@attrs.define(kw_only=True)
class FreezingEmulator(KilnEmulator):
    after: int | None = attrs.field(default=None, init=False)
    writes: int = attrs.field(default=0, init=False)
    # Set from the operator's thread, read from the test's: a thread-safe flag.
    _frozen: threading.Event = attrs.field(factory=threading.Event, init=False)
    _released: asyncio.Event | None = attrs.field(default=None, init=False)

    def freeze_after(self, writes: int | None) -> None:
        """Freeze the operator's writes after ``writes`` more of them (None: never)."""
        self.after, self.writes, self._released = writes, 0, asyncio.Event()
        self._frozen.clear()

    @property
    def frozen(self) -> bool:
        return self._frozen.is_set()

    def release(self) -> None:
        if self._released is not None:
            self._released.set()
        self.after = None

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        method = str(getattr(request.method, "value", request.method)).upper()
        token = str(request.headers.get("Authorization", "")).removeprefix("Bearer ").strip()
        if method in _WRITES and token == OPERATOR_TOKEN:
            if self.after is not None and self.writes >= self.after:
                self._frozen.set()
                assert self._released is not None
                await self._released.wait()
                return aiohttp.web.Response(status=503, text="the operator was killed")
            self.writes += 1
        return await super()._handle(request)
