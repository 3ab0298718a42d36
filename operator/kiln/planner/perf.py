"""How fast one replica runs: the performance model behind the simulator and the autoscaler's
prefill-load signal. Pure.

One engine iteration (TensorRT-LLM's in-flight batching) advances every generating sequence
by one token and runs context chunks of waiting prompts, up to ``maxNumTokens`` tokens in
all. Its time is the sum of:

- **Weights and KV read once** (memory bound): the replica's weights plus the KV cache of
  every scheduled sequence's context, at ``BANDWIDTH_EFFICIENCY`` of HBM bandwidth; this is
  the attention's bytes in decode.
- **Linear FLOPs**: ``2 × parameters`` per token of context, at ``COMPUTE_EFFICIENCY`` of the
  GPU's dense tensor peak (16-bit; 8- and 4-bit precisions run at twice that).
- **Attention FLOPs** in context: ``4 × layers × heads × head_dim`` per token per position
  it attends (QKᵀ and AV, causal), so a prompt of ``L`` tokens costs ``2 × layers × heads ×
  head_dim × L²`` more: +54 % on an average Mooncake prompt, ×2.4 on an 85k one for 8B.
- **Overheads**: ``STEP_OVERHEAD_S`` per iteration and ``SEQUENCE_OVERHEAD_S`` per sequence
  in it (sampling, scheduling, the batch's bookkeeping), which is what keeps short sequences
  at large batch from the bandwidth bound.

**Calibration.** The four constants are fitted (grid search) to every row of TensorRT-LLM's
published throughput for Llama-3.1-8B-Instruct FP8 on one H100 SXM (TensorRT-LLM
``docs/source/performance/perf-overview.md``, table "Llama 3.1 8B", column "H100 TP1 (FP8)",
ten input/output pairs from 128/128 to 20000/2000): :meth:`PerfModel.offline_output_tokens_per_s`
reproduces each within 15 % (a unit test pins all ten). TTFT under load is checked against
NVIDIA's NIM benchmark for Llama-3.3-70B FP8 TP2 on H100 (5000/500 tokens, concurrency 1-250;
``tests/unit/test_perf_model.py``). Other GPUs and models scale by bandwidth, peak FLOPs and
sizes from the planner; read absolute latencies as estimates, and comparisons between
policies on the same model as the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import LLMServiceSpec, Precision
from .gpus import GPU
from .memory import WEIGHT_BYTES
from .model import ModelConfig, UnsupportedModel, model_config
from .plan import Plan, plan

__all__ = ["PerfModel", "prefill_tokens_per_second", "attention_seconds_per_position", "COMPUTE_EFFICIENCY", "BANDWIDTH_EFFICIENCY",
           "STEP_OVERHEAD_S", "SEQUENCE_OVERHEAD_S"]

# Dense 16-bit tensor throughput (FLOP/s) by GPU architecture.
_PEAK_FLOPS = {"sm80": 312e12, "sm89": 362e12, "sm90": 989e12, "sm100": 2250e12, "sm120": 419e12}
# Fitted to the published figures named in the module docstring.
COMPUTE_EFFICIENCY = 0.60
BANDWIDTH_EFFICIENCY = 0.90
STEP_OVERHEAD_S = 0.002
SEQUENCE_OVERHEAD_S = 10e-6


@dataclass(frozen=True)
class PerfModel:
    kv_tokens: int
    max_batch: int
    weight_bytes: float          # per GPU
    kv_bytes_per_token: float    # per GPU
    bandwidth: float             # bytes/s per GPU
    prefill_tokens_per_s: float  # per replica, linear FLOPs only (the autoscaler's prefill unit)
    # Attention FLOPs per context token per attended position, over the replica's FLOP/s:
    # seconds per token-position (0 when the model's shape is unknown).
    attention_s_per_position: float = 0.0
    max_num_tokens: int = 8192   # tokens per iteration (trtllm-build --max_num_tokens)
    max_input_len: int = 1 << 30
    max_seq_len: int = 1 << 30

    @classmethod
    def from_plan(cls, plan: Plan, spec: LLMServiceSpec, gpu: GPU,
                  model: ModelConfig | None = None) -> PerfModel:
        weight = float(plan.weight_bytes_per_gpu or 0)
        precision = Precision(spec.precision)
        attention = 0.0 if model is None else attention_seconds_per_position(model, precision, gpu, spec.gpus)
        engine = spec.engine
        return cls(kv_tokens=int(plan.kv_cache_tokens or 0), max_batch=engine.max_batch_size,
                   weight_bytes=weight, kv_bytes_per_token=float(plan.kv_bytes_per_token_per_gpu or 0),
                   bandwidth=gpu.bandwidth_tbs * 1e12,
                   prefill_tokens_per_s=prefill_tokens_per_second(weight, precision, gpu),
                   attention_s_per_position=attention, max_num_tokens=engine.max_num_tokens,
                   max_input_len=engine.max_input_len, max_seq_len=engine.max_seq_len)

    @classmethod
    def for_catalog_model(cls, spec: LLMServiceSpec, gpu: GPU) -> PerfModel:
        """For a service whose model is in the bundled catalog (the benchmark's and the
        demo's): planned as the operator plans it, nothing downloaded."""
        model, why = model_config(spec.model.source)
        if model is None:
            raise UnsupportedModel(f"spec.model.source: {why}")
        return cls.from_plan(plan(model, spec, gpu), spec, gpu, model)

    def rejects(self, input_tokens: int, output_tokens: int) -> bool:
        """True when the engine refuses the request outright: a prompt over ``maxInputLen``
        or a sequence over ``maxSeqLen`` fails validation in the executor, and one that could
        never fit the KV cache would wait forever."""
        return (input_tokens > self.max_input_len or input_tokens + output_tokens > self.max_seq_len
                or input_tokens + output_tokens > self.kv_tokens)

    def context_seconds(self, start: float, end: float) -> float:
        """Compute time of context positions ``start`` to ``end`` of one prompt (a chunk)."""
        return ((end - start) / self.prefill_tokens_per_s
                + self.attention_s_per_position * (end * end - start * start) / 2.0)

    def step_seconds(self, kv_tokens_in_use: float, sequences: int = 0) -> float:
        """One iteration's memory-bound part with ``kv_tokens_in_use`` tokens of context
        across ``sequences`` scheduled sequences."""
        return ((self.weight_bytes + kv_tokens_in_use * self.kv_bytes_per_token)
                / (self.bandwidth * BANDWIDTH_EFFICIENCY) + STEP_OVERHEAD_S
                + SEQUENCE_OVERHEAD_S * sequences)

    def request_seconds(self, input_tokens: int, output_tokens: int) -> float:
        """Replica-seconds one request costs at full batch: its context plus its share of
        the decode steps (the autoscaler's per-request cost)."""
        batch = max(1, min(self.max_batch, self.kv_tokens // max(1, input_tokens + output_tokens)))
        step = self.step_seconds(batch * (input_tokens + output_tokens / 2), batch)
        return self.context_seconds(0, input_tokens) + output_tokens * step / batch

    def offline_output_tokens_per_s(self, input_tokens: int, output_tokens: int) -> float:
        """Output tokens/s of one replica fed uniform requests at an unbounded rate (the
        published benchmark's scenario): a full batch interleaves its requests' context
        chunks with their decode steps."""
        batch = max(1, min(self.max_batch, self.kv_tokens // (input_tokens + output_tokens)))
        prefill = batch * self.context_seconds(0, input_tokens)
        decode = output_tokens * self.step_seconds(batch * (input_tokens + output_tokens / 2), batch)
        return batch * output_tokens / (prefill + decode)


def _replica_flops(precision: Precision, gpu: GPU, gpus: int) -> float:
    speedup = 1.0 if WEIGHT_BYTES[precision] >= 2 else 2.0  # 8- and 4-bit tensor cores
    return _PEAK_FLOPS.get(gpu.arch, 300e12) * COMPUTE_EFFICIENCY * speedup * max(gpus, 1)


def attention_seconds_per_position(model: ModelConfig, precision: Precision, gpu: GPU, gpus: int) -> float:
    """Compute seconds of context attention per token per position it attends, on a replica
    of ``gpus`` GPUs (``PerfModel.attention_s_per_position``)."""
    return 4.0 * model.num_layers * model.num_heads * model.head_dim / _replica_flops(precision, gpu, gpus)


def prefill_tokens_per_second(weight_bytes_per_gpu: float, precision: Precision, gpu: GPU) -> float:
    """Input tokens one replica prefills per second on its linear layers: each GPU holds
    ``weight_bytes_per_gpu`` of weights and does its share of the ``2 × parameters`` FLOPs
    per token."""
    bytes_per_param = WEIGHT_BYTES[precision]
    flops = _replica_flops(precision, gpu, 1)
    return flops / (2 * max(weight_bytes_per_gpu, 1.0) / bytes_per_param)
