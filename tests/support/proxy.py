"""Fault injection in front of a real API server: a proxy only the operator talks to.

The emulator's fault injection (:mod:`tests.support.faults`) lives inside it. A real
kube-apiserver has no such hook, so :class:`FaultProxy` stands between the operator and it
(plain HTTP to the operator, TLS to the server, the operator's own bearer token passed
through, watches streamed) and does what :class:`~tests.support.faults.FreezingEmulator` and
:class:`~tests.support.faults.FlakyEmulator` do:

- the restart tests' kill: after the operator's ``k``-th reconcile write every further write
  hangs until :meth:`FaultProxy.release`, and is then refused with a 503, never sent. Stopping
  the operator while it hangs there is a kill at exactly that step, and the server the new
  operator meets is the real one, with whatever the Job, ReplicaSet and garbage-collector
  controllers did meanwhile;
- ``conflicts``: the next n server-side applies of a kind answered 409 Conflict, as the
  server answers an apply whose field manager lost a race;
- ``outage``: while set, every request answered 503, as a restarting API server does.

What it refused is in ``refused``, as (code, method, plural).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from typing import Any

import aiohttp
import aiohttp.web

from kiln.demo.interceptor import relay

__all__ = ["FaultProxy", "write_target"]

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# Hop-by-hop and length headers: aiohttp sets its own on each side.
_DROPPED = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding", "keep-alive"}


def write_target(path: str) -> tuple[str, str | None, str | None]:
    """``(plural, name, subresource)`` of an API path: ``/api/v1/namespaces/ns/pods/p/status``
    is ``("pods", "p", "status")``, ``/apis/g/v/llmengines`` is ``("llmengines", None, None)``."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    return (rest[0] if rest else "", rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


def _reconcile_write(path: str) -> bool:
    """As :func:`tests.support.faults.reconcile_write`: not an Event, nor kopf's writes to the
    LLMService itself (its finalizer, progress and diff-base annotations)."""
    plural, _, subresource = write_target(path)
    return plural != "events" and not (plural == "llmservices" and not subresource)


class FaultProxy:
    """An HTTP proxy to ``upstream`` (trusting ``ca_file``) on its own thread and event loop."""

    def __init__(self, upstream: str, ca_file: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._tls = ssl.create_default_context(cafile=ca_file)
        self.after: int | None = None
        self.any_write = False
        self.writes = 0  # the operator's reconcile writes so far
        # (plural, name) of every object the operator made (201 Created: a POST or an apply).
        self.created: list[tuple[str, str]] = []
        self.conflicts: dict[str, int] = {}
        self.outage = False
        self.refused: list[tuple[int, str, str]] = []
        self._frozen = threading.Event()
        self._released: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="freezing-proxy", daemon=True)
        self.url = ""

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the proxy did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def freeze_after(self, writes: int | None, *, any_write: bool = False) -> None:
        """Freeze the operator once it made ``writes`` more reconcile writes (None: never): at
        its next reconcile write, or with ``any_write`` at its next write of any kind."""
        self.after, self.any_write, self.writes = writes, any_write, 0
        self._released = asyncio.Event()
        self._frozen.clear()

    @property
    def frozen(self) -> bool:
        return self._frozen.is_set()

    def release(self) -> None:
        released, loop = self._released, self._loop
        if released is not None and loop is not None:
            loop.call_soon_threadsafe(released.set)
        self.after = None

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._tls, limit=0),
                                              auto_decompress=False)
        app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            if self._released is not None:
                self._released.set()
            await runner.cleanup()
            await self._session.close()

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        method = request.method.upper()
        plural = write_target(request.path)[0]
        if self.outage:
            return self._refuse(503, method, plural, "ServiceUnavailable", "the API server is unavailable")
        applies = method == "PATCH" and "apply-patch" in request.headers.get("Content-Type", "")
        if applies and self.conflicts.get(plural, 0) > 0:
            self.conflicts[plural] -= 1
            return self._refuse(409, method, plural, "Conflict", f"Operation cannot be fulfilled on {plural}: "
                                "the object has been modified; please apply your changes to the latest version")
        if method in _WRITES:
            counted = _reconcile_write(request.path)
            if self.after is not None and self.writes >= self.after and (counted or self.any_write):
                self._frozen.set()
                released = self._released
                if released is not None:
                    await released.wait()
                return aiohttp.web.Response(status=503, text="the operator was killed")
            self.writes += counted
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._session.request(method, self.upstream + request.path_qs, data=body or None,
                                         headers=headers, timeout=timeout) as upstream:
            # 201 Created: a POST, or a PATCH (a server-side apply) that made the object
            # (kubernetes/kubernetes, staging/src/k8s.io/apiserver/pkg/endpoints/handlers/
            # patch.go: ``if wasCreated { status = http.StatusCreated }``).
            if upstream.status == 201:
                plural, name, _ = write_target(request.path)
                if name is None:
                    name = (json.loads(body or b"{}").get("metadata") or {}).get("name")
                self.created.append((plural, str(name)))
            return await relay(request, upstream, _DROPPED)

    def _refuse(self, code: int, method: str, plural: str, reason: str, message: str) -> aiohttp.web.Response:
        self.refused.append((code, method, plural))
        return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                          "reason": reason, "message": message}, status=code)
