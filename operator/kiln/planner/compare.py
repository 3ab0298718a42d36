"""``kiln plan --compare``: every precision side by side, the choice before the build.

Decode is memory-bandwidth bound: each step reads every resident weight once, so the
relative decode speed here is bf16's weight bytes over the precision's (same layout, KV
reads left out). A first-order estimate for choosing, not a benchmark.
"""

from __future__ import annotations

from typing import Any

from kiln_runtime import support

from ..api import LLMServiceSpec, Precision
from ..errors import PlanRefused
from .gpus import GPU
from .memory import GIB, weight_bytes_per_gpu
from .model import ModelConfig
from .plan import SUGGESTION_GPU_COUNTS, plan, resolve_parallelism

__all__ = ["compare", "ACCURACY_NOTES"]

ACCURACY_NOTES = {
    Precision.FP16: "reference quality",
    Precision.BF16: "reference quality",
    Precision.FP8: "near-lossless; needs calibration data (ModelOpt, 512 samples)",
    Precision.INT8_SQ: "small loss; needs calibration data (SmoothQuant)",
    Precision.INT8_WO: "near-lossless; weights only, no calibration, 16-bit activations",
    Precision.W4A8_AWQ: "moderate loss; 4-bit weights, FP8 activations; needs calibration (AWQ)",
    Precision.INT4_AWQ: "trades the most quality of the calibrated choices (AWQ)",
    Precision.INT4_WO: "largest loss: 4-bit round-to-nearest, no calibration",
    Precision.NVFP4: "small loss with FP4 microscaling; Blackwell only; needs calibration",
}


def _fewest_gpus(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU) -> int | None:
    auto = spec.parallelism.model_copy(update={"tensor": "auto", "pipeline": "auto"})
    for count in SUGGESTION_GPU_COUNTS:
        variant = spec.model_copy(update={"gpus": count, "parallelism": auto})
        try:
            if plan(model, variant, gpu).fits:
                return count
        except PlanRefused:
            continue
    return None


def compare(model: ModelConfig, spec: LLMServiceSpec, gpu: GPU) -> list[dict[str, Any]]:
    """One row per precision the architecture supports, at the spec's GPU count and layout."""
    tp, pp = resolve_parallelism(spec, model)
    reference = weight_bytes_per_gpu(model, Precision.BF16, tp, pp)
    rows = []
    for precision in Precision:
        # Built by convert_checkpoint.py, which Kiln runs only for some architectures.
        if support.checkpoint_tool(precision.value) == "convert" \
                and model.architecture not in support.CONVERTERS:
            continue
        variant = spec.model_copy(update={"precision": precision, "kv_cache_dtype": "auto"})
        result = plan(model, variant, gpu)
        weights = result.weight_bytes_per_gpu or 0
        # A KV pool that cannot be allocated has no size worth showing.
        kv_tokens = result.kv_cache_tokens if result.fits else None
        sequences = result.max_concurrent_sequences if result.fits else None
        rows.append({
            "precision": precision.value,
            "fits": result.fits,
            "weightGiBPerGpu": round(weights / GIB, 2),
            "kvCacheTokens": kv_tokens,
            "maxConcurrentSequences": sequences,
            # The KV cache holds more maxSeqLen sequences than the engine's batch slots.
            "sequencesCappedByMaxBatchSize": bool(
                kv_tokens and kv_tokens // spec.engine.max_seq_len > spec.engine.max_batch_size),
            "fewestGpus": _fewest_gpus(model, variant, gpu),
            "relativeDecodeSpeed": round(reference / weights, 2) if weights else None,
            "note": ACCURACY_NOTES[precision],
        })
    return rows
