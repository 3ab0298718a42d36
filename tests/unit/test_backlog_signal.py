"""The backlog the autoscaler acts on grows when requests wait, whichever limit they wait on.

The TensorRT-LLM backend's ``request_type="waiting"`` is active - scheduled
(``model_instance_state.cc``, ``WaitForStats``): requests already in the batch that the last
iteration left out. Requests queued in the executor beyond the batch slots appear in no
series, so ``waiting`` stays 0 while they pile up; Kiln's backlog does not."""

from __future__ import annotations

from kiln.autoscale import KVSample, LawParams, Recommendations, Sample, decide
from kiln.planner.perf import PerfModel
from kiln.sim.engine import _Replica, _scrape
from kiln.sim.traces import Request


def _perf(kv_tokens: int, max_batch: int) -> PerfModel:
    return PerfModel(kv_tokens=kv_tokens, max_batch=max_batch, weight_bytes=9e9,
                     kv_bytes_per_token=65536.0, bandwidth=3.35e12, prefill_tokens_per_s=20_000.0)


def _replica_holding(perf: PerfModel, requests: int) -> _Replica:
    replica = _Replica(0, ready_at=0.0)
    replica.queue.extend(Request(0.0, 1000, 200) for _ in range(requests))
    replica.admit(perf)
    replica.advance(0.0, 0.25, perf, [], [])
    return replica


def test_requests_queued_beyond_the_batch_slots_show_in_the_backlog():
    perf = _perf(kv_tokens=10_000_000, max_batch=8)  # slots run out, KV does not
    few, many = _replica_holding(perf, 8), _replica_holding(perf, 80)
    for replica in (few, many):  # what the backend exports: every active request ran
        assert min(replica.held, perf.max_batch) - replica.scheduled == 0
    assert _scrape(few, 0.25, perf, 15.0).waiting == 8       # a full batch: one batch deep at least
    assert _scrape(many, 0.25, perf, 15.0).waiting >= 8
    page = KVSample(max_blocks=100, used_blocks=10, tokens_per_block=32, waiting_requests=0,
                    active_requests=8, max_requests=8)
    assert page.backlog == 8
    assert KVSample(100, 10, 32, waiting_requests=0, active_requests=7, max_requests=8).backlog == 0


def test_requests_waiting_for_kv_blocks_show_in_the_backlog():
    perf = _perf(kv_tokens=2_500, max_batch=64)  # two 1200-token sequences fit at a time
    replica = _replica_holding(perf, 10)
    sample = _scrape(replica, 0.25, perf, 15.0)
    assert len(replica.running) == 2 and sample.active == 10 and sample.waiting == 8


def test_a_backlog_behind_a_full_batch_scales_up():
    params = LawParams(min_replicas=1, max_replicas=10)
    perf = _perf(kv_tokens=10_000_000, max_batch=8)
    replica = _replica_holding(perf, 80)
    sample = _scrape(replica, 15.0, perf, 15.0)
    assert isinstance(sample, Sample)
    decision = decide(15.0, [sample], current=1, ready=1, starting=0, params=params,
                      recommendations=Recommendations())
    assert decision.desired >= 2, decision.reason
