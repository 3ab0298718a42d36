"""Fault injection: an API server that freezes the operator mid-reconcile (the restart
tests), and one that answers the operator with conflicts and outages.

A crashed operator is one whose next write never reaches the API server. kmock has no fault
injection, so :class:`FreezingEmulator` adds it: after the operator's ``k``-th reconcile write
(by its bearer token; the test's own requests and the simulated kubelet's are not counted)
every further write from it hangs until :meth:`release`, and is then refused with a 503, never
applied. Stopping the operator while it hangs there is a kill at exactly that step.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp.web
import attrs

from kiln.demo.login import OPERATOR_TOKEN
from kiln.demo.emulator import KilnEmulator

__all__ = ["FreezingEmulator", "FlakyEmulator", "reconcile_write"]

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@attrs.define(kw_only=True)
class FreezingEmulator(KilnEmulator):
    after: int | None = attrs.field(default=None, init=False)
    any_write: bool = attrs.field(default=False, init=False)
    # The operator's reconcile writes so far (:func:`reconcile_write`).
    writes: int = attrs.field(default=0, init=False)
    # Set from the operator's thread, read from the test's: a thread-safe flag.
    _frozen: threading.Event = attrs.field(factory=threading.Event, init=False)
    _released: asyncio.Event | None = attrs.field(default=None, init=False)

    def freeze_after(self, writes: int | None, *, any_write: bool = False) -> None:
        """Freeze the operator once it made ``writes`` more reconcile writes (None: never): at
        its next reconcile write, or with ``any_write`` at its next write of any kind."""
        self.after, self.any_write, self.writes, self._released = writes, any_write, 0, asyncio.Event()
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
            counted = reconcile_write(request)
            if self.after is not None and self.writes >= self.after and (counted or self.any_write):
                self._frozen.set()
                assert self._released is not None
                await self._released.wait()
                return aiohttp.web.Response(status=503, text="the operator was killed")
            self.writes += counted
        return await super()._handle(request)


def reconcile_write(request: Any) -> bool:
    """A write the reconcile makes (an apply, a create, a delete, a status), not kopf's own
    bookkeeping: the finalizer and the progress and diff-base annotations it keeps on the
    LLMService itself, and the Events it posts. How many of those a run makes depends on how
    many polls fit in a build or a rollout; the reconcile's writes do not."""
    plural = request.resource.plural if request.resource is not None else ""
    return plural != "events" and not (plural == "llmservices" and not request.subresource)


@attrs.define(kw_only=True)
class FlakyEmulator(KilnEmulator):
    """Answers the operator's requests with what a busy or failing API server sends, and
    counts what it refused. kmock has no fault injection; this is it.

    - ``conflicts``: the next n server-side applies of the kind fail with 409 Conflict (an
      apply whose field manager lost a race, or an optimistic-lock failure);
    - ``outage``: while set, every request from the operator gets 503 Service Unavailable
      (an API server restarting, an overloaded aggregation layer);
    - ``invalid``: server-side applies of the kind fail with 422 Invalid and this message, as
      a real API server refuses an object its validation rejects.
    - ``forbidden``: resources (plurals) the operator gets 403 Forbidden on, as RBAC answers
      a request the chart does not grant.
    """

    conflicts: dict[str, int] = attrs.field(factory=dict, init=False)
    outage: bool = attrs.field(default=False, init=False)
    invalid: dict[str, str] = attrs.field(factory=dict, init=False)
    forbidden: set[str] = attrs.field(factory=set, init=False)
    refused: list[tuple[int, str, str]] = attrs.field(factory=list, init=False)

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        method = str(getattr(request.method, "value", request.method)).upper()
        token = str(request.headers.get("Authorization", "")).removeprefix("Bearer ").strip()
        plural = request.resource.plural if request.resource is not None else ""
        if token == OPERATOR_TOKEN and self.outage:
            self.refused.append((503, method, plural))
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503,
                 "reason": "ServiceUnavailable", "message": "the API server is unavailable"},
                status=503)
        if token == OPERATOR_TOKEN and plural in self.forbidden:
            self.refused.append((403, method, plural))
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                 "reason": "Forbidden", "message": f"{plural} is forbidden: User "
                 "\"system:serviceaccount:kiln-system:kiln\" cannot access this resource"},
                status=403)
        applies = method == "PATCH" and "apply-patch" in str(request.headers.get("Content-Type", ""))
        if token == OPERATOR_TOKEN and applies and plural in self.invalid:
            self.refused.append((422, method, plural))
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
                 "reason": "Invalid", "message": self.invalid[plural]}, status=422)
        if token == OPERATOR_TOKEN and applies and self.conflicts.get(plural, 0) > 0:
            self.conflicts[plural] -= 1
            self.refused.append((409, method, plural))
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                 "reason": "Conflict", "message": f"Operation cannot be fulfilled on {plural}: "
                 "the object has been modified; please apply your changes to the latest version"},
                status=409)
        return await super()._handle(request)
