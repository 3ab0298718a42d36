"""What the build Job needs: host memory, scratch space, and the checkpoint recipe that fits it.

Where the weights live while a checkpoint is made (TensorRT-LLM 1.2.1):

- ``quantize.py`` (fp8, int8-sq, AWQ, nvfp4) loads the whole 16-bit model for calibration
  with ``device_map="auto"`` (``tensorrt_llm/quantization/quantize_by_modelopt.py``
  ``get_model``): on the build node's GPUs first, the rest in host memory.
- ``convert_checkpoint.py`` (fp16, bf16, weight-only) loads the Hugging Face model in host
  memory; with ``--load_by_shard`` it holds one safetensors shard at a time.
- For Llama-family models too large to calibrate on one node's GPUs (Llama-3.1-405B: 810 GB
  in BF16 against 640 GB on 8 H100s), ``examples/models/core/llama/README.md`` (Llama 3.1
  405B) documents ``convert_checkpoint.py --use_fp8_rowwise --load_by_shard``: FP8 weights
  per channel, activations per token, no calibration, one shard at a time. Meta's FP8
  release goes the same way, at any size ("--use_fp8_rowwise is enabled automatically"); no
  other pre-quantized source is built (``kiln_runtime.support.ROWWISE_FP8_SOURCE``).

Scratch holds the download and the converted checkpoint, and for a build that calibrates
(``kiln_runtime.support.calibrates``: ``quantize.py``, and the converter for an INT8 KV cache)
the calibration set: ``quantize.py``'s default, ``cnn_dailymail``, is fetched with
``load_dataset("cnn_dailymail", name="3.0.0", split="train")`` (``get_calib_dataloader``), the
whole train split of 287,113 articles (the dataset card) into ``HF_HOME`` on scratch, of which
512 are used. :data:`CALIBRATION_DATA_BYTES` is an allowance for it, and
:data:`SCRATCH_MARGIN` one for the rest (tokenizer files, the Hub's metadata beside the
download, the timing cache); neither is measured. Past :data:`STAGE_ON_CACHE_BYTES` scratch
goes to the engine cache volume instead of a node's ephemeral storage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from kiln_runtime import support

from ..api import LLMServiceSpec, Precision
from .gpus import GPU
from .memory import GIB, weight_bytes_per_gpu
from .model import ModelConfig

__all__ = ["BuildPlan", "plan_build", "BASE_MEMORY_BYTES", "STAGE_ON_CACHE_BYTES",
           "CALIBRATION_DATA_BYTES", "SCRATCH_MARGIN", "FP8_ROWWISE"]

# The build container's own needs: Python, torch, TensorRT's builder, tokenizer, one shard.
BASE_MEMORY_BYTES = 32 * GIB
# Scratch above this goes on the cache volume (a node's ephemeral storage is rarely larger).
STAGE_ON_CACHE_BYTES = 256 * GIB
# The calibration set's download and its converted cache (see above): an allowance.
CALIBRATION_DATA_BYTES = 4 * GIB
# Scratch past the download and the checkpoint: 2 % of them and a GiB.
SCRATCH_MARGIN = (0.02, 1 * GIB)
# Share of the build GPUs' memory accelerate may fill while calibrating.
_CALIBRATION_GPU_SHARE = 0.9
FP8_ROWWISE: Literal["fp8-rowwise"] = "fp8-rowwise"


@dataclass(frozen=True)
class BuildPlan:
    recipe: Literal["fp8-rowwise"] | None  # None: the precision's usual tool; FP8_ROWWISE: see above
    memory_bytes: int           # host memory the build container requests
    scratch_bytes: int          # download + checkpoint (+ calibration set) + margin
    stage_on_cache: bool        # scratch on the engine cache volume, not an emptyDir
    reasons: tuple[str, ...] = ()


def _gib(n: float) -> str:
    return f"{math.ceil(n / GIB)} GiB"


def plan_build(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU, tp: int, pp: int) -> BuildPlan:
    precision = Precision(spec.precision)
    # The Hugging Face checkpoint: 16 bit, or 8 for Meta's FP8 release (its first and last
    # layers and its attention stay 16-bit: counted at 8, a slight underestimate).
    meta_fp8 = model.quantized == support.ROWWISE_FP8_SOURCE
    source_bytes = model.hf_param_count * (1 if meta_fp8 else 2)
    download = 0 if spec.model.scheme == "pvc" else source_bytes
    checkpoint = weight_bytes_per_gpu(model, precision, tp, pp) * tp * pp
    build_gpus = min(spec.gpus, spec.gpu.per_node)
    gpu_room = int(build_gpus * gpu.memory_gib * GIB * _CALIBRATION_GPU_SHARE)
    node = int(spec.gpu.node_memory_gi_b * GIB)
    recipe: Literal["fp8-rowwise"] | None = None
    reasons: list[str] = []
    if support.checkpoint_tool(precision.value) == "convert":
        # The converter holds the whole Hugging Face model in host memory.
        memory = BASE_MEMORY_BYTES + source_bytes
    else:
        spill = max(0, source_bytes - gpu_room)
        memory = BASE_MEMORY_BYTES + spill
        # Row-wise FP8 needs no calibration pass at host-memory speed, but its GEMMs are
        # plugins (builder.py set_fp8_rowwise_quant_plugins): with weight streaming, and on
        # SM 100-119 where builder.py refuses per-channel scaling, calibrate with the spill.
        if spill and precision == Precision.FP8 and not spec.engine.weight_streaming \
                and support.CONVERTERS.get(model.architecture) == "llama" \
                and support.arch_number(gpu.arch) not in range(100, 120):
            recipe, memory = FP8_ROWWISE, BASE_MEMORY_BYTES
    if meta_fp8 and precision == Precision.FP8:
        # Already FP8: the Llama converter reads it shard by shard, with no calibration
        # (support.ROWWISE_FP8_SOURCE); anything else is refused by support.refusals.
        recipe, memory = FP8_ROWWISE, BASE_MEMORY_BYTES
    if memory > node:
        hint = ("use precision: fp8 on a Llama-family model (converted shard by shard)"
                if recipe is None else "")
        reasons.append(
            f"the engine build needs {_gib(memory)} of host memory ({_gib(source_bytes)} of "
            f"16-bit weights, {_gib(gpu_room)} of it on the build node's {build_gpus} GPUs) but "
            f"gpu.nodeMemoryGiB is {spec.gpu.node_memory_gi_b:g}; raise it if the nodes have "
            f"more{', or ' + hint if hint else ''}")
    calibrates = support.calibrates(precision.value, spec.kv_cache_dtype, recipe or "")
    scratch = download + checkpoint + (CALIBRATION_DATA_BYTES if calibrates else 0)
    scratch += int(scratch * SCRATCH_MARGIN[0]) + SCRATCH_MARGIN[1]
    return BuildPlan(recipe=recipe, memory_bytes=memory, scratch_bytes=scratch,
                     stage_on_cache=scratch > STAGE_ON_CACHE_BYTES, reasons=tuple(reasons))
