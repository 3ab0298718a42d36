"""The list-then-watch stream's lifetime (``kiln.demo.watch``)."""

from __future__ import annotations

import asyncio
import json

import aiohttp.web
from aiohttp.test_utils import TestServer

from kiln.demo.watch import LISTED, ListWatch

_POD = {"metadata": {"name": "p", "namespace": "n", "uid": "u", "resourceVersion": "2"}}


async def test_closing_a_stream_releases_its_watch_connection_at_once():
    async def pods(request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        if request.query.get("watch") != "1":
            return aiohttp.web.json_response(
                {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
        response = aiohttp.web.StreamResponse()
        await response.prepare(request)
        await response.write(json.dumps({"type": "ADDED", "object": _POD}).encode() + b"\n")
        await asyncio.sleep(30)  # the watch stays open, as the API server's does
        return response

    app = aiohttp.web.Application()
    app.router.add_get("/api/v1/pods", pods)
    async with TestServer(app, host="127.0.0.1") as server:
        stream = ListWatch(str(server.make_url("")), token=None)
        events = stream.events("/api/v1/pods")
        try:
            assert await anext(events) == (LISTED, [])
            assert await anext(events) == ("ADDED", _POD)
            # Closed at its yield, the stream ends its watch now, not whenever the event loop
            # gets round to finalizing the inner generator (or never, if the loop closes first).
            await events.aclose()
            assert stream._session is not None and not stream._session.connector._acquired
        finally:
            await stream.close()
