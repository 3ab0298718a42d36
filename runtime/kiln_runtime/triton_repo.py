"""``kiln-runtime triton-repo``: the Triton model repository for one engine.

Copies the ``inflight_batcher_llm`` templates that ship in the image (``/app/all_models/``)
and fills every ``${placeholder}`` (the lists are the templates' own, TensorRT-LLM 1.2.1)
from the engine's ``config.json`` and the service's settings. Parameters Kiln has no value
for are filled with the empty string, which the backend reads as "not set, use the default"
(numeric and boolean parsing of "" fails and falls back, with a log line). Nothing may
remain unfilled: Triton cannot parse a ``config.pbtxt`` with a structural placeholder left.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from .errors import BadSpec, StepFailed

__all__ = ["RepoSettings", "write_model_repo", "MODELS", "TRITON_MODELS", "fill_values"]

# How often the backend turns the executor's iteration stats into its gauges: how fresh the KV
# metrics the autoscaler and the endpoint picker read are.
STATS_PERIOD_MS = 100

MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")
# The models a served model name (the BLS model renamed) would overwrite in the repository.
TRITON_MODELS = MODELS[:-1]


@dataclass(frozen=True)
class RepoSettings:
    engine_dir: Path          # the directory with config.json and rank*.engine
    tokenizer_dir: Path
    kv_cache_free_gpu_mem_fraction: float = 0.9
    decoupled: bool = True    # streaming responses; required by the OpenAI-style frontends
    instances: int = 4        # pre/post-processing and BLS instances (tokenization is CPU-bound)
    num_nodes: int = 1
    batch_scheduler_policy: str = "guaranteed_no_evict"
    max_queue_delay_microseconds: int = 0
    gpu_weights_percent: float = 1.0  # < 1 only for engines built with --weight_streaming
    # The OpenAI frontend serves every model under its Triton name: the BLS model (text in,
    # text out, streaming) goes under this name so that it is the API's model.
    served_model_name: str | None = None


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _engine_config(engine_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((engine_dir / "config.json").read_text())  # type: ignore[no-any-return]
    except OSError:
        raise BadSpec(f"--engine-dir: no config.json in {engine_dir}") from None
    except json.JSONDecodeError:
        raise BadSpec(f"--engine-dir: {engine_dir}/config.json is not valid JSON") from None


def fill_values(settings: RepoSettings) -> dict[str, dict[str, str]]:
    """Every placeholder of every model, with its value."""
    config = _engine_config(settings.engine_dir)
    build = config.get("build_config") or {}
    plugin = build.get("plugin_config") or {}
    max_batch = str(int(build.get("max_batch_size") or 1))
    paged_context = plugin.get("use_paged_context_fmha", True) not in (False, "disable")
    queue = {"max_queue_delay_microseconds": str(settings.max_queue_delay_microseconds),
             "max_queue_size": "0"}
    common = {"triton_max_batch_size": max_batch, "logits_datatype": "TYPE_FP32"}
    tokenizer = str(settings.tokenizer_dir)
    engine = str(settings.engine_dir)
    decoupled = _bool(settings.decoupled)
    instances = str(settings.instances)
    unset = ""
    return {
        "preprocessing": {**common, **queue, "tokenizer_dir": tokenizer, "add_special_tokens": "true",
                          "multimodal_model_path": unset, "engine_dir": engine,
                          "max_num_images": unset, "preprocessing_instance_count": instances},
        "postprocessing": {**common, "tokenizer_dir": tokenizer, "skip_special_tokens": "true",
                           "postprocessing_instance_count": instances},
        "ensemble": dict(common),
        "tensorrt_llm_bls": {**common, "decoupled_mode": decoupled,
                             "prompt_embedding_table_data_type": "TYPE_FP16",
                             "accumulate_tokens": "false", "tensorrt_llm_model_name": "tensorrt_llm",
                             "tensorrt_llm_draft_model_name": unset, "multimodal_encoders_name": unset,
                             "bls_instance_count": instances},
        "tensorrt_llm": {
            **common, **queue,
            "triton_backend": "tensorrtllm",
            "decoupled_mode": decoupled,
            "encoder_input_features_data_type": "TYPE_FP16",
            "prompt_embedding_table_data_type": "TYPE_FP16",
            "max_beam_width": str(int(build.get("max_beam_width") or 1)),
            "batching_strategy": "inflight_fused_batching",
            "engine_dir": engine,
            "encoder_engine_dir": unset,
            "max_tokens_in_paged_kv_cache": unset,  # the memory fraction decides
            "max_attention_window_size": unset,
            "sink_token_length": unset,
            "batch_scheduler_policy": settings.batch_scheduler_policy,
            "kv_cache_free_gpu_mem_fraction": f"{settings.kv_cache_free_gpu_mem_fraction:g}",
            "cross_kv_cache_fraction": unset,
            "kv_cache_host_memory_bytes": unset,
            "kv_cache_onboard_blocks": unset,
            "enable_trt_overlap": "false",
            "exclude_input_in_output": "true",
            "cancellation_check_period_ms": "100",
            "stats_check_period_ms": str(STATS_PERIOD_MS),
            "iter_stats_max_iterations": "1000",
            "request_stats_max_iterations": "0",
            "enable_kv_cache_reuse": _bool(paged_context),
            "normalize_log_probs": "true",
            "enable_chunked_context": _bool(paged_context),
            "gpu_device_ids": unset,
            "participant_ids": unset,
            "num_nodes": str(settings.num_nodes),
            "lora_cache_optimal_adapter_size": unset,
            "lora_cache_max_adapter_size": unset,
            "lora_cache_gpu_memory_fraction": unset,
            "lora_cache_host_memory_bytes": unset,
            "lora_prefetch_dir": unset,
            "decoding_mode": unset,
            "lookahead_window_size": unset,
            "lookahead_ngram_size": unset,
            "lookahead_verification_set_size": unset,
            "medusa_choices": unset,
            "eagle_choices": unset,
            "gpu_weights_percent": f"{settings.gpu_weights_percent:g}",
            "enable_context_fmha_fp32_acc": "false",
            "multi_block_mode": "true",
            "cuda_graph_mode": "false",
            "cuda_graph_cache_size": "0",
            "speculative_decoding_fast_logits": "false",
            "tokenizer_dir": tokenizer,
            "guided_decoding_backend": unset,
            "xgrammar_tokenizer_info_path": unset,
        },
    }


def write_model_repo(templates: Path, out: Path, settings: RepoSettings) -> list[Path]:
    """Write the repository into ``out``; returns the config.pbtxt paths written."""
    values = fill_values(settings)
    missing = [m for m in MODELS if not (templates / m / "config.pbtxt").is_file()]
    if missing:
        raise BadSpec(f"--templates: {templates} lacks {', '.join(missing)} (expected the "
                      "inflight_batcher_llm model folders)")
    if settings.served_model_name in TRITON_MODELS:
        raise BadSpec(f"servedModelName: {settings.served_model_name!r} is the name of one of Triton's models "
                      "in the repository; choose another")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for model in MODELS:
        name = (settings.served_model_name
                if model == "tensorrt_llm_bls" and settings.served_model_name else model)
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(templates / model, target)
        config = target / "config.pbtxt"
        text = Template(config.read_text()).safe_substitute(values[model])
        if name != model:  # Triton requires the config's name to be the directory's
            text = re.sub(rf'^name:\s*"{model}"', f'name: "{name}"', text, count=1, flags=re.M)
        if "${" in text:
            left = sorted({part.split("}", 1)[0] for part in text.split("${")[1:]})
            raise StepFailed("triton-repo", f"{model}/config.pbtxt still has placeholders: "
                                            f"{', '.join(left)}")
        config.write_text(text)
        (target / "1").mkdir(exist_ok=True)
        written.append(config)
    return written
