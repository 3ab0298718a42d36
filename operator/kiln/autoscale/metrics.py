"""Read a Triton ``/metrics`` page (port 8002) into the figures Kiln acts on.

The TensorRT-LLM backend exports, per model::

    nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"|"free"|"used"|"tokens_per"|"fraction"}
    nv_trt_llm_request_metrics{request_type="active"|"max"|"scheduled"|"context"|"waiting"}
    nv_llm_input_token_len_sum{response_metric_type="total_input_tokens"}   (histogram sum)

Parsed with prometheus_client's text parser. ``max × tokens_per`` is the replica's KV
capacity in tokens (the block count is already the minimum over TP ranks, and only rank 0
exports metrics); ``used / max`` is the pressure the autoscaler scales on. The input-token
histogram's sum is a counter of the prompt tokens the replica has taken in: its rate over
the replica's prefill speed is the prefill load.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["KVSample", "parse_triton_metrics", "KV_METRIC", "REQUEST_METRIC", "INPUT_TOKENS_METRIC"]

KV_METRIC = "nv_trt_llm_kv_cache_block_metrics"
REQUEST_METRIC = "nv_trt_llm_request_metrics"
INPUT_TOKENS_METRIC = "nv_llm_input_token_len"


@dataclass(frozen=True)
class KVSample:
    max_blocks: int
    used_blocks: int
    tokens_per_block: int
    waiting_requests: int = 0
    active_requests: int = 0
    max_requests: int = 0  # the engine's batch slots (request_type="max")
    replica: str = ""  # the pod it came from, when known
    input_tokens_total: float | None = None  # nv_llm_input_token_len_sum: a counter

    @property
    def batch_fraction(self) -> float | None:
        return self.active_requests / self.max_requests if self.max_requests else None

    @property
    def capacity_tokens(self) -> int:
        return self.max_blocks * self.tokens_per_block

    @property
    def utilization(self) -> float:
        return self.used_blocks / self.max_blocks if self.max_blocks else 0.0

    @classmethod
    def from_figures(cls, kv: dict[str, float], requests: dict[str, float],
                     input_tokens: float | None = None, replica: str = "") -> KVSample | None:
        """From the ``kv_cache_block_type`` and ``request_type`` figures of one replica; None
        without the block count and size."""
        if "max" not in kv or "tokens_per" not in kv:
            return None
        return cls(max_blocks=int(kv["max"]), used_blocks=int(kv.get("used", 0)),
                   tokens_per_block=int(kv["tokens_per"]),
                   waiting_requests=int(requests.get("waiting", 0)),
                   active_requests=int(requests.get("active", 0)),
                   max_requests=int(requests.get("max", 0)), replica=replica,
                   input_tokens_total=input_tokens)


def parse_triton_metrics(text: str, model: str = "tensorrt_llm") -> KVSample | None:
    """The KV sample of ``model``, or None when the page has no KV block metrics for it."""
    kv: dict[str, float] = {}
    requests: dict[str, float] = {}
    input_tokens: float | None = None
    for family in text_string_to_metric_families(text):
        if family.name not in (KV_METRIC, REQUEST_METRIC, INPUT_TOKENS_METRIC):
            continue
        for sample in family.samples:
            if sample.labels.get("model", model) != model:
                continue
            if family.name == INPUT_TOKENS_METRIC:
                if sample.name == INPUT_TOKENS_METRIC + "_sum":
                    input_tokens = sample.value
            elif family.name == KV_METRIC:
                kv[sample.labels.get("kv_cache_block_type", "")] = sample.value
            else:
                requests[sample.labels.get("request_type", "")] = sample.value
    return KVSample.from_figures(kv, requests, input_tokens)
