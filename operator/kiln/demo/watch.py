"""List-then-watch streams from a real API server, as a client-go informer keeps them.

One list gives the objects and a ``resourceVersion``; a watch from that version gives every
change after it, one JSON event per line. The server ends a watch after ``timeoutSeconds`` (it
is resumed from the last version seen, kept current by bookmarks) and answers ``410 Gone`` once
that version is compacted away, when the stream lists again. Each list is reported whole
(``LISTED``) so that the reader can drop what was deleted while it was not watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

__all__ = ["ListWatch", "LISTED"]

LISTED = "LISTED"  # an event type of this module's: the object is the list of every item

# Above a watch's timeoutSeconds, so only a dead connection trips it.
_READ_TIMEOUT_SECONDS = 360
_WATCH_SECONDS = 300


class _Gone(Exception):
    """The version to resume from has been compacted: list again."""


class ListWatch:
    """Streams of events for paths of one API server, authenticated with a bearer token (or,
    through ``context``, a client certificate)."""

    def __init__(self, server: str, token: str | None, ca_file: str | None = None, *,
                 context: ssl.SSLContext | None = None) -> None:
        self._server = server.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
        self._ssl: ssl.SSLContext | bool = context or (
            ssl.create_default_context(cafile=ca_file) if ca_file else False)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_configuration(cls, configuration: Any) -> ListWatch:
        """Streams for the cluster of a ``kubernetes`` client Configuration (a loaded kubeconfig:
        a token, or a client certificate as kind writes them)."""
        context = None
        if configuration.host.startswith("https"):
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if not configuration.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(configuration.host, (configuration.api_key or {}).get("BearerToken"), context=context)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def events(self, path: str, *, retry_seconds: float = 1.0) -> AsyncIterator[tuple[str, Any]]:
        """``(LISTED, [objects])`` after each list, then ``(ADDED|MODIFIED|DELETED, object)``
        for every change, forever. A failed request is tried again after ``retry_seconds``."""
        version: str | None = None
        while True:
            try:
                if version is None:
                    version, items = await self._list(path)
                    yield LISTED, items
                # aclosing: when this stream is closed at its yield, the watch's response is
                # released now, not whenever the event loop finalizes the inner generator.
                async with contextlib.aclosing(self._watch(path, version)) as watch:
                    async for kind, obj in watch:
                        version = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            yield kind, obj
            except _Gone:
                version = None
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(retry_seconds)

    async def _list(self, path: str) -> tuple[str, list[dict[str, Any]]]:
        async with self._client().get(self._server + path, ssl=self._ssl) as response:
            response.raise_for_status()
            listed = await response.json()
        # A list's items carry neither apiVersion nor kind; the list does (``PodList``).
        kind = str(listed.get("kind", "")).removesuffix("List")
        items = [{"apiVersion": listed.get("apiVersion"), "kind": kind, **item}
                 for item in listed.get("items") or []]
        return listed["metadata"]["resourceVersion"], items

    async def _watch(self, path: str, version: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(_WATCH_SECONDS)}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=_READ_TIMEOUT_SECONDS)
        async with self._client().get(self._server + path, params=params, ssl=self._ssl,
                                      timeout=timeout) as response:
            if response.status == 410:
                raise _Gone
            response.raise_for_status()
            pending = b""
            # One event per line; a Pod can outgrow aiohttp's readline() limit, so split here.
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # a Status; 410 once the version is compacted
                        raise _Gone
                    yield event["type"], event["object"]
