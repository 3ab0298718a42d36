"""``kiln-runtime djl-properties``: ``serving.properties`` for DJL Serving's TensorRT-LLM LMI.

``engine=MPI`` with ``option.rolling_batch=trtllm`` runs the TensorRT-LLM rolling-batch
handler (the LMI image forces MPI mode for trtllm anyway). ``option.model_id`` points at a
prebuilt engine repository, so that the server need not build at startup (whether DJL
0.33.0's server takes the partition script's output as built, LmiUtils'
``isValidTrtLlmModelRepo``, has not been run here: no GPU, no image). DJL passes every other
``option.<k>`` to trtllm-build's parser at build time, so only keys that parser knows, or
that DJL itself reads, are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DJLSettings", "serving_properties", "QUANT_ALGO", "KV_QUANT_ALGO"]

# Kiln precision -> TensorRT-LLM QuantAlgo name (DJL reads option.quant_algo, upper-cased).
QUANT_ALGO = {"fp8": "FP8", "int8-sq": "W8A8_SQ_PER_CHANNEL", "int4-awq": "W4A16_AWQ",
              "w4a8-awq": "W4A8_AWQ", "int8-wo": "W8A16", "int4-wo": "W4A16", "nvfp4": "NVFP4"}
KV_QUANT_ALGO = {"fp8": "FP8", "int8": "INT8"}


@dataclass(frozen=True)
class DJLSettings:
    model_id: str
    precision: str
    kv_cache_dtype: str
    tensor_parallel: int
    pipeline_parallel: int
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    kv_cache_free_gpu_mem_fraction: float = 0.9


def serving_properties(settings: DJLSettings) -> str:
    props = {
        "engine": "MPI",
        "option.model_id": settings.model_id,
        "option.rolling_batch": "trtllm",
        "option.tensor_parallel_degree": str(settings.tensor_parallel),
        "option.pipeline_parallel_degree": str(settings.pipeline_parallel),
        "option.max_rolling_batch_size": str(settings.max_batch_size),
        "option.max_input_len": str(settings.max_input_len),
        "option.max_seq_len": str(settings.max_seq_len),
        "option.max_num_tokens": str(settings.max_num_tokens),
        "option.kv_cache_free_gpu_mem_fraction": f"{settings.kv_cache_free_gpu_mem_fraction:g}",
    }
    if settings.precision in ("fp16", "bf16"):
        props["option.dtype"] = settings.precision
    else:
        props["option.quant_algo"] = QUANT_ALGO[settings.precision]
    if settings.kv_cache_dtype in KV_QUANT_ALGO:
        props["option.kv_cache_quant_algo"] = KV_QUANT_ALGO[settings.kv_cache_dtype]
    return "".join(f"{key}={value}\n" for key, value in props.items())


def write_properties(settings: DJLSettings, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "serving.properties"
    path.write_text(serving_properties(settings))
    return path
