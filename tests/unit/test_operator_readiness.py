"""The operator's readiness (``/readyz``): the leader, or a standby the API server answers about
the Lease; a standby that cannot reach the API server is not Ready, and a rollout waits."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from kiln.controller.kube import ApiException
from kiln.controller.lease import LeaderLease
from kiln.controller.operator import _health_endpoint, _Health

from ..support.real_cluster import free_port


class _Api:
    """Answers the Lease's reads as a held Lease, or fails them all."""

    def __init__(self) -> None:
        self.down = False

    async def get(self, *args, **kwargs):
        if self.down:
            raise ApiException(503, "Service Unavailable", "")
        return {"metadata": {"resourceVersion": "1"},
                "spec": {"holderIdentity": "the-leader", "leaseDurationSeconds": 15}}


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_a_standby_is_ready_while_the_api_server_answers_it_and_not_after():
    api, now = _Api(), [100.0]
    lease = LeaderLease(api, "kiln-system", identity="standby", retry_period=2.0, clock=lambda: now[0])
    health, port = _Health(lease), free_port()
    async with _health_endpoint(port, health):
        status, body = await asyncio.to_thread(_get, port, "/readyz")
        assert status == 503 and body["ready"] is False  # not heard from the API server yet
        assert not await lease._try_or_refuse()  # held by another: a standby
        status, body = await asyncio.to_thread(_get, port, "/readyz")
        assert status == 200 and body == {"leader": False, "lease": "kiln-system/kiln-operator",
                                          "holder": "the-leader", "ready": True}
        api.down = True
        now[0] += 2.0
        assert not await lease._try_or_refuse()  # the read fails: tried again later
        now[0] += 5.0  # past three tries without an answer
        status, body = await asyncio.to_thread(_get, port, "/readyz")
        assert status == 503 and body["ready"] is False
        # Liveness is not readiness: the process stays.
        assert (await asyncio.to_thread(_get, port, "/healthz"))[0] == 200
        health.leading = True
        assert (await asyncio.to_thread(_get, port, "/readyz"))[0] == 200
