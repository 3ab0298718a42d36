"""The planner: model config x GPU x precision x limits -> Plan. Pure: no I/O, no clock.

Parallelism when ``auto``: tensor parallelism inside a node (the largest TP that divides the
GPUs of a replica, fits on one node and divides the attention heads), pipeline parallelism
across nodes for the rest. TP inside a node rides NVLink; PP across nodes only sends
activations between stages, which is why multi-node serving splits this way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from kiln_runtime import support

from ..api import KVCacheDtype, LLMServiceSpec, PlanStatus, Precision, ServerKind
from ..errors import PlanRefused
from .build import FP8_ROWWISE, BuildPlan, plan_build
from .gpus import CUDA_CONTEXT_GIB, GPU
from .memory import (GIB, activation_bytes, kv_bytes_per_token, kv_dtype_for,
                     runtime_buffer_bytes, weight_bytes_per_gpu)
from .model import ModelConfig

__all__ = ["Plan", "plan", "resolve_parallelism", "SUGGESTION_GPU_COUNTS"]

SUGGESTION_GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64)
# Smaller precisions to suggest, best quality first.
_PRECISION_LADDER = (Precision.BF16, Precision.FP8, Precision.INT8_SQ, Precision.INT8_WO,
                     Precision.W4A8_AWQ, Precision.INT4_AWQ, Precision.NVFP4)


@dataclass(frozen=True)
class Plan:
    """What one replica will look like. ``fits`` is None when the model config is unknown."""

    fits: bool | None
    tensor_parallel: int
    pipeline_parallel: int
    kv_cache_dtype: KVCacheDtype
    weight_bytes_per_gpu: int | None = None
    activation_bytes_per_gpu: int | None = None
    kv_bytes_per_token_per_gpu: int | None = None
    kv_cache_tokens: int | None = None
    max_concurrent_sequences: int | None = None
    # With engine.weightStreaming: the share of the weights kept on the GPU (Triton's
    # gpu_weights_percent); the rest crosses PCIe on every decoding step.
    gpu_weights_percent: float | None = None
    reasons: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())
    # False when TensorRT-LLM cannot build the engine at all (the reasons say why), as
    # opposed to an engine that would not fit in memory.
    buildable: bool = True
    # What the build Job needs (memory, scratch, checkpoint recipe); None without a model.
    build: BuildPlan | None = None

    def status(self) -> PlanStatus:
        """``status.plan``, the typed model the CRD is generated from (``kiln plan -o json``
        prints its wire form)."""
        return PlanStatus(
            fits=self.fits, tensor_parallel=self.tensor_parallel,
            pipeline_parallel=self.pipeline_parallel, weight_bytes_per_gpu=self.weight_bytes_per_gpu,
            kv_bytes_per_token_per_gpu=self.kv_bytes_per_token_per_gpu,
            kv_cache_tokens=self.kv_cache_tokens, max_concurrent_sequences=self.max_concurrent_sequences,
            gpu_weights_percent=self.gpu_weights_percent, reasons=list(self.reasons),
            notes=list(self.notes) or None)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _kv_split(model: ModelConfig, tp: int) -> bool:
    """TensorRT-LLM splits KV heads across TP ranks, or replicates them when TP exceeds them."""
    return model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0


def resolve_parallelism(spec: LLMServiceSpec, model: ModelConfig | None) -> tuple[int, int]:
    """(TP, PP) for the spec; raises PlanRefused for a layout the model cannot take. With
    both degrees ``auto``, the largest tensor-parallel degree within a node whose pipeline
    degree the model takes too."""
    tp_req, pp_req = spec.parallelism.tensor, spec.parallelism.pipeline
    gpus = spec.gpus
    if isinstance(tp_req, int) and isinstance(pp_req, int):
        tp, pp = tp_req, pp_req
    elif isinstance(tp_req, int):
        tp, pp = tp_req, gpus // tp_req
    elif isinstance(pp_req, int):
        tp, pp = gpus // pp_req, pp_req
    else:
        layouts = _auto_layouts(gpus, spec.gpu.per_node, model)
        if not layouts:
            raise PlanRefused(_no_layout(spec, model))
        tp, pp = layouts[-1]
    if model is not None:
        if model.num_heads % tp:
            raise PlanRefused(f"spec.parallelism.tensor: {tp} does not divide the model's "
                              f"{model.num_heads} attention heads")
        if not _kv_split(model, tp):
            raise PlanRefused(f"spec.parallelism.tensor: {tp} and the model's "
                              f"{model.num_kv_heads} KV heads must divide one another")
        if pp > model.num_layers or model.num_layers % pp:
            raise PlanRefused(f"spec.parallelism.pipeline: {pp} does not divide the model's "
                              f"{model.num_layers} layers")
    return tp, pp


def _auto_layouts(gpus: int, per_node: int, model: ModelConfig | None) -> list[tuple[int, int]]:
    """Every (TP, PP) of ``gpus`` the model takes, TP within a node, by TP."""
    return [(tp, gpus // tp) for tp in _divisors(gpus) if tp <= per_node
            and (model is None or (model.num_heads % tp == 0 and _kv_split(model, tp)
                                   and model.num_layers % (gpus // tp) == 0))]


def _no_layout(spec: LLMServiceSpec, model: ModelConfig | None) -> str:
    """Why no layout of spec.gpus fits the model, and the nearest GPU counts that do."""
    gpus, per_node = spec.gpus, spec.gpu.per_node
    assert model is not None, "one GPU is always a layout without a model"
    counts = [g for g in range(1, 4 * max(gpus, per_node) + 1)
              if (g <= per_node or g % per_node == 0) and _auto_layouts(g, per_node, model)]
    near = [max((g for g in counts if g < gpus), default=None), min((g for g in counts if g > gpus), default=None)]
    options = " or ".join(str(g) for g in near if g is not None)
    return (f"spec.gpus: {gpus} GPUs cannot be split over this model: the tensor-parallel degree must "
            f"divide its {model.num_heads} attention heads (and its {model.num_kv_heads} KV heads divide it, "
            f"or it them) within a node of {per_node}, and the pipeline degree, the rest, its "
            f"{model.num_layers} layers" + (f"; gpus: {options} can" if options else ""))


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _evaluate(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU, tp: int, pp: int) -> Plan:
    precision = Precision(spec.precision)
    kv_dtype = kv_dtype_for(precision, spec.kv_cache_dtype)
    limits = spec.engine
    reasons: list[str] = []
    if precision in (Precision.FP8, Precision.W4A8_AWQ) and not gpu.fp8:
        reasons.append(f"precision {precision.value} needs FP8 tensor cores (sm89 or newer); "
                       f"{gpu.name} is {gpu.arch}")
    if precision == Precision.NVFP4 and not gpu.fp4:
        reasons.append(f"precision nvfp4 needs FP4 tensor cores (Blackwell); {gpu.name} is {gpu.arch}")
    if kv_dtype == KVCacheDtype.FP8 and not gpu.fp8:
        reasons.append(f"kvCacheDtype fp8 needs sm89 or newer; {gpu.name} is {gpu.arch}")
    refused: list[str] = []
    build = plan_build(model, spec, gpu, tp, pp)
    notes: list[str] = []
    if spec.runtime.server == ServerKind.TRITON:
        # What TensorRT-LLM 1.2.1 cannot build, refused here so no Job is ever created for it.
        refused = support.refusals(model.architecture, precision.value, kv_dtype.value,
                                   support.arch_number(gpu.arch), bool(limits.weight_streaming),
                                   model.quantized)
        refused += build.reasons
        if build.recipe == FP8_ROWWISE:
            notes.append("fp8 is built row-wise (convert_checkpoint.py --use_fp8_rowwise "
                         "--load_by_shard): the 16-bit model is larger than the build node's "
                         "GPUs can calibrate" + (", so model.calibration is not read"
                                                 if spec.model.calibration else ""))
    if spec.gpus > spec.gpu.per_node and not spec.network.enabled:
        notes.append("spans nodes without spec.network: NCCL runs over TCP sockets between the "
                     "nodes; set network.rdmaResource for InfiniBand/RoCE/EFA")
    elif spec.gpus > spec.gpu.per_node:
        notes.append("RDMA: the ranks run as uid 1000, which does not hold IPC_LOCK "
                     "(kubernetes/kubernetes#56374); the nodes must give containers an unlimited "
                     "locked-memory limit for NCCL to register its buffers")
    reasons += refused
    if limits.max_seq_len > model.max_position_embeddings:
        reasons.append(f"engine.maxSeqLen {limits.max_seq_len} exceeds the model's "
                       f"{model.max_position_embeddings} positions")

    weights = weight_bytes_per_gpu(model, precision, tp, pp)
    activations = activation_bytes(model, limits.max_num_tokens, tp)
    buffers = runtime_buffer_bytes(model, limits.max_batch_size, limits.max_seq_len, tp)
    total = gpu.memory_gib * GIB
    kv_per_token = kv_bytes_per_token(model, kv_dtype, tp, pp)
    resident = weights
    percent = None
    if limits.weight_streaming:
        percent = streamed_weights_percent(model, spec, gpu, tp, pp)
        resident = int(weights * percent)
        notes.append(f"weight streaming keeps {percent:.0%} of the weights on the GPU; the rest "
                     "streams from host memory every decoding step, so throughput drops sharply")
    free = total - CUDA_CONTEXT_GIB * GIB - resident - activations - buffers
    pool = max(0.0, free * limits.kv_cache_free_gpu_mem_fraction)
    blocks = math.ceil(pool / kv_per_token / limits.tokens_per_block) if pool else 0
    kv_tokens = blocks * limits.tokens_per_block
    sequences = min(kv_tokens // limits.max_seq_len, limits.max_batch_size)
    if limits.weight_streaming and not percent:
        reasons.append("even with weight streaming, activations, buffers and one sequence of KV "
                       f"cache do not fit in a {gpu.name}")
    elif free <= 0:
        reasons.append(
            f"weights ({_gib(weights)}) plus activations and buffers ({_gib(activations + buffers)})"
            f" need {_gib(total - free)} per GPU but a {gpu.name} has {_gib(total)}: "
            f"{_gib(-free)} short")
    elif kv_tokens < limits.max_seq_len:
        reasons.append(f"the KV cache holds {kv_tokens} tokens per replica, less than one sequence "
                       f"of engine.maxSeqLen={limits.max_seq_len}")
    return Plan(
        fits=not reasons, tensor_parallel=tp, pipeline_parallel=pp, kv_cache_dtype=kv_dtype,
        weight_bytes_per_gpu=weights, activation_bytes_per_gpu=activations + buffers,
        kv_bytes_per_token_per_gpu=kv_per_token,
        kv_cache_tokens=kv_tokens, max_concurrent_sequences=sequences, gpu_weights_percent=percent,
        reasons=tuple(reasons), notes=tuple(notes), buildable=not refused, build=build,
    )


def streamed_weights_percent(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU, tp: int,
                             pp: int) -> float:
    """The largest share of the weights (two decimals, rounded down) that leaves a KV pool of
    one maxSeqLen sequence; 0 when even that does not fit."""
    limits = spec.engine
    precision = Precision(spec.precision)
    weights = weight_bytes_per_gpu(model, precision, tp, pp)
    kv_per_token = kv_bytes_per_token(model, kv_dtype_for(precision, spec.kv_cache_dtype), tp, pp)
    minimal_pool = limits.max_seq_len * kv_per_token / limits.kv_cache_free_gpu_mem_fraction
    room = (gpu.memory_gib - CUDA_CONTEXT_GIB) * GIB \
        - activation_bytes(model, limits.max_num_tokens, tp) \
        - runtime_buffer_bytes(model, limits.max_batch_size, limits.max_seq_len, tp) - minimal_pool
    return max(0.0, min(1.0, math.floor(room / weights * 100) / 100))


def _variant(spec: LLMServiceSpec, **changes: Any) -> LLMServiceSpec:
    return spec.model_copy(update=changes)


def _fits(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU) -> bool:
    try:
        tp, pp = resolve_parallelism(spec, model)
    except PlanRefused:
        return False
    return bool(_evaluate(model, spec, gpu, tp, pp).fits)


def _suggestions(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU) -> list[str]:
    auto = spec.parallelism.model_copy(update={"tensor": "auto", "pipeline": "auto"})
    out: list[str] = []
    for count in SUGGESTION_GPU_COUNTS:
        if count > spec.gpus and _fits(model, _variant(spec, gpus=count, parallelism=auto), gpu):
            out.append(f"gpus: {count}")
            break
    current = _weight_rank(Precision(spec.precision))
    if _runs_on(Precision(spec.precision), gpu):
        # Memory is short: only a smaller precision helps, the best quality first.
        candidates = [p for p in _PRECISION_LADDER if _weight_rank(p) > current]
    else:
        # The GPU lacks the precision's tensor cores: the nearest one it runs, on either side.
        candidates = sorted(_PRECISION_LADDER, key=lambda p: (abs(_weight_rank(p) - current),
                                                              _weight_rank(p)))
    for precision in candidates:
        if precision != spec.precision and _fits(model, _variant(spec, precision=precision), gpu):
            out.append(f"precision: {precision.value}")
            break
    if not spec.engine.weight_streaming:
        streaming = spec.engine.model_copy(update={"weight_streaming": True})
        variant = _variant(spec, engine=streaming)
        if _fits(model, variant, gpu):
            tp, pp = resolve_parallelism(variant, model)
            share = streamed_weights_percent(model, variant, gpu, tp, pp)
            out.append(f"engine.weightStreaming: true ({share:.0%} of the weights on the GPU; "
                       "throughput drops sharply)")
    seq = spec.engine.max_seq_len // 2
    while seq > spec.engine.max_input_len and seq >= 256:
        engine = spec.engine.model_copy(update={"max_seq_len": seq})
        if _fits(model, _variant(spec, engine=engine), gpu):
            out.append(f"engine.maxSeqLen: {seq}")
            break
        seq //= 2
    return out


def _runs_on(precision: Precision, gpu: GPU) -> bool:
    if precision in (Precision.FP8, Precision.W4A8_AWQ):
        return gpu.fp8
    return gpu.fp4 if precision == Precision.NVFP4 else True


def _weight_rank(precision: Precision) -> int:
    return _PRECISION_LADDER.index(precision) if precision in _PRECISION_LADDER else 0


def plan(model: ModelConfig | None, spec: LLMServiceSpec, gpu: GPU) -> Plan:
    """Plan one replica. Raises PlanRefused for layouts the model cannot take."""
    tp, pp = resolve_parallelism(spec, model)
    if model is None:
        return Plan(fits=None, tensor_parallel=tp, pipeline_parallel=pp,
                    kv_cache_dtype=kv_dtype_for(spec.precision, spec.kv_cache_dtype),
                    reasons=("model config unknown: pass --model-config or use a model in "
                             "Kiln's catalog",))
    result = _evaluate(model, spec, gpu, tp, pp)
    if result.fits:
        return result
    if spec.engine.max_seq_len > model.max_position_embeddings:
        # No GPU holds positions the model does not have.
        return replace(result, reasons=(*result.reasons, f"set engine.maxSeqLen to at most "
                                        f"{model.max_position_embeddings}, the model's positions"))
    suggestions = _suggestions(model, spec, gpu)
    if suggestions:
        hint = "would fit with " + " or ".join(suggestions)
    elif result.kv_cache_dtype == KVCacheDtype.FP8 and not gpu.fp8:
        # Not memory: the GPU has no FP8, whatever its size.
        hint = "set kvCacheDtype: auto (16-bit on this GPU), or use a GPU of sm89 or newer"
    elif result.buildable:
        hint = "nothing nearby fits: use a larger GPU type"
    else:  # the refusal already names what would work
        return result
    return replace(result, reasons=(*result.reasons, hint))
