"""The demo's trace replay: what the simulated pods report for a trace."""

from __future__ import annotations

import pytest

from kiln.demo.replay import TraceReplay
from kiln.planner.perf import PerfModel
from kiln.sim.traces import Request

PERF = PerfModel(kv_tokens=100_000, max_batch=64, weight_bytes=9e9, kv_bytes_per_token=65536.0,
                 bandwidth=3.35e12, prefill_tokens_per_s=10_000.0)


def test_a_steady_trace_reports_littles_law():
    # 4 requests/s of 1,000 prompt tokens and 100 output tokens.
    requests = [Request(i / 4, 1000, 100) for i in range(4 * 120)]
    replay = TraceReplay(requests, PERF)
    replay.advance(60, pods=2)
    load = replay.pod_load()
    prefill, decode = 1000 / PERF.prefill_tokens_per_s, 100 * PERF.step_seconds(0.0)
    seconds = prefill + decode
    assert load.active == round(4 * seconds / 2)
    # KV held is what is allocated: the prompt's from admission, the output as it is
    # generated (on average half of it while decoding), not the whole sequence reserved.
    held = prefill * 1000 + decode * (1000 + 100 / 2)
    assert load.kv_fraction == pytest.approx(4 * held / 2 / PERF.kv_tokens, rel=0.02)
    assert load.input_tokens_per_s == pytest.approx(4000 / 2)
    assert load.waiting == 0
    assert replay.requests_per_minute(60) == 240


def test_more_prompt_tokens_than_the_pods_prefill_queue_and_drain():
    # 30 s of 15,000 prompt tokens/s against one pod that prefills 10,000/s, then quiet.
    requests = [Request(i / 15, 1000, 10) for i in range(15 * 30)]
    replay = TraceReplay(requests, PERF)
    replay.advance(30, pods=1)
    busy = replay.pod_load()
    assert busy.input_tokens_per_s == pytest.approx(PERF.prefill_tokens_per_s)
    assert busy.waiting == pytest.approx(30 * 5000 / 1000, abs=1)
    replay.advance(60, pods=1)
    assert replay.pod_load().waiting == 0  # the backlog of 150,000 tokens took 15 s
    # A second pod halves what each one is asked for.
    again = TraceReplay(requests, PERF)
    again.advance(30, pods=2)
    assert again.pod_load().waiting == 0
    assert again.pod_load().input_tokens_per_s == pytest.approx(7500)


def test_past_the_end_of_the_trace_the_pods_are_idle():
    replay = TraceReplay([Request(0.5, 100, 10)], PERF)
    replay.advance(10, pods=1)
    assert replay.pod_load().input_tokens_per_s == 0 and replay.pod_load().active == 0
    assert replay.requests_per_minute(120) == 0
