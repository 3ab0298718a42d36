"""The demo's simulated clock: trace time, advanced by the demo, never by the wall.

The operator runs in its own thread and polls its autoscaler often; the clock lets it decide
once per autoscaler period of trace time, and only when its view of the workload (replicas
set and ready) is the simulated cluster's at that time. Every decision is therefore taken
on the same inputs in every run, however busy the machine, and the demo's output is the
same every time.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from dataclasses import dataclass

from ..autoscale import Decision

__all__ = ["DemoClock", "Decided", "EPOCH"]

# Where simulated time starts: the creation time of every object the demo applies.
EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Decided:
    time: float
    current: int
    decision: Decision


class DemoClock:
    """Seconds since :data:`EPOCH`; implements the autoscaler's ``DecisionClock``."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()  # the operator's thread and the demo's loop share it
        # Per service: (current, ready) as the cluster had them at the given reading.
        self._expected: dict[tuple[str, str], tuple[float, int, int]] = {}
        self._decided: dict[tuple[str, str], Decided] = {}

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return EPOCH + datetime.timedelta(seconds=self.now)

    def expect(self, namespace: str, name: str, current: int, ready: int) -> None:
        """The workload as the simulated cluster has it at this reading: decide on nothing else.
        Until it is called for a reading, no decision is taken at that reading."""
        with self._lock:
            self._expected[(namespace, name)] = (self.now, current, ready)

    # --- DecisionClock -------------------------------------------------------------------

    def at(self, namespace: str, name: str, current: int, ready: int) -> float | None:
        key = (namespace, name)
        with self._lock:
            last = self._decided.get(key)
            if last is not None and last.time >= self.now:
                return None  # decided at this reading already
            if self._expected.get(key) != (self.now, current, ready):
                # The cluster is still moving to this reading, or the operator's watch has
                # not caught up with it yet.
                return None
            return self.now

    def decided(self, namespace: str, name: str, now: float, current: int,
                decision: Decision) -> None:
        with self._lock:
            self._decided[(namespace, name)] = Decided(now, current, decision)

    # --- the demo's side -----------------------------------------------------------------

    async def decision(self, namespace: str, name: str, timeout: float = 30.0) -> Decided:
        """The operator's decision at the current reading, once it has taken it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            with self._lock:
                last = self._decided.get((namespace, name))
            if last is not None and last.time == self.now:
                return last
            await asyncio.sleep(0.005)
        raise TimeoutError(f"the operator took no autoscaling decision for {namespace}/{name} "
                           f"at {self.now:.0f} s of the trace within {timeout:.0f} s")
