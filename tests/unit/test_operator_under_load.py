"""What keeps the operator's calls quick when a thousand services are due at once: the
timers' pod reads queue behind a few slots, and the garbage collector leaves what was
alive at startup alone."""

from __future__ import annotations

import asyncio
import gc
import weakref

from kiln.controller.metrics import MAX_CONCURRENT_POD_READS, PodMetrics
from kiln.controller.operator import YOUNG_COLLECTION_THRESHOLD, settle_garbage_collector


class _Node:
    next: _Node | None = None


class _SlowApi:
    """Pod lists that take a while: counts how many are in flight at once."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.reads = 0

    async def list(self, api_version, kind, namespace, selector):
        assert (api_version, kind) == ("v1", "Pod")
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        self.reads += 1
        return [{"metadata": {"name": f"{selector}-0"}, "status": {"phase": "Pending"}}]


async def test_a_thousand_timers_firing_together_read_pods_a_few_at_a_time():
    api = _SlowApi()
    metrics = PodMetrics(api)
    results = await asyncio.gather(*(metrics.kv_samples("llm", f"svc-{i}") for i in range(1000)))
    await metrics.close()
    assert api.reads == 1000 and results == [[]] * 1000  # every read done, none ready
    assert api.most == MAX_CONCURRENT_POD_READS


def test_what_is_alive_at_startup_is_frozen_and_young_collections_are_rarer():
    before = gc.get_threshold()
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        cycle = _Node()
        cycle.next = cycle  # a cycle made after the freeze is still collected
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
