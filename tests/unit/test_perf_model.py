"""The performance model against NVIDIA's published measurements: throughput at maximum load
(every row of the TensorRT-LLM table it is calibrated on) and TTFT as load grows (a NIM
benchmark it was not fitted to)."""

import pytest

from kiln.api.validation import parse_service_manifest
from kiln.planner import lookup_gpu
from kiln.planner.perf import PerfModel
from kiln.sim.engine import _Replica
from kiln.sim.traces import Request

# TensorRT-LLM docs/source/performance/perf-overview.md, table "Llama 3.1 8B", column
# "H100 TP1 (FP8)": total output tokens/s at maximum load, by input/output tokens (all ten rows).
PUBLISHED_H100_LLAMA_8B_FP8 = {
    (128, 128): 28312, (128, 2048): 22714, (128, 4096): 14325, (500, 2000): 17660,
    (1000, 1000): 15220, (1000, 2000): 13899, (2048, 128): 3450, (2048, 2048): 9305,
    (5000, 500): 3459, (20000, 2000): 1351}

# NVIDIA NIM LLM benchmarking guide, "Performance" (docs.nvidia.com/nim/benchmarking/llm/1.0.0/
# performance), Llama-3.3-70b-instruct, NIM 1.8.0, 2 x H100 80G, fp8 TP2, 5000 input / 500
# output tokens: concurrency -> (mean TTFT ms, output tokens/s).
PUBLISHED_NIM_70B_TTFT = {1: (406.77, 51.67), 5: (546.7, 218.48), 25: (688.69, 623.4),
                          50: (834.51, 814.37), 100: (7996.25, 917.26), 150: (34794.22, 920.9),
                          200: (61680.22, 920.54), 250: (88605.32, 920.12)}


def _perf(model: str, gpus: int, **engine) -> PerfModel:
    _, spec = parse_service_manifest({
        "apiVersion": "serving.kiln.dev/v1alpha1", "kind": "LLMService",
        "metadata": {"name": "bench", "namespace": "x"},
        "spec": {"model": {"source": f"hf://{model}"}, "precision": "fp8", "kvCacheDtype": "fp8",
                 "gpus": gpus, "gpu": {"type": "H100-80GB"}, "engine": engine}})
    return PerfModel.for_catalog_model(spec, lookup_gpu("H100-80GB", None))


def test_every_row_of_the_published_trtllm_table_within_15_percent():
    # trtllm-bench's run: batch bounded by the KV cache, not by an engine limit.
    perf = _perf("meta-llama/Llama-3.1-8B-Instruct", 1, maxBatchSize=2048, maxSeqLen=32768,
                 maxInputLen=24000)
    errors = {pair: perf.offline_output_tokens_per_s(*pair) / published - 1
              for pair, published in PUBLISHED_H100_LLAMA_8B_FP8.items()}
    assert len(errors) == 10
    assert all(abs(e) <= 0.15 for e in errors.values()), errors


def _closed_loop(perf: PerfModel, clients: int, isl: int, osl: int,
                 seconds: float = 600.0, dt: float = 0.05) -> tuple[float, float]:
    """Mean TTFT (s) and output tokens/s of one replica under ``clients`` closed-loop users
    (each sends its next request when the last one ends), as the NIM benchmark drives it;
    the first third is warm-up."""
    replica, now, ttfts, tpots, produced = _Replica(0, 0.0), 0.0, [], [], 0
    starts = [i * 30.0 / clients for i in range(clients)]  # users join over 30 s
    while now < seconds:
        while starts and starts[0] <= now:
            starts.pop(0)
            replica.queue.append(Request(now, isl, osl))
        replica.admit(perf)
        before = replica.held
        replica.advance(now, dt, perf, ttfts, tpots)
        finished = before - replica.held
        replica.queue.extend(Request(now + dt, isl, osl) for _ in range(finished))
        if now > seconds / 3:
            produced += finished * osl
        now += dt
    steady = ttfts[len(ttfts) // 3:]
    return sum(steady) / len(steady), produced / (seconds * 2 / 3)


def test_ttft_against_load_follows_the_published_nim_measurement():
    perf = _perf("meta-llama/Llama-3.3-70B-Instruct", 2, maxBatchSize=256, maxInputLen=6000,
                 maxSeqLen=8192, maxNumTokens=8192)
    modelled = {c: _closed_loop(perf, c, 5000, 500) for c in PUBLISHED_NIM_70B_TTFT}
    # The knee is where it was measured: the KV cache holds between 50 and 100 sequences.
    assert all(modelled[c][0] < 1.0 for c in (1, 5, 25, 50))
    assert all(modelled[c][0] > 5.0 for c in (100, 150, 200, 250))
    # Past the knee TTFT is queueing, and the model's is within 20 % of the measured.
    for c in (150, 200, 250):
        assert modelled[c][0] * 1000 == pytest.approx(PUBLISHED_NIM_70B_TTFT[c][0], rel=0.20), c
    # Saturated throughput within 15 %.
    assert modelled[250][1] == pytest.approx(PUBLISHED_NIM_70B_TTFT[250][1], rel=0.15)
    # Below the knee the model is faster than measured (no HTTP, tokeniser or detokeniser
    # time): 0.5-0.9x the published TTFT, never slower.
    for c in (1, 5, 25, 50):
        assert 0.45 <= modelled[c][0] * 1000 / PUBLISHED_NIM_70B_TTFT[c][0] <= 1.0, c
