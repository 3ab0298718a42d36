"""What TensorRT-LLM 1.2.1 can build: architecture x precision x KV dtype x GPU
architecture x weight streaming. One table, read by the planner (so ``kiln plan`` refuses
before a Job exists) and by ``kiln-runtime build`` (so a hand-written spec is refused before
any download). Pure and stdlib-only: the operator imports it, the runtime image runs it.

Sources (NVIDIA/TensorRT-LLM, the 1.2-era files the code index holds):

- ``tensorrt_llm/models/__init__.py`` ``MODEL_MAP``: the architectures trtllm-build has a
  model class for (no ``Qwen3MoeForCausalLM``, no ``Mistral3ForConditionalGeneration``).
- ``examples/models/core/llama/convert_checkpoint.py`` @ fd96a08b (Llama, Mistral, Mixtral)
  has ``--int8_kv_cache`` and ``--fp8_kv_cache``; ``examples/models/core/qwen/
  convert_checkpoint.py`` @ 0df9aaf3 (Qwen2, Qwen3) has ``--int8_kv_cache`` only.
- ``tensorrt_llm/quantization/quantize_by_modelopt.py`` ``MODEL_NAME_PATTERN_MAP``: the
  families ``quantize.py`` calibrates (Llama, Mistral, Mixtral, QWen, Gemma, Phi3, ChatGLM).
- ``tensorrt_llm/builder.py`` ``build()``: on SM 100-119 it raises for INT8/INT4 weight-only
  (AWQ included), INT8 KV cache, SmoothQuant and per-channel/per-token scaling; weight-only
  and SmoothQuant GEMMs are plugins (``weight_only_*quant_matmul_plugin``,
  ``set_smooth_quant_plugins``).
- ``docs/source/advanced/weight-streaming.md`` @ 26eaa42f: "Weight Streaming only supports
  non-plugin weights" (build with ``--weight_streaming --gemm_plugin disable``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CONVERTERS", "QUANTIZED", "CONVERTER_KV", "BLACKWELL_REFUSED", "STREAMABLE",
           "ROWWISE_FP8_SOURCE", "QUANT_CONFIG_FILES", "checkpoint_tool", "calibrates", "refusals", "arch_number",
           "prequantized", "already_quantized"]

# HF architecture -> the TensorRT-LLM example folder whose convert_checkpoint.py handles it.
CONVERTERS = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",  # Mistral and Mixtral use the Llama converter
    "MixtralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen",
    "Qwen3ForCausalLM": "qwen",
}
# Architectures quantize.py calibrates and trtllm-build has a model class for.
QUANTIZED = frozenset({*CONVERTERS, "GemmaForCausalLM", "Phi3ForCausalLM", "ChatGLMModel",
                       "ChatGLMForConditionalGeneration"})
# KV dtypes each converter can quantize the cache to.
CONVERTER_KV = {"llama": frozenset({"fp8", "int8"}), "qwen": frozenset({"int8"})}
# Precisions built by convert_checkpoint.py; the rest go through quantize.py (ModelOpt).
_CONVERTED = frozenset({"fp16", "bf16", "int8-wo", "int4-wo"})
# Refused by builder.py on SM 100-119 (B200, GB200); SM 120 (RTX 50xx) is outside the check.
BLACKWELL_REFUSED = frozenset({"int8-sq", "int8-wo", "int4-wo", "int4-awq", "w4a8-awq"})
_BLACKWELL = range(100, 120)
# Precisions whose GEMMs run without plugins, so their weights can stream.
STREAMABLE = frozenset({"fp16", "bf16", "fp8", "nvfp4"})


# The one already-quantized checkpoint Kiln builds: Meta's FP8 Llama releases
# (``quantization_config.quant_method`` fbgemm_fp8). The Llama converter reads that config as
# FP8 per channel and per token by itself (examples/models/core/llama/convert_checkpoint.py,
# ``update_quant_config_from_hf``; its README, Llama 3.1 405B: "The source HF model is in FP8
# format, so --use_fp8_rowwise is enabled automatically"), which is Kiln's fp8-rowwise recipe.
# It reads awq and gptq configs too, as W4A16_GPTQ, for which Kiln has no precision; and
# quantize.py (ModelOpt) calibrates a 16-bit model. TensorRT-LLM's own test harness sends the
# other pre-quantized checkpoints (ModelOpt's among them) to the converters with flags of their
# own (tests/integration/defs/accuracy/accuracy_core.py, ``CliFlowAccuracyTestHarness.convert``),
# a path Kiln does not run: they are refused, naming what to use instead.
ROWWISE_FP8_SOURCE = "fbgemm_fp8"
# Files that say a checkpoint is already quantized besides config.json's quantization_config
# (ModelOpt's export, and older AutoGPTQ/AWQ ones): the list TensorRT-LLM's test harness reads.
QUANT_CONFIG_FILES = ("hf_quant_config.json", "quant_config.json", "quantize_config.json")
_METHOD_CHARS = 40


def prequantized(config: dict[str, Any]) -> str | None:
    """The quantization a Hugging Face ``config.json`` says its weights already have
    (``quantization_config.quant_method``, at most 40 characters; "unnamed" if it names none),
    or None for unquantized weights."""
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if not isinstance(quantization, dict):
        return None
    method = quantization.get("quant_method")
    if not isinstance(method, str) or not method.strip():
        return "unnamed"
    return "".join(c for c in method.strip() if c.isprintable())[:_METHOD_CHARS] or "unnamed"


def already_quantized(evidence: str, instead: str | None = None) -> str:
    """The refusal of a source whose weights are already quantized, saying what says so."""
    return (f"model.source: its weights are already quantized ({evidence}); Kiln builds from the "
            "16-bit checkpoint and quantizes it to spec.precision itself"
            + (instead or ": point model.source at the 16-bit original"))


def arch_number(gpu_arch: str) -> int | None:
    """``sm90`` -> 90; None for a GPU Kiln has no architecture for."""
    digits = gpu_arch.removeprefix("sm")
    return int(digits) if gpu_arch.startswith("sm") and digits.isdigit() else None


def checkpoint_tool(precision: str) -> str:
    """``convert`` (the architecture's convert_checkpoint.py) or ``quantize`` (quantize.py)."""
    return "convert" if precision in _CONVERTED else "quantize"


def calibrates(precision: str, kv_dtype: str, recipe: str = "") -> str:
    """Which tool runs a calibration pass for this build, or "" when none does.

    ``quantize``: quantize.py (ModelOpt) calibrates every precision it builds, on its
    ``--calib_dataset`` (default ``cnn_dailymail``, from the Hub, or a local directory:
    ``get_calib_dataloader`` in ``tensorrt_llm/quantization/quantize_by_modelopt.py``).
    ``convert``: convert_checkpoint.py calibrates an INT8 KV cache (``--int8_kv_cache`` goes
    through ``LLaMAForCausalLM.quantize``, the Qwen converter's likewise) on its
    ``--calib_dataset``, default ``ccdv/cnn_dailymail``, read by ``load_calib_dataset`` in
    ``tensorrt_llm/models/convert_utils.py``, which gives ``load_dataset`` no split or column
    for a directory, so only a Hub dataset it knows works there. The row-wise FP8 recipe and
    an FP8 KV cache calibrate nothing.
    """
    if recipe:
        return ""
    if checkpoint_tool(precision) == "quantize":
        return "quantize"
    return "convert" if kv_dtype == "int8" else ""


def refusals(architecture: str | None, precision: str, kv_dtype: str, sm: int | None,
             weight_streaming: bool, quantized: str | None = None) -> list[str]:
    """Why TensorRT-LLM 1.2.1 cannot build this, each naming a choice that would work;
    empty when it can. ``architecture`` None skips the per-architecture rules; ``quantized``
    is what :func:`prequantized` read of the model's config."""
    out: list[str] = []
    if quantized is not None and architecture is not None:
        rowwise = quantized == ROWWISE_FP8_SOURCE and CONVERTERS.get(architecture) == "llama"
        if not rowwise or precision != "fp8":
            out.append(already_quantized(f"config.json quantization_config.quant_method: {quantized}",
                                         ", and builds Meta's FP8 Llama only at precision: fp8"
                                         if rowwise else None))
        elif sm in _BLACKWELL:
            out.append(f"model.source: Meta's FP8 checkpoint is built row-wise (per-channel "
                       f"scaling), which TensorRT-LLM 1.2.1 refuses on sm{sm} (tensorrt_llm/"
                       "builder.py); use the 16-bit original")
    if sm in _BLACKWELL:
        if precision in BLACKWELL_REFUSED:
            out.append(f"precision: {precision} cannot be built for sm{sm}: TensorRT-LLM 1.2.1 "
                       "refuses INT8/INT4 weight-only, AWQ and SmoothQuant on SM 100-119 "
                       "(tensorrt_llm/builder.py); use precision: fp8 or nvfp4")
        if kv_dtype == "int8":
            out.append(f"kvCacheDtype: int8 cannot be built for sm{sm}: TensorRT-LLM 1.2.1 "
                       "refuses an INT8 KV cache on SM 100-119 (tensorrt_llm/builder.py); use "
                       "kvCacheDtype: fp8")
    if weight_streaming and precision not in STREAMABLE:
        out.append(f"engine.weightStreaming: needs non-plugin weights, and {precision} GEMMs are "
                   "TensorRT-LLM plugins (weight-only, AWQ and SmoothQuant; tensorrt_llm/"
                   "builder.py, docs/source/advanced/weight-streaming.md); use precision: "
                   "bf16, fp8 or nvfp4 with weight streaming")
    if architecture is None:
        return out
    if architecture not in QUANTIZED:
        out.append(f"model: TensorRT-LLM 1.2.1 has no TensorRT engine path for {architecture} "
                   "(tensorrt_llm/models MODEL_MAP, quantize.py); serve a supported "
                   f"architecture ({', '.join(sorted(QUANTIZED))})")
    elif checkpoint_tool(precision) == "convert":
        folder = CONVERTERS.get(architecture)
        if folder is None:
            out.append(f"precision: {precision} is built by convert_checkpoint.py, which Kiln "
                       f"runs for {', '.join(sorted(CONVERTERS))}; {architecture} is built only "
                       "by quantize.py: use precision: fp8 (or int8-sq, int4-awq, nvfp4)")
        elif kv_dtype in ("fp8", "int8") and kv_dtype not in CONVERTER_KV[folder]:
            has = " or ".join(sorted(CONVERTER_KV[folder]))
            out.append(f"kvCacheDtype: {kv_dtype} with precision {precision} needs "
                       f"convert_checkpoint.py --{kv_dtype}_kv_cache, which the {folder} "
                       f"converter lacks (examples/models/core/{folder}/convert_checkpoint.py "
                       f"has {has}); use kvCacheDtype: {has}, or precision: fp8 (quantize.py "
                       f"--kv_cache_dtype {kv_dtype})")
    return out
