"""Ending an event loop without leaving a connection open behind it."""

from __future__ import annotations

import asyncio

__all__ = ["connections_left_open", "require_connections_closed"]


async def connections_left_open(timeout: float = 10.0) -> list[str]:
    """Wait, up to ``timeout`` seconds, until every connection of the running event loop has
    closed its socket; the peers of those still open after that.

    A TLS connection closes in steps (its close_notify, then the socket) that need the loop
    to run. aiohttp waits for them only for the connections its pool holds when the session
    closes (aio-libs/aiohttp#1925); one it closed earlier, a request cancelled mid-way for
    instance, can still be closing when the loop ends, and its socket is then found open by
    the garbage collector, at some later moment of the process (a ``ResourceWarning`` no
    test can be blamed for). A loop that ends with this first ends with none open, or says
    which. Reads the loop's table of transports (``_transports``, CPython's selector event
    loop, ``asyncio/selector_events.py``), the only record of them there is.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def still_open() -> list[asyncio.Transport]:
        transports = getattr(loop, "_transports", {})
        return [t for t in list(transports.values()) if getattr(t, "_sock", None) is not None]
    while (left := still_open()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return [str(t.get_extra_info("peername")) for t in left]


async def require_connections_closed(who: str, timeout: float = 10.0) -> None:
    """:func:`connections_left_open`, raising when any stays open, naming ``who`` left it."""
    if left := await connections_left_open(timeout):
        raise RuntimeError(f"{who} left connections open to {', '.join(left)}")
