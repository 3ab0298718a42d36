"""Read a Triton ``/metrics`` page (port 8002) into the figures Kiln acts on.

What each series Kiln reads means, from the TensorRT-LLM backend's source (NVIDIA/TensorRT-LLM
``triton_backend/inflight_batcher_llm/src/model_instance_state.cc`` @ 0c8de69a,
``ModelInstanceState::WaitForStats``, which turns the executor's latest ``IterationStats``
into the gauges every ``stats_check_period_ms``; field meanings from
``cpp/include/tensorrt_llm/executor/types.h``):

- ``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"|"free"|"used"|"tokens_per"}``:
  ``KvCacheStats`` ``maxNumBlocks``, ``freeNumBlocks``, ``usedNumBlocks``, ``tokensPerBlock``;
  ``"fraction"`` is ``used / max``, computed in ``WaitForStats`` ("Fraction used KV cache
  blocks"). ``max × tokens_per`` is the replica's KV capacity in tokens (only rank 0 exports).
  ``used`` is the blocks allocated now (``BlockManager::getNumAllocatedBlocks``, max less
  free): a request's prompt blocks from admission and one more each time its output crosses
  a block (``cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp``, ``addSequence``,
  ``updateToken``). The blocks ``guaranteed_no_evict`` sets aside to finish the running
  requests (``getRemainingBlocksToCompletion``, ``capacityScheduler.cpp``) are counted when
  it schedules and exported by no series: a replica whose reservations admit no more reads
  less than full, and its refusals show as ``waiting``.
- ``nv_trt_llm_request_metrics{request_type="active"}``: ``IterationStats.numActiveRequests``,
  the requests the executor has taken from its queue into the batch, running or not.
  ``"max"``: ``maxNumActiveRequests``, set to ``mModel->getMaxNumSequences()`` (the engine's
  batch slots; ``cpp/tensorrt_llm/executor/executorImpl.cpp``). ``"scheduled"``:
  ``InflightBatchingStats.numScheduledRequests``, those the last iteration ran;
  ``"context"``: ``numContextRequests``, those of them running (a chunk of) their prompt.
- ``request_type="waiting"`` is **not the queue**: ``WaitForStats`` sets it to
  ``numActiveRequests - numScheduledRequests``, the requests already in the batch that the
  last iteration left out (no KV blocks for their whole sequence under
  ``guaranteed_no_evict``, or past ``maxNumTokens``). Requests still in the executor's queue
  (``IterationStats.numQueuedRequests``) are exported by no series: ``fetchNewRequests`` takes
  at most ``maxNumActiveRequests - numActiveRequests`` of them per iteration, so once
  ``active`` reaches ``max`` every further request waits unseen. Kiln's backlog signal is
  therefore :attr:`KVSample.backlog`: ``waiting``, and while the batch slots are all taken,
  those slots' worth again (a full batch is a queue of unknown length, at least one batch
  deep by the time the scheduler reaches it).
- ``nv_llm_input_token_len`` and ``nv_llm_output_token_len`` (histograms,
  ``response_metric_type="total_input_tokens"`` / ``"total_output_tokens"``; families created
  in ``custom_metrics_reporter/custom_metrics_reporter.cc``): each observed once per request,
  when its last response is sent (``WaitForResponse`` calls
  ``reportCustomMetrics(inputTokensSize, outputTokensSize, ...)`` once the request has no
  response pending). So ``nv_llm_input_token_len_count`` counts *finished* requests, and the
  two ``_sum`` series their prompt and generated tokens; their rates trail the arrivals by a
  request's lifetime. These are what the law's demand from arrivals reads
  (:func:`kiln.autoscale.law.arrival_demand`).
- ``nv_inference_first_response_histogram_ms`` (Triton core, not the backend): per model, the
  time from a request's arrival at the model to its first response, a histogram created only
  for decoupled models and only with ``--metrics-config histogram_latencies=true``
  (triton-inference-server/core ``src/metric_model_reporter.cc``,
  ``MetricModelReporter::InitializeHistograms``), which ``kiln-runtime serve`` passes. Its
  default buckets are 100, 500, 2000 and 5000 ms (server ``docs/user_guide/metrics.md``,
  *Histograms*; a model's ``config.pbtxt`` may set others under ``model_metrics``). A decoupled
  model composed in an ensemble has its own (server ``qa/L0_metrics/histogram_metrics_test.py``,
  ``test_ensemble_decoupled``: the composing model's count grows with each request to the
  ensemble), so ``tensorrt_llm``'s is read, as for the other series. The first
  response is the first token only for a streamed request: without streaming the backend
  sends one response when the request completes (``WaitForResponse``), so for those it is the
  whole request. The law's TTFT objective reads it (:attr:`KVSample.first_responses`).

Parsed with prometheus_client's text parser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["KVSample", "parse_triton_metrics", "MAX_PARSED_LINES", "MAX_PARSED_LINE_CHARS", "MAX_PARSED_CHARS",
           "KV_METRIC", "REQUEST_METRIC", "INPUT_TOKENS_METRIC",
           "OUTPUT_TOKENS_METRIC", "FIRST_RESPONSE_METRIC", "FIRST_RESPONSE_BUCKETS_MS", "first_responses",
           "ENGINE_MODEL", "SERVICE_LABEL", "service_matchers"]

KV_METRIC = "nv_trt_llm_kv_cache_block_metrics"
REQUEST_METRIC = "nv_trt_llm_request_metrics"
INPUT_TOKENS_METRIC = "nv_llm_input_token_len"
OUTPUT_TOKENS_METRIC = "nv_llm_output_token_len"
FIRST_RESPONSE_METRIC = "nv_inference_first_response_histogram_ms"
# The Triton model whose figures are the engine's: the TensorRT-LLM backend's own model.
ENGINE_MODEL = "tensorrt_llm"
# The label the chart's serving PodMonitor copies from a pod's app.kubernetes.io/instance.
SERVICE_LABEL = "llmservice"
# Triton's default buckets for it, in milliseconds (the +Inf bucket follows them).
FIRST_RESPONSE_BUCKETS_MS = (100.0, 500.0, 2000.0, 5000.0)
# At most this many buckets are read from a page: Triton's default has five.
_MAX_BUCKETS = 64
# A page is a pod's to write (a tenant's image, or any pod carrying a service's labels): only
# the lines of the families read here reach the exposition parser, and a page with more of
# them than this (one replica exports a few dozen) gives no sample.
MAX_PARSED_LINES = 2000
# ... and those lines are at most this long (Triton's are about a hundred characters), and this
# many characters in all: prometheus_client's parser walks a line in Python a character at a
# time and slices it again at each escaped quote and each label (prometheus_client 0.26.0,
# ``prometheus_client/parser.py``, ``parse_labels``: ``_is_character_escaped(value_term[:i],
# i)``; ``_next_term``: ``text = text[splitpos + 1:]``), so one 3 MiB line took it ~50 s on
# the event loop. A page past either gives no sample.
MAX_PARSED_LINE_CHARS = 1024
MAX_PARSED_CHARS = 256 * 1024
# A count Kiln reads (blocks, requests) is finite, not negative and below this; a figure
# outside gives no sample, as a page that is not Triton's.
_MAX_COUNT = 2.0**53
_FAMILIES = (KV_METRIC, REQUEST_METRIC, INPUT_TOKENS_METRIC, OUTPUT_TOKENS_METRIC, FIRST_RESPONSE_METRIC)


def first_responses(buckets: Mapping[str, float]) -> tuple[tuple[float, float], ...] | None:
    """``(upper bound in seconds, cumulative count)`` pairs, ascending and ending at +Inf, from a
    histogram's buckets by their ``le`` label as written (milliseconds, ``"+Inf"``); a bound
    that is not a number is skipped. None without a +Inf bucket or with more than
    ``_MAX_BUCKETS`` (a page is read, never trusted to be small)."""
    if len(buckets) > _MAX_BUCKETS:
        return None
    bounds: dict[float, float] = {}
    for le, count in buckets.items():
        try:
            bounds[float(le)] = count
        except ValueError:
            continue
    if math.inf not in bounds:
        return None
    return tuple((bound / 1000.0, count) for bound, count in sorted(bounds.items()))


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
    finished_total: float | None = None  # nv_llm_input_token_len_count: requests finished
    output_tokens_total: float | None = None  # nv_llm_output_token_len_sum: a counter
    # The model's first-response histogram (FIRST_RESPONSE_METRIC): (upper bound in seconds,
    # cumulative count) pairs ending at +Inf. None: not exported.
    first_responses: tuple[tuple[float, float], ...] | None = None

    @property
    def backlog(self) -> int:
        """Requests the replica holds but does not run: ``waiting`` (active - scheduled), plus
        ``max`` more while every batch slot is taken and the executor's own queue, which no
        series exports, may be growing."""
        full = self.max_requests and self.active_requests >= self.max_requests
        return self.waiting_requests + (self.max_requests if full else 0)

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
                     input_tokens: float | None = None, replica: str = "",
                     finished: float | None = None, output_tokens: float | None = None,
                     first_response_buckets: Mapping[str, float] | None = None) -> KVSample | None:
        """From the ``kv_cache_block_type`` and ``request_type`` figures of one replica (and
        the first-response histogram's buckets, ``le`` label to cumulative count); None
        without the block count and size."""
        if "max" not in kv or "tokens_per" not in kv:
            return None
        counts = (kv["max"], kv.get("used", 0), kv["tokens_per"], requests.get("waiting", 0),
                  requests.get("active", 0), requests.get("max", 0))
        totals = (input_tokens, finished, output_tokens)
        if not all(_count(value) for value in counts) or not all(_count(t) for t in totals if t is not None):
            return None
        buckets = first_responses(first_response_buckets) if first_response_buckets else None
        if buckets is not None and not all(_count(count) for _, count in buckets):
            buckets = None
        max_blocks, used, tokens_per, waiting, active, slots = map(int, counts)
        return cls(max_blocks=max_blocks, used_blocks=used, tokens_per_block=tokens_per,
                   waiting_requests=waiting, active_requests=active, max_requests=slots, replica=replica,
                   input_tokens_total=input_tokens, finished_total=finished,
                   output_tokens_total=output_tokens, first_responses=buckets)


def _count(value: float) -> bool:
    """Whether ``value`` can be a count or a counter: finite, not negative, not absurd."""
    return math.isfinite(value) and 0 <= value < _MAX_COUNT


def _read_lines(text: str) -> str | None:
    """The lines of ``text`` that belong to the families read here (their samples and their
    ``# TYPE`` and ``# HELP`` lines), or None when there are more than MAX_PARSED_LINES, one
    longer than MAX_PARSED_LINE_CHARS or more than MAX_PARSED_CHARS in all."""
    kept, size = [], 0
    for line in text.splitlines():
        name = line[7:] if line.startswith(("# TYPE ", "# HELP ")) else line
        if name.startswith(_FAMILIES):
            kept.append(line)
            size += len(line)
            if len(kept) > MAX_PARSED_LINES or len(line) > MAX_PARSED_LINE_CHARS or size > MAX_PARSED_CHARS:
                return None
    return "\n".join(kept) + "\n"


def service_matchers(namespace: str, instance: str, model: str = ENGINE_MODEL) -> str:
    """PromQL label matchers for a service's serving pods' series, by the service's label,
    not the pods' names (a multi-node service's pods are its LeaderWorkerSet's, named after
    the group; a name prefix also matches another service's)."""
    return f'namespace="{namespace}",{SERVICE_LABEL}="{instance}",model="{model}"'


def parse_triton_metrics(text: str, model: str = ENGINE_MODEL) -> KVSample | None:
    """The KV sample of ``model``, or None when the page has no KV block metrics for it (or
    more lines of the families read than MAX_PARSED_LINES, or figures that are not counts)."""
    read = _read_lines(text)
    if read is None:
        return None
    kv: dict[str, float] = {}
    requests: dict[str, float] = {}
    input_tokens: float | None = None
    finished: float | None = None
    output_tokens: float | None = None
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(read):
        if family.name not in (KV_METRIC, REQUEST_METRIC, INPUT_TOKENS_METRIC, OUTPUT_TOKENS_METRIC,
                               FIRST_RESPONSE_METRIC):
            continue
        for sample in family.samples:
            if sample.labels.get("model", model) != model:
                continue
            if family.name == FIRST_RESPONSE_METRIC:
                # The buckets (``_bucket``, by ``le``), no more than one past the bound.
                if sample.name == FIRST_RESPONSE_METRIC + "_bucket" and len(buckets) <= _MAX_BUCKETS:
                    buckets[sample.labels.get("le", "")] = sample.value
            elif family.name == INPUT_TOKENS_METRIC:
                if sample.name == INPUT_TOKENS_METRIC + "_sum":
                    input_tokens = sample.value
                elif sample.name == INPUT_TOKENS_METRIC + "_count":
                    finished = sample.value
            elif family.name == OUTPUT_TOKENS_METRIC:
                if sample.name == OUTPUT_TOKENS_METRIC + "_sum":
                    output_tokens = sample.value
            elif family.name == KV_METRIC:
                kv[sample.labels.get("kv_cache_block_type", "")] = sample.value
            else:
                requests[sample.labels.get("request_type", "")] = sample.value
    return KVSample.from_figures(kv, requests, input_tokens, finished=finished, output_tokens=output_tokens,
                                 first_response_buckets=buckets)
