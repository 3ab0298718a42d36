"""A loop ends with no connection open behind it, or says which is."""

from __future__ import annotations

import asyncio

from kiln.demo.connections import connections_left_open


async def test_an_open_connection_is_named_and_a_closed_one_is_not():
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    while not accepted:
        await asyncio.sleep(0.01)
    left = await connections_left_open(timeout=0.2)
    assert f"('127.0.0.1', {port})" in left, left  # the client's side, named by its peer
    writer.close()
    accepted[0].close()
    server.close()
    await server.wait_closed()
    assert await connections_left_open(timeout=5.0) == []
