"""kopf's login for an operator run beside its API server (the demo, the tests, the
benchmarks): the operator's token on every request, and no session left open."""

from __future__ import annotations

import aiohttp.web
import kopf
import pytest
from aiohttp.test_utils import TestServer

from kiln.demo.login import OPERATOR_TOKEN, TokenLogin


async def test_kopf_is_lent_a_session_that_presents_the_token_and_is_closed_on_exit():
    seen: list[str] = []

    async def version(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return aiohttp.web.json_response({"major": "1", "minor": "35"})

    app = aiohttp.web.Application()
    app.router.add_get("/version", version)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        async with TokenLogin(url) as login:
            info = await login.handler()
            assert info.server == url
            async with info.aiohttp_session.get(f"{url}/version") as response:
                assert response.status == 200
            # kopf logs in again after a 401: the same session, not a new one to leak.
            assert (await login.handler()).aiohttp_session is info.aiohttp_session
    assert seen == [f"Bearer {OPERATOR_TOKEN}"]
    assert info.aiohttp_session.closed


async def test_no_session_is_lent_once_the_login_is_closed():
    # A task kopf leaves running past its shutdown may log in again; a session opened then
    # would outlive its event loop, its sockets closed by nobody.
    async with TokenLogin("http://127.0.0.1:1") as login:
        lent = (await login.handler()).aiohttp_session
    with pytest.raises(kopf.LoginError, match="closed"):
        await login.handler()
    assert lent.closed and login._session is lent
