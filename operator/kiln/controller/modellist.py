"""The operator's half of ``GET /v1/models`` through a Gateway (kiln/modellist.py): the ConfigMap
of every Gateway's list, written whenever a service's routed claims change.

The claims come from the LLMService watch (controller/claims.py hands each service's set on as
it changes), so a write follows a route that starts or stops routing a name within
``delay`` seconds; a burst of changes (the watch's first listing at startup) is one write.
Only a list that differs from the last one written is applied. At startup one write is made
whatever the claims, so that a list a stopped operator left behind is brought up to date
even when no service claims anything any more. A write the API server fails is tried again
``retry`` seconds later; the lists keep what was last written meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..errors import SpecInvalid
from ..modellist import configmap, gateway_lists
from .kube import ApiException, KubeApi

__all__ = ["ModelListWriter"]

logger = logging.getLogger(__name__)

Claims = frozenset[tuple[str, str, str | None]]


class ModelListWriter:
    """Keeps the ConfigMap ``namespace/name`` (``kiln run --model-list-configmap``) of the
    ``gateways`` listed (``--model-list-gateway``)."""

    def __init__(self, api: KubeApi, target: str, gateways: tuple[str, ...], delay: float = 1.0,
                 retry: float = 5.0) -> None:
        self.api, self.gateways, self.delay, self.retry = api, gateways, delay, retry
        self.namespace, self.name = target.split("/", 1)
        self.claims: dict[str, Claims] = {}
        self.written: dict[str, str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def update(self, uid: str, claims: Claims) -> None:
        """A service's claims now (none: deleted, or it routes nothing)."""
        if claims:
            self.claims[uid] = claims
        else:
            self.claims.pop(uid, None)
        self.schedule()

    def schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._write_soon())
        else:
            self._again = True

    async def _write_soon(self) -> None:
        delay = self.delay
        while True:
            await asyncio.sleep(delay)
            self._again = False
            wanted = configmap(self.name, self.namespace,
                               gateway_lists((claim for claims in self.claims.values() for claim in claims),
                                             self.gateways))
            delay = self.delay
            if wanted["data"] != self.written:
                try:
                    await self.api.apply(wanted)
                    self.written = wanted["data"]
                    logger.info("model lists written to ConfigMap %s/%s: %d Gateway(s)", self.namespace,
                                self.name, len(wanted["data"]))
                except (TimeoutError, ApiException, SpecInvalid, aiohttp.ClientError, OSError) as error:
                    logger.warning("ConfigMap %s/%s not written (%s): trying again in %gs", self.namespace,
                                   self.name, getattr(error, "status", None) or type(error).__name__, self.retry)
                    self._again, delay = True, self.retry
            if not self._again:
                return
