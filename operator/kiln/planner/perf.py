"""How fast one replica runs: the performance model behind the simulator and the autoscaler's
prefill-load signal. Pure.

- Prefill is compute bound: ``2 × parameters`` FLOPs per input token at ``COMPUTE_EFFICIENCY``
  of the GPU's dense tensor peak (16-bit; 8- and 4-bit precisions run at twice that).
- A decode step is memory-bandwidth bound: it reads the replica's weights once plus the KV
  cache of every generating sequence's current length, at ``BANDWIDTH_EFFICIENCY`` of the
  GPU's HBM bandwidth, plus ``STEP_OVERHEAD_S``.

**Calibration.** The two efficiencies are fitted to TensorRT-LLM's published throughput for
Llama-3.1-8B-Instruct FP8 on one H100 SXM (TensorRT-LLM documentation, "Performance Overview",
``docs/source/performance/perf-overview.md``, v1.0, table "Llama 3.1 8B", column "H100 TP1
(FP8)"): total output throughput at maximum load of 15,220 tokens/s for 1000/1000 input/output
tokens, 3,450 for 2048/128, 3,459 for 5000/500, 22,714 for 128/2048, 9,305 for 2048/2048 and
17,660 for 500/2000. With the planner's KV capacity for that model and GPU,
:meth:`PerfModel.offline_output_tokens_per_s` reproduces all six within 8 % (a unit test pins
this). Other GPUs and models scale by their bandwidth, peak FLOPs and sizes from the planner;
read absolute latencies as estimates, and comparisons between policies on the same model as
the result.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api import LLMServiceSpec, Precision
from .gpus import GPU
from .memory import WEIGHT_BYTES
from .model import ModelConfig, UnsupportedModel, catalog_config
from .plan import Plan, plan

__all__ = ["PerfModel", "prefill_tokens_per_second", "COMPUTE_EFFICIENCY", "BANDWIDTH_EFFICIENCY"]

# Dense 16-bit tensor throughput (FLOP/s) by GPU architecture.
_PEAK_FLOPS = {"sm80": 312e12, "sm89": 362e12, "sm90": 989e12, "sm100": 2250e12, "sm120": 419e12}
# Fitted to the published figures named in the module docstring.
COMPUTE_EFFICIENCY = 0.65
BANDWIDTH_EFFICIENCY = 0.80
STEP_OVERHEAD_S = 0.002


@dataclass(frozen=True)
class PerfModel:
    kv_tokens: int
    max_batch: int
    weight_bytes: float          # per GPU
    kv_bytes_per_token: float    # per GPU
    bandwidth: float             # bytes/s per GPU
    prefill_tokens_per_s: float  # per replica

    @classmethod
    def from_plan(cls, plan: Plan, spec: LLMServiceSpec, gpu: GPU) -> PerfModel:
        weight = float(plan.weight_bytes_per_gpu or 0)
        return cls(kv_tokens=int(plan.kv_cache_tokens or 0), max_batch=spec.engine.max_batch_size,
                   weight_bytes=weight, kv_bytes_per_token=float(plan.kv_bytes_per_token_per_gpu or 0),
                   bandwidth=gpu.bandwidth_tbs * 1e12,
                   prefill_tokens_per_s=prefill_tokens_per_second(weight, Precision(spec.precision), gpu))

    @classmethod
    def for_catalog_model(cls, spec: LLMServiceSpec, gpu: GPU) -> PerfModel:
        """For a service whose model is in the bundled catalog (the benchmark's and the
        demo's): planned as the operator plans it, nothing downloaded."""
        raw = catalog_config(spec.model.location)
        if raw is None:
            raise UnsupportedModel(f"spec.model.source: {spec.model.source} is not in the bundled catalog")
        return cls.from_plan(plan(ModelConfig.from_hf(raw), spec, gpu), spec, gpu)

    def step_seconds(self, kv_tokens_in_use: float) -> float:
        """One decode step with ``kv_tokens_in_use`` tokens of context across the batch."""
        return ((self.weight_bytes + kv_tokens_in_use * self.kv_bytes_per_token)
                / (self.bandwidth * BANDWIDTH_EFFICIENCY) + STEP_OVERHEAD_S)

    def offline_output_tokens_per_s(self, input_tokens: int, output_tokens: int) -> float:
        """Output tokens/s of one replica fed uniform requests at an unbounded rate (the
        published benchmark's scenario): a full batch alternates the prefill of its
        requests with their decode steps."""
        batch = max(1, min(self.max_batch, self.kv_tokens // (input_tokens + output_tokens)))
        prefill = batch * input_tokens / self.prefill_tokens_per_s
        decode = output_tokens * self.step_seconds(batch * (input_tokens + output_tokens / 2))
        return batch * output_tokens / (prefill + decode)




def prefill_tokens_per_second(weight_bytes_per_gpu: float, precision: Precision, gpu: GPU) -> float:
    """Input tokens one replica prefills per second: each GPU holds ``weight_bytes_per_gpu`` of
    weights and does its share of the ``2 × parameters`` FLOPs per token."""
    bytes_per_param = WEIGHT_BYTES[precision]
    speedup = 1.0 if bytes_per_param >= 2 else 2.0  # 8- and 4-bit tensor cores
    flops = _PEAK_FLOPS.get(gpu.arch, 300e12) * COMPUTE_EFFICIENCY * speedup
    return flops / (2 * max(weight_bytes_per_gpu, 1.0) / bytes_per_param)
