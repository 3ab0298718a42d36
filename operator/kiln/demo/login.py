"""kopf's login for an operator run beside its API server rather than from a kubeconfig or a
pod's ServiceAccount: the demo's emulator, the tests' and benchmarks' servers."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import kopf

from ..controller.kube import API_CONNECTIONS

__all__ = ["TokenLogin", "OPERATOR_TOKEN"]

# The bearer token the operator presents to an emulator, so that its requests can be told
# apart from the tests' and the simulated kubelet's (the RBAC test audits them).
OPERATOR_TOKEN = "kiln-operator"


class TokenLogin:
    """Log kopf in at ``url`` with a bearer token: over plain HTTP (the emulator), or over TLS
    trusting ``ca_file`` (a real API server). Use as ``async with TokenLogin(url) as login``
    and pass ``login.handler`` to :func:`kiln.controller.operator.run_operator`.

    The session is this object's, closed on exit, because kopf's cleanup stage, which would
    close it, is skipped when that stage is cancelled."""

    def __init__(self, url: str, token: str = OPERATOR_TOKEN, ca_file: str | None = None) -> None:
        self.url, self.token, self.ca_file = url, token, ca_file
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def handler(self, **_: Any) -> kopf.AiohttpSession:
        """The ``@kopf.on.login`` handler. Once this login is closed it lends nothing: a task
        kopf leaves running past its shutdown could otherwise open a session that outlives
        the event loop, its sockets closed by no one."""
        if self._closed:
            raise kopf.LoginError("the operator's login is closed: it is shutting down")
        if self._session is None or self._session.closed:
            tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else False
            self._session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {self.token}"},
                connector=aiohttp.TCPConnector(ssl=tls, limit=API_CONNECTIONS))
        return kopf.AiohttpSession(server=self.url, aiohttp_session=self._session)

    async def __aenter__(self) -> TokenLogin:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
