"""GPU memory arithmetic for one rank of a TensorRT-LLM engine.

KV cache, per GPU and token (TensorRT-LLM ``kvCacheManager.cpp``)::

    kv_bytes_per_token = 2 (K,V) x layers_on_this_pp_stage x ceil(kv_heads / tp)
                         x head_dim x kv_dtype_bytes

Weights, as TensorRT-LLM stores them: the decoder's linear layers at the chosen precision
(plus per-group scales for AWQ/NVFP4), split by TP and PP; embeddings and ``lm_head`` in 16 bit
(``lm_head`` kept as its own tensor even when the model ties it); embeddings replicated on
every TP rank of the first stage, ``lm_head`` split by TP on the last stage.

The KV pool is ``fraction x (memory - CUDA context - weights - activations - buffers)``: the
runtime measures free memory *after* loading, so the fraction never applies to the weights.
"""

from __future__ import annotations

import math

from ..api import KVCacheDtype, Precision
from .model import ModelConfig

__all__ = [
    "WEIGHT_BYTES",
    "kv_dtype_for",
    "KV_DTYPE_BYTES",
    "kv_bytes_per_token",
    "weight_bytes_per_gpu",
    "activation_bytes",
    "runtime_buffer_bytes",
    "layers_per_stage",
]

GIB = 1024**3

# Bytes per weight of the quantized linear layers, scales included (group size 128 for AWQ,
# an fp8 scale per 16 values for NVFP4).
WEIGHT_BYTES: dict[Precision, float] = {
    Precision.FP16: 2.0,
    Precision.BF16: 2.0,
    Precision.FP8: 1.0,
    Precision.INT8_SQ: 1.0,
    Precision.INT8_WO: 1.0,
    Precision.INT4_AWQ: 0.5 + 2 / 128,
    Precision.W4A8_AWQ: 0.5 + 2 / 128,
    Precision.INT4_WO: 0.5,
    Precision.NVFP4: 0.5 + 1 / 16,
}

KV_DTYPE_BYTES: dict[KVCacheDtype, float] = {
    KVCacheDtype.FP16: 2, KVCacheDtype.BF16: 2, KVCacheDtype.FP8: 1, KVCacheDtype.INT8: 1,
}


def kv_dtype_for(precision: Precision | str, kv_dtype: KVCacheDtype | str) -> KVCacheDtype:
    """Resolve ``auto``: fp8 for fp8/nvfp4/w4a8-awq engines, otherwise the 16-bit compute type."""
    kv_dtype = KVCacheDtype(kv_dtype)
    if kv_dtype != KVCacheDtype.AUTO:
        return kv_dtype
    precision = Precision(precision)
    if precision in (Precision.FP8, Precision.NVFP4, Precision.W4A8_AWQ):
        return KVCacheDtype.FP8
    return KVCacheDtype.FP16 if precision == Precision.FP16 else KVCacheDtype.BF16


def layers_per_stage(model: ModelConfig, pp: int) -> int:
    """Layers on the fullest pipeline stage (TensorRT-LLM gives the remainder to early stages)."""
    return math.ceil(model.num_layers / pp)


def kv_bytes_per_token(model: ModelConfig, kv_dtype: KVCacheDtype, tp: int, pp: int) -> int:
    heads_per_gpu = math.ceil(model.num_kv_heads / tp)
    return int(2 * layers_per_stage(model, pp) * heads_per_gpu * model.head_dim
               * KV_DTYPE_BYTES[kv_dtype])


def weight_bytes_per_gpu(model: ModelConfig, precision: Precision, tp: int, pp: int) -> int:
    """Weights on the fullest rank: a full stage of layers, plus embeddings or lm_head."""
    per_layer = (model.layer_linear_params * WEIGHT_BYTES[Precision(precision)] / tp
                 + model.layer_other_params * 2)
    layers = layers_per_stage(model, pp) * per_layer
    embedding = model.embedding_params * 2
    lm_head = model.embedding_params * 2 / tp
    final_norm = model.hidden_size * 2
    if pp == 1:
        return int(layers + embedding + lm_head + final_norm)
    return int(layers + max(embedding, lm_head + final_norm))


def activation_bytes(model: ModelConfig, max_num_tokens: int, tp: int) -> int:
    """Execution-context memory, fixed at build time by max_num_tokens (16-bit activations).

    An estimate: residual, attention and MLP intermediates of one layer for every token in
    flight; it lands at ~0.5-1 GiB for 7-8B models at 8192 tokens, as engines report.
    """
    mlp = (model.moe_intermediate_size * model.experts_per_token if model.num_experts
           else model.intermediate_size)
    attention = (model.num_heads + 2 * model.num_kv_heads) * model.head_dim
    per_token = 4 * model.hidden_size + (3 * mlp + attention) / tp
    return int(max_num_tokens * per_token * 2)


def runtime_buffer_bytes(model: ModelConfig, max_batch_size: int, max_seq_len: int, tp: int) -> int:
    """Decoder and runtime buffers: fp32 logits and probabilities per sequence, output ids."""
    logits = 2 * max_batch_size * math.ceil(model.vocab_size / tp) * 4
    ids = 3 * max_batch_size * max_seq_len * 4
    return int(logits + ids)
