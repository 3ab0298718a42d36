"""Planner benchmark: prediction accuracy against the reference figures Kiln holds, and speed.

    python benchmarks/planner.py            # prints JSON

Accuracy: for every catalog model, the planner's KV bytes per token (bf16, TP1) against the
catalog's reference value, and weight bytes against parameters x precision bytes + 16-bit
embeddings/lm_head. Speed: milliseconds per plan (target < 5 ms), and the ratio to parsing
the same LLMService spec (the baseline, measured in the same run).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from kiln.api import KVCacheDtype, Precision, parse_service_spec  # noqa: E402
from kiln.planner import ModelConfig, load_catalog, lookup_gpu, model_config, plan  # noqa: E402
from kiln.planner.memory import WEIGHT_BYTES, kv_bytes_per_token, weight_bytes_per_gpu  # noqa: E402

TARGET_MS = 5.0


def _per_call_ms(func, repeat: int = 200) -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            func()
        samples.append((time.perf_counter() - started) / repeat * 1000)
    return statistics.median(samples)


def accuracy() -> list[dict[str, object]]:
    rows = []
    seen: set[int] = set()
    for name, raw in sorted(load_catalog().items()):
        if id(raw) in seen or "param_count_computed" not in raw:
            continue
        seen.add(id(raw))
        model = ModelConfig.from_hf(raw)
        embed = raw["vocab_size"] * raw["hidden_size"]
        head = 0 if raw["tie_word_embeddings"] else embed
        reference_weights = (raw["param_count_computed"] - embed - head) * WEIGHT_BYTES[Precision.BF16] + 4 * embed
        rows.append({
            "model": name,
            "kvBytesPerTokenRatio": kv_bytes_per_token(model, KVCacheDtype.BF16, 1, 1)
            / raw["kv_bytes_per_token_16bit_tp1"],
            "weightBytesRatio": round(weight_bytes_per_gpu(model, Precision.BF16, 1, 1) / reference_weights, 4),
        })
    return rows


def speed() -> dict[str, float | bool]:
    raw_spec = {"model": {"source": "hf://meta-llama/Llama-3.1-70B-Instruct"}, "precision": "bf16", "gpus": 1}
    spec = parse_service_spec(raw_spec)
    gpu = lookup_gpu(spec.gpu.type, None)
    model, why = model_config(spec.model.source)  # as the operator resolves it
    assert model is not None, why
    fits_spec = parse_service_spec({**raw_spec, "gpus": 4})
    baseline = _per_call_ms(lambda: parse_service_spec(raw_spec))
    fitting = _per_call_ms(lambda: plan(model, fits_spec, gpu))
    # The slow path: a plan that does not fit searches GPU counts, precisions and lengths.
    refused = _per_call_ms(lambda: plan(model, spec, gpu), repeat=20)
    return {"baselineParseMs": round(baseline, 4), "planMs": round(fitting, 4),
            "planNotFittingMs": round(refused, 4), "planToBaselineRatio": round(fitting / baseline, 2),
            "targetMs": TARGET_MS, "meetsTarget": fitting < TARGET_MS}


def main() -> int:
    rows = accuracy()
    print(json.dumps({
        "accuracy": {"models": len(rows),
                     "kvExact": all(r["kvBytesPerTokenRatio"] == 1 for r in rows),
                     "weightRatioMin": min(r["weightBytesRatio"] for r in rows),
                     "weightRatioMax": max(r["weightBytesRatio"] for r in rows),
                     "rows": rows},
        "speed": speed(),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
