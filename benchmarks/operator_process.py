"""The operator process of ``benchmarks/operator_scale.py``: the real operator against the API
emulator (or, given a token and CA file, a real API server), stopped by SIGTERM.

    python benchmarks/operator_process.py [--trace-memory] [--max-concurrent-reconciles N]
        METRICS_PORT URL [TOKEN CA_FILE]

A module of its own so that the process imports what ``kiln run`` imports and nothing of the
harness (the Helm engine and the control-plane helpers of ``tests/support`` added about 50 MiB
to its resident memory). Its logging is left as ``kiln run`` leaves it (warnings and errors,
to stderr, a file of the benchmark's), so that anything kopf would post as an Event is posted
and counted. At exit it writes to that log the garbage collector's pauses, the time each kind
of API call took as the operator saw it (from the request to the parsed response, waits for
a connection and for the event loop included), where each reconcile over 0.8 s spent its time
(``reconcile_parts.py``) and, with ``--trace-memory``, where the memory it holds was allocated
(tracemalloc: slower, so not for timing).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kiln.controller.context import MAX_CONCURRENT_RECONCILES, OperatorContext, Timings  # noqa: E402
from kiln.controller.kube import KINDS, KubeApi  # noqa: E402
from kiln.controller.models import ModelResolver  # noqa: E402
from kiln.controller.operator import run_operator, settle_garbage_collector  # noqa: E402
from kiln.demo.login import TokenLogin  # noqa: E402

from reconcile_parts import ReconcileParts  # noqa: E402

PLURALS = {kind.plural for kind in KINDS.values()}


def _p99(times: list[float]) -> float:
    return times[min(len(times) - 1, int(len(times) * 0.99))]


class Recorder:
    """What the log gets at exit: each API call's time by "METHOD plural", and the GC's pauses
    by generation."""

    def __init__(self) -> None:
        self.parts = ReconcileParts()
        self.calls: dict[str, list[float]] = {}
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self.collected: dict[int, int] = {0: 0, 1: 0, 2: 0}
        self._collecting = 0.0

    def install(self) -> None:
        call = KubeApi._call
        calls = self.calls

        async def timed(api: KubeApi, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
            started = time.perf_counter()
            try:
                return await call(api, method, path, *args, **kwargs)
            finally:
                plural = next((part for part in path.split("/") if part in PLURALS), "other")
                calls.setdefault(f"{method} {plural}", []).append(time.perf_counter() - started)
        KubeApi._call = timed  # type: ignore[method-assign]
        gc.callbacks.append(self._collection)
        self.parts.install()

    def _collection(self, phase: str, info: dict[str, int]) -> None:
        self.parts.collected(phase, time.perf_counter())
        if phase == "start":
            self._collecting = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._collecting)
            self.collected[info["generation"]] += info["collected"]

    def report(self) -> None:
        for generation, times in self.pauses.items():
            if times:
                times.sort()
                print(f"gc generation {generation}: {len(times)} collections, {sum(times):.1f} s in all, "
                      f"p99 {_p99(times):.3f} s, longest {times[-1]:.3f} s, "
                      f"{self.collected[generation]} unreachable objects freed", file=sys.stderr)
        print("seconds per API call as the operator saw it (count, p50, p99):", file=sys.stderr)
        for key, times in sorted(self.calls.items()):
            times.sort()
            print(f"  {key}: {len(times)} {times[len(times) // 2]:.3f} {_p99(times):.3f}", file=sys.stderr)
        self.parts.report()


def run(metrics_port: int, url: str, token: str | None, ca_file: str | None, trace_memory: bool,
        slots: int = MAX_CONCURRENT_RECONCILES) -> None:
    if trace_memory:
        tracemalloc.start()
    recorder = Recorder()
    recorder.install()

    async def main() -> None:
        options = {"timings": Timings(max_retry_delay=1.0), "reconcile_slots": asyncio.Semaphore(slots)}
        if token is None:
            from kiln.demo.sandbox import emulator_operator  # the emulator's context, only for it
            ctx, login = emulator_operator(url, **options), TokenLogin(url)
        else:
            ctx = OperatorContext(api=KubeApi.for_url(url, token=token, ca_file=ca_file),
                                  models=ModelResolver(allow_download=False), **options)
            login = TokenLogin(url, token, ca_file)
        ctx.telemetry.serve(metrics_port)
        settle_garbage_collector()  # as run_against_kubeconfig (`kiln run`) does
        recorder.parts.start_lag_probe()
        async with login:
            try:  # kopf stops on SIGTERM itself: it runs in the main thread
                await run_operator(ctx, asyncio.Event(), login=login.handler)
            finally:
                recorder.report()
                if trace_memory:
                    snapshot = tracemalloc.take_snapshot()
                    traced = sum(stat.size for stat in snapshot.statistics("filename"))
                    print(f"tracemalloc: {traced / 2**20:.1f} MiB traced; the largest by line:", file=sys.stderr)
                    for stat in snapshot.statistics("lineno")[:40]:
                        print(f"  {stat}", file=sys.stderr)
                await ctx.api.close()
    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace-memory", action="store_true")
    parser.add_argument("--max-concurrent-reconciles", type=int, default=MAX_CONCURRENT_RECONCILES)
    parser.add_argument("metrics_port", type=int)
    parser.add_argument("url")
    parser.add_argument("credentials", nargs="*", metavar="TOKEN CA_FILE")
    args = parser.parse_args()
    token, ca_file = args.credentials if len(args.credentials) == 2 else (None, None)
    run(args.metrics_port, args.url, token, ca_file, args.trace_memory, args.max_concurrent_reconciles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
