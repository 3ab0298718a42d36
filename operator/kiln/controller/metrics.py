"""Scrape the serving pods' Triton ``/metrics`` (the port named ``metrics``) for KV figures."""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace
from typing import Any, Protocol

import aiohttp
from yarl import URL

from ..autoscale import KVSample, parse_triton_metrics
from .kube import KubeApi

__all__ = ["MetricsSource", "PodMetrics", "ready_pods", "read_bounded", "MAX_METRICS_PAGE_BYTES"]

SCRAPE_TIMEOUT_SECONDS = 3.0
# A pod's page is read up to this many bytes; a longer one is left unread and the pod
# skipped. Triton's page for one TensorRT-LLM model is tens of KiB (its families per model
# and per GPU); the page is the pod's to write, and a tenant's pod could serve gigabytes.
MAX_METRICS_PAGE_BYTES = 4 * 2**20
# Scrapes in flight at once. Each pod is its own endpoint and is read every 15-30 s, so no
# connection is kept: a pool of idle keep-alive sockets, one per pod, is what slows aiohttp
# down at a thousand pods (its connector wakes waiters by shuffling every endpoint's queue).
MAX_CONCURRENT_SCRAPES = 64
# Pod lists in flight at once. The observe and autoscale timers of every Ready service read
# its pods every 15-60 s, from the pod cache (controller/cache.py) where the handler has it;
# at a thousand services they fire together, and unbounded, lists that go to the API would
# all hold API connections and the event loop that the reconciles wait on.
# Beyond this many they queue.
MAX_CONCURRENT_POD_READS = 8


class MetricsSource(Protocol):
    async def kv_samples(self, namespace: str, selector: str, api: KubeApi | None = None) -> list[KVSample]:
        """The KV sample of each serving pod ``selector`` picks (``api``: where to read the
        pods, the handler's caches, if the source reads pods)."""


def ready_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def ready(pod: dict[str, Any]) -> bool:
        status = pod.get("status") or {}
        return status.get("phase") == "Running" and bool(status.get("podIP")) and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    return [pod for pod in pods if ready(pod) and not pod["metadata"].get("deletionTimestamp")]


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body of ``response``, or None once it passes ``limit`` bytes (by its declared
    length, or as it arrives): the rest is never read."""
    if (response.content_length or 0) > limit:
        return None
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _address(pod: dict[str, Any]) -> str | None:
    """The pod's IP (IPv4, or IPv6, which the URL brackets), or None when ``status.podIP`` is
    not an address: it is the kubelet's to write, and anyone's with ``pods/status``, and the
    operator fetches from an address only, never from a name or a URL written there."""
    try:
        return str(ipaddress.ip_address(str((pod.get("status") or {}).get("podIP") or "")))
    except ValueError:
        return None


def _metrics_port(pod: dict[str, Any]) -> int | None:
    for container in pod.get("spec", {}).get("containers", []):
        for port in container.get("ports", []):
            if port.get("name") == "metrics":
                return int(port["containerPort"])
    return None


class PodMetrics:
    """Reads every ready serving pod in parallel; a pod that does not answer is skipped."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)
        self._pod_reads = asyncio.Semaphore(MAX_CONCURRENT_POD_READS)

    async def _fetch(self, url: str) -> str | None:
        if self._closed:  # a scrape that outlived the operator: no new session to leak
            return None
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS),
                connector=aiohttp.TCPConnector(limit=0, force_close=True))
        async with self._slots:
            try:
                # No redirects: aiohttp follows up to 10 by default (aiohttp 3.14
                # ``aiohttp/client.py``, ``ClientSession._request``: ``allow_redirects: bool =
                # True, max_redirects: int = 10``), and the page is the pod's to write: a
                # redirect would take the operator to any host it can reach.
                async with self._session.get(url, allow_redirects=False) as response:
                    if response.status != 200:
                        return None
                    page = await read_bounded(response, MAX_METRICS_PAGE_BYTES)
                    return None if page is None else page.decode("utf-8", errors="replace")
            except (TimeoutError, aiohttp.ClientError):
                return None

    async def kv_samples(self, namespace: str, selector: str, api: KubeApi | None = None) -> list[KVSample]:
        async with self._pod_reads:
            pods = ready_pods(await (api or self.api).list("v1", "Pod", namespace, selector))
        targets = [(pod["metadata"]["name"], str(URL.build(scheme="http", host=address, port=port, path="/metrics")))
                   for pod in pods if (port := _metrics_port(pod)) and (address := _address(pod))]
        pages = await asyncio.gather(*(self._fetch(url) for _, url in targets))
        return [replace(sample, replica=name) for (name, _), page in zip(targets, pages)
                if page and (sample := parse_triton_metrics(page))]

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
