"""The simulated kubelet's list-then-watch on the real API server (``kiln.demo.watch``).

A stream starts with the whole list, then brings each create, change and delete in order; when
the server ends a watch (every ``timeoutSeconds``) it resumes from the last version seen,
without listing again or losing a change made meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from kiln.demo import watch as watch_module
from kiln.demo.watch import LISTED, ListWatch


async def _next(events: Any) -> tuple[str, Any]:
    return await asyncio.wait_for(anext(events), timeout=30)


async def test_a_stream_lists_then_brings_every_change_and_resumes_after_the_server_ends_it(
        real_plane: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    plane = real_plane
    # The server ends each watch after a second, so the stream resumes several times here.
    monkeypatch.setattr(watch_module, "_WATCH_SECONDS", 1)
    namespace = f"watch-{uuid.uuid4().hex[:6]}"
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    def config_map(name: str, value: str) -> None:
        plane.apply({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": name, "namespace": namespace}, "data": {"v": value}})

    config_map("before", "0")
    stream = ListWatch(plane.server, plane.admin_token, plane.ca_file)
    events = stream.events(path)
    try:
        kind, items = await _next(events)
        assert kind == LISTED
        assert [(i["kind"], i["metadata"]["name"]) for i in items if i["metadata"]["name"] == "before"] \
            == [("ConfigMap", "before")]

        config_map("after", "1")
        assert await _next(events) == ("ADDED", _live(plane, path, "after"))
        await asyncio.sleep(2.5)  # past two server-side ends of the watch
        config_map("after", "2")
        kind, obj = await _next(events)
        assert (kind, obj["data"]) == ("MODIFIED", {"v": "2"})
        plane.http.delete(f"{plane.server}{path}/after", timeout=30)
        kind, obj = await _next(events)
        assert (kind, obj["metadata"]["name"]) == ("DELETED", "after")
    finally:
        await events.aclose()
        await stream.close()
        plane.http.delete(f"{plane.server}/api/v1/namespaces/{namespace}", timeout=30)


def _live(plane: Any, path: str, name: str) -> dict[str, Any]:
    found = plane.http.get(f"{plane.server}{path}/{name}", timeout=30).json()
    return found  # type: ignore[no-any-return]
