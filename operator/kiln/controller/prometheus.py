"""The builtin autoscaler's figures from Prometheus instead of the pods themselves.

For clusters where the operator may not reach the serving pods, or that already scrape them
(``metrics.servingPodMonitor`` in the chart labels every series ``llmservice``, and
Prometheus adds ``namespace`` and ``pod``): ``spec.autoscaling.metricsSource: prometheus``.
One instant query per family through the HTTP API (``/api/v1/query``), each with
``last_over_time(...[45s])`` so that a pod that stopped reporting drops out within the law's
staleness bound rather than Prometheus's 5-minute lookback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from ..autoscale import KVSample
from ..autoscale.metrics import (ENGINE_MODEL, FIRST_RESPONSE_METRIC, INPUT_TOKENS_METRIC, KV_METRIC,
                                 OUTPUT_TOKENS_METRIC, REQUEST_METRIC, service_matchers)
from ..render.meta import LABEL_INSTANCE, selector_terms
from .kube import KubeApi
from .metrics import SCRAPE_TIMEOUT_SECONDS, read_bounded

__all__ = ["PrometheusMetrics", "MAX_PROMETHEUS_ANSWER_BYTES", "MAX_PODS_PER_ANSWER", "new_session"]

LOOKBACK = "45s"


def new_session() -> aiohttp.ClientSession:
    """A session to query Prometheus with (each query bounded by the scrape timeout)."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_SECONDS))

# An answer is read up to this many bytes, and given no sample past it: one query's answer
# is a few series per pod of one service, far less; the URL may be a tenant's.
MAX_PROMETHEUS_ANSWER_BYTES = 4 * 2**20
# Pods an answer may name: a service has at most 1,000 replicas (the CRD's maxReplicas, and
# only a group's leader exports), and the lookback also names those replaced within it (a
# rollout of the whole fleet), so an answer naming more than twice that gives no sample, as
# one past the byte bound: each pod named is a sample the law reads at every tick.
MAX_PODS_PER_ANSWER = 2048
# (metric, the label that names the figure)
_FAMILIES = ((KV_METRIC, "kv_cache_block_type"), (REQUEST_METRIC, "request_type"),
             (INPUT_TOKENS_METRIC + "_sum", ""), (INPUT_TOKENS_METRIC + "_count", ""),
             (OUTPUT_TOKENS_METRIC + "_sum", ""), (FIRST_RESPONSE_METRIC + "_bucket", "le"))


def _instance(selector: str) -> str:
    return selector_terms(selector)[LABEL_INSTANCE]


class PrometheusMetrics:
    """A MetricsSource for one Prometheus: the KV sample of each pod of a service."""

    def __init__(self, url: str | URL, model: str = ENGINE_MODEL,
                 session: Callable[[], aiohttp.ClientSession] | None = None) -> None:
        """``session``: where to get the session to query with (the builtin autoscaler's one,
        shared by every URL); without it, one of its own, closed by :meth:`close`."""
        # The query endpoint under the base URL, joined by the URL library: the spec's URL
        # is a base (policy.base_url), so nothing of the request is the tenant's but the host.
        self.url = URL(url) if isinstance(url, str) else url
        self.endpoint = self.url / "api/v1/query"
        self.model = model
        self._shared = session
        self._session: aiohttp.ClientSession | None = None

    async def _query(self, promql: str) -> list[dict[str, Any]]:
        if self._shared is not None:
            session = self._shared()
        else:
            if self._session is None:
                self._session = new_session()
            session = self._session
        try:
            # No redirects: a redirect would take the operator to a host nobody allowed.
            async with session.get(self.endpoint, params={"query": promql},
                                         allow_redirects=False) as response:
                if response.status != 200:
                    return []
                raw = await read_bounded(response, MAX_PROMETHEUS_ANSWER_BYTES)
            if raw is None:
                return []
            body = json.loads(raw)
        # RecursionError: an answer nested past the C scanner's depth, which it refuses with
        # that, not a ValueError (CPython ``Modules/_json.c``, ``scan_once_unicode``:
        # ``_Py_EnterRecursiveCall(" while decoding a JSON array from a unicode string")``).
        except (TimeoutError, aiohttp.ClientError, ValueError, RecursionError):
            return []
        if not isinstance(body, dict) or body.get("status") != "success":
            return []
        # An instant query's answer is ``data: {resultType: "vector", result: [...]}``
        # (Prometheus ``docs/querying/api.md``, *Expression query result formats*, *Instant
        # vectors*); any other shape is none.
        data = body.get("data")
        result = data.get("result") if isinstance(data, dict) else None
        return result if isinstance(result, list) else []

    async def kv_samples(self, namespace: str, selector: str, api: KubeApi | None = None) -> list[KVSample]:
        matchers = service_matchers(namespace, _instance(selector), self.model)
        results = await asyncio.gather(*(
            self._query(f"last_over_time({metric}{{{matchers}}}[{LOOKBACK}])")
            for metric, _ in _FAMILIES))
        pods: dict[str, dict[tuple[str, str], float]] = {}
        for (metric, label), series in zip(_FAMILIES, results):
            for item in series:
                try:
                    labels = item.get("metric") or {}
                    value = float((item.get("value") or (0, "nan"))[1])
                    pods.setdefault(str(labels.get("pod", "")), {})[metric, str(labels.get(label, ""))] = value
                except (AttributeError, IndexError, KeyError, TypeError, ValueError):
                    continue  # not a Prometheus vector sample
                if len(pods) > MAX_PODS_PER_ANSWER:
                    return []
        samples = []
        for pod, figures in sorted(pods.items()):
            sample = KVSample.from_figures(
                {figure: v for (metric, figure), v in figures.items() if metric == KV_METRIC},
                {figure: v for (metric, figure), v in figures.items() if metric == REQUEST_METRIC},
                figures.get((INPUT_TOKENS_METRIC + "_sum", "")), replica=pod,
                finished=figures.get((INPUT_TOKENS_METRIC + "_count", "")),
                output_tokens=figures.get((OUTPUT_TOKENS_METRIC + "_sum", "")),
                first_response_buckets={le: v for (metric, le), v in figures.items()
                                        if metric == FIRST_RESPONSE_METRIC + "_bucket"})
            if sample is not None:
                samples.append(sample)
        return samples

    async def close(self) -> None:
        """Close the session of its own, if it made one (a shared one is its owner's)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
