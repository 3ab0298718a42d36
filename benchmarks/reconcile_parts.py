"""Where a slow reconcile's time goes, for the operator process of ``operator_scale.py``.

Each reconcile (``kiln.controller.reconcile.reconcile_service``: the span the reconcile
histogram times) is split into its parts: reading (``gather``), confirming what the caches
missed, and executing, with each write stage of ``execute`` on its own; what is left is
deciding and rendering. Beside the parts, what the whole process went through meanwhile: the
garbage collector's pauses, the event loop's lag (a task that sleeps 50 ms and records how
late it wakes) and, from ``/proc/thread-self/schedstat`` of the event loop's thread, its time
on a CPU and its time runnable but waiting for one (the kernel's run-queue wait: contention
with the control plane for the two cores). At exit the log gets every reconcile over
``SLOW_SECONDS`` and a summary of them.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kiln.controller.execute as execute_module
import kiln.controller.reconcile as reconcile_module

__all__ = ["ReconcileParts"]

SLOW_SECONDS = 0.8
_LAG_PERIOD = 0.05
_current: contextvars.ContextVar[_Reconcile | None] = contextvars.ContextVar("reconcile", default=None)


def _schedstat() -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable waiting for one) of the calling thread."""
    with open("/proc/thread-self/schedstat") as f:
        on_cpu, waiting, _ = f.read().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


@dataclass
class _Reconcile:
    name: str
    start: float
    sched: tuple[float, float]
    end: float = 0.0
    sched_end: tuple[float, float] = (0.0, 0.0)
    parts: list[tuple[str, float, float]] = field(default_factory=list)


class ReconcileParts:
    def __init__(self) -> None:
        self.reconciles: list[_Reconcile] = []
        self.pauses: list[tuple[float, float]] = []  # the collector's, (start, end)
        self.lags: list[tuple[float, float]] = []  # (woke at, seconds late), over 10 ms only
        self._lag_task: asyncio.Task[None] | None = None

    def install(self) -> None:
        original = reconcile_module.reconcile_service

        async def reconcile_service(body: Any, *args: Any, **kwargs: Any) -> Any:
            meta = body.get("metadata") or {}
            record = _Reconcile(f"{meta.get('namespace')}/{meta.get('name')}", time.perf_counter(),
                                _schedstat())
            token = _current.set(record)
            try:
                return await original(body, *args, **kwargs)
            finally:
                record.end, record.sched_end = time.perf_counter(), _schedstat()
                _current.reset(token)
                self.reconciles.append(record)
        reconcile_module.reconcile_service = reconcile_service  # type: ignore[assignment]
        reconcile_module.gather = _timed("read", reconcile_module.gather)  # type: ignore[assignment]
        reconcile_module.confirm_misses = _timed("confirm", reconcile_module.confirm_misses)  # type: ignore[assignment]
        reconcile_module.execute = _timed("execute", reconcile_module.execute)  # type: ignore[assignment]
        stage = execute_module.concurrently

        async def concurrently(calls: Any, *args: Any, **kwargs: Any) -> Any:
            calls = list(calls)
            return await _timed(f"write stage of {len(calls)}", stage)(calls, *args, **kwargs)
        execute_module.concurrently = concurrently  # type: ignore[assignment]

    def collected(self, phase: str, at: float) -> None:
        """From the collector's callback: a pause starts or ends at ``at``."""
        if phase == "start":
            self.pauses.append((at, at))
        elif self.pauses:
            self.pauses[-1] = (self.pauses[-1][0], at)

    def start_lag_probe(self) -> None:
        async def probe() -> None:
            while True:
                asked = time.perf_counter()
                await asyncio.sleep(_LAG_PERIOD)
                woke = time.perf_counter()
                if woke - asked - _LAG_PERIOD > 0.01:
                    self.lags.append((woke, woke - asked - _LAG_PERIOD))
        self._lag_task = asyncio.get_running_loop().create_task(probe())

    def report(self) -> None:
        slow = sorted((r for r in self.reconciles if r.end - r.start > SLOW_SECONDS),
                      key=lambda r: r.start)
        out = sys.stderr
        lags = sorted(lag for _, lag in self.lags)
        print(f"event loop lag over 10 ms: {len(lags)} times, {sum(lags):.1f} s in all, longest "
              f"{lags[-1] if lags else 0:.3f} s", file=out)
        print(f"reconciles over {SLOW_SECONDS} s: {len(slow)} of {len(self.reconciles)}; each: wall, "
              "parts (name start+duration), gc paused, loop lag (sum, max), loop thread on cpu, "
              "waiting for a cpu", file=out)
        totals: dict[str, float] = {}
        for r in slow:
            wall = r.end - r.start
            gc = sum(max(0.0, min(e, r.end) - max(s, r.start)) for s, e in self.pauses)
            within = [lag for at, lag in self.lags if r.start <= at <= r.end + _LAG_PERIOD]
            cpu, wait = r.sched_end[0] - r.sched[0], r.sched_end[1] - r.sched[1]
            parts = " ".join(f"{name}@{s - r.start:.2f}+{e - s:.2f}" for name, s, e in r.parts)
            print(f"  {r.name} {wall:.2f} s: {parts}; gc {gc:.2f}, lag {sum(within):.2f}/"
                  f"{max(within, default=0):.2f}, cpu {cpu:.2f}, waiting {wait:.2f}", file=out)
            for key, value in (("wall", wall), ("gc", gc), ("lag", sum(within)), ("cpu", cpu), ("waiting", wait)):
                totals[key] = totals.get(key, 0.0) + value
        if slow:
            print("  in all: " + ", ".join(f"{k} {v:.1f} s" for k, v in totals.items()), file=out)


def _timed(name: str, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        record, started = _current.get(), time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            if record is not None:
                record.parts.append((name, started, time.perf_counter()))
    return timed
