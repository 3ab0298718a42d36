"""The build as a list of command lines: what ``--dry-run`` prints and what ``build`` runs.

Every flag and value here exists in the TensorRT-LLM 1.2.1 CLIs (``quantize.py``,
``convert_checkpoint.py``, ``trtllm-build``); ``tests/unit/test_runtime_build.py`` checks
each one against the recorded argument lists. Boolean plugin switches take the words
``enable``/``disable``. ``trtllm-build`` has no TP/PP flags: the checkpoint's mapping,
written by the quantizer or converter from ``--tp_size/--pp_size``, decides them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import support, toolchain
from .errors import BadSpec, StepFailed
from .spec import BuildSpec

__all__ = ["Step", "Layout", "plan_steps", "check_model", "check_weights", "predict_engine_config",
           "QFORMAT", "WEIGHT_ONLY", "QUANT_ALGO", "KV_QUANT_ALGO"]

# Kiln precision -> quantize.py --qformat (ModelOpt flow).
QFORMAT = {"fp8": "fp8", "int8-sq": "int8_sq", "int4-awq": "int4_awq", "w4a8-awq": "w4a8_awq",
           "nvfp4": "nvfp4"}
# Kiln precision -> convert_checkpoint.py --weight_only_precision.
WEIGHT_ONLY = {"int8-wo": "int8", "int4-wo": "int4"}
DTYPE = {"fp16": "float16", "bf16": "bfloat16"}
# Kiln precision -> the QuantAlgo the checkpoint (and so the engine) records
# (tensorrt_llm/quantization/mode.py; convert_checkpoint.py args_to_quant_config; ModelOpt's
# qformat names).
QUANT_ALGO = {"fp8": "FP8", "int8-sq": "W8A8_SQ_PER_CHANNEL", "int4-awq": "W4A16_AWQ",
              "w4a8-awq": "W4A8_AWQ", "int8-wo": "W8A16", "int4-wo": "W4A16", "nvfp4": "NVFP4"}
KV_QUANT_ALGO = {"fp8": "FP8", "int8": "INT8"}


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    description: str = ""
    # The child's working directory. Never the image's: /opt/tritonserver is root-owned, and
    # trtllm-build writes files relative to it (kiln_runtime.image).
    cwd: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "argv": self.argv, **({"cwd": self.cwd} if self.cwd else {})}


@dataclass(frozen=True)
class Layout:
    """Where a build puts things. Staging sits on the cache volume so publishing is a rename."""

    spec: BuildSpec
    model_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        source = self.spec.source
        object.__setattr__(self, "model_dir",
                           Path(source) if source.startswith("/") else self.spec.work_dir / "model")

    @property
    def checkpoint_dir(self) -> Path:
        return self.spec.work_dir / "checkpoint"

    @property
    def calibration_dir(self) -> Path:
        # get_calib_dataloader picks its loader by substrings of this path ("cnn_dailymail",
        # "scienceqa", "pileval"): a work directory is /work or <cache>/.work/<hex key>.
        return self.spec.work_dir / "calibration"

    @property
    def staging(self) -> Path:
        return self.spec.cache_dir / ".staging" / self.spec.engine_key

    @property
    def final(self) -> Path:
        return self.spec.cache_dir / self.spec.engine_key

    @property
    def lock(self) -> Path:
        return self.spec.cache_dir / ".locks" / f"{self.spec.engine_key}.lock"


def check_model(spec: BuildSpec, config: dict[str, Any]) -> str:
    """Refuse what the toolchain cannot build, before any weights are downloaded.
    Returns the model's architecture."""
    if not isinstance(config, dict):
        raise BadSpec("model.source: config.json is not a JSON object")
    named = config.get("architectures")
    if named is not None and (not isinstance(named, list) or not named or not isinstance(named[0], str)):
        raise BadSpec("model.source: config.json's \"architectures\" must be a non-empty list of names, as "
                      "transformers writes it")
    architecture = str((named or [config.get("architecture") or "?"])[0])[:100]
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads = _count(text, "num_attention_heads")
    kv_heads = _count(text, "num_key_value_heads") or heads
    if heads and kv_heads and heads % kv_heads:  # each KV head serves a whole group of query heads
        raise BadSpec(f"model.source: config.json's num_attention_heads ({heads}) is not a multiple of "
                      f"num_key_value_heads ({kv_heads})")
    layers = _count(text, "num_hidden_layers")
    quantized = support.prequantized(config)
    refused = support.refusals(architecture, spec.precision, spec.kv_cache_dtype,
                               spec.arch_number, spec.limits.weight_streaming, quantized) \
        if spec.built_here else []
    if refused:
        raise BadSpec(refused[0])
    if spec.built_here and quantized == support.ROWWISE_FP8_SOURCE and not spec.checkpoint_recipe:
        raise BadSpec("checkpointRecipe: the model's weights are Meta's FP8 (quantization_config."
                      "quant_method fbgemm_fp8), which is built with checkpointRecipe: fp8-rowwise "
                      "(the Llama converter), not calibrated again by quantize.py")
    if spec.checkpoint_recipe and (support.CONVERTERS.get(architecture) != "llama"
                                   or 100 <= spec.arch_number < 120):
        raise BadSpec(f"checkpointRecipe: {spec.checkpoint_recipe} needs the Llama converter "
                      f"and a GPU before SM 100 (builder.py refuses per-channel scaling there); "
                      f"{architecture} on {spec.gpu_arch} is neither")
    tp = spec.tensor_parallel
    if heads and heads % tp:
        raise BadSpec(f"tensorParallel: {tp} does not divide the {heads} attention heads of "
                      f"{architecture}")
    if kv_heads and kv_heads % tp and tp % kv_heads:
        raise BadSpec(f"tensorParallel: {tp} and the {kv_heads} KV heads must divide one another")
    if layers and spec.pipeline_parallel > layers:
        raise BadSpec(f"pipelineParallel: {spec.pipeline_parallel} exceeds the {layers} layers")
    return architecture


def _count(config: Any, name: str) -> int:
    """``config[name]``, a head or layer count; 0 when it is not given. A float only when whole:
    int(0.5) is 0, read as "not given", and a negative count passes the divisibility checks."""
    value = config.get(name)
    if value is None:
        return 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf \
            or value != int(value):
        got = repr(value)[:40] if isinstance(value, (int, float)) else f"a {type(value).__name__}"
        raise BadSpec(f"model.source: config.json: {name} must be a whole number of at least 1 (got {got})")
    return int(value)


def check_weights(model_dir: Path) -> None:
    """Before the checkpoint step (after the download): a checkpoint whose quantization is written
    only beside config.json (:data:`kiln_runtime.support.QUANT_CONFIG_FILES`) is refused as
    :func:`check_model` refuses one whose config.json says so."""
    found = [name for name in support.QUANT_CONFIG_FILES if (model_dir / name).is_file()]
    if found:
        raise StepFailed("checkpoint", support.already_quantized(found[0]))


def _checkpoint_step(spec: BuildSpec, layout: Layout, architecture: str) -> Step:
    parallel = ["--tp_size", str(spec.tensor_parallel), "--pp_size", str(spec.pipeline_parallel)]
    if spec.checkpoint_recipe == "fp8-rowwise":
        # examples/models/core/llama/README.md, Llama 3.1 405B: FP8 per channel and per token,
        # no calibration, one safetensors shard in memory at a time.
        argv = [toolchain.python(), toolchain.convert_script(architecture),
                "--model_dir", str(layout.model_dir), "--output_dir", str(layout.checkpoint_dir),
                *parallel, "--dtype", "bfloat16", "--use_fp8_rowwise", "--load_by_shard"]
        if spec.kv_cache_dtype == "fp8":
            argv.append("--fp8_kv_cache")
        return Step("checkpoint", argv, description="convert to FP8 row-wise, shard by shard")
    if support.checkpoint_tool(spec.precision) == "quantize":
        argv = [toolchain.python(), toolchain.quantize_script(),
                "--model_dir", str(layout.model_dir), "--output_dir", str(layout.checkpoint_dir),
                "--dtype", "auto", "--qformat", QFORMAT[spec.precision], *parallel,
                "--calib_size", "512"]
        if spec.calibration_source:
            argv += ["--calib_dataset", str(layout.calibration_dir)]
        if spec.kv_cache_dtype in ("fp8", "int8"):
            argv += ["--kv_cache_dtype", spec.kv_cache_dtype]
        return Step("checkpoint", argv, description=f"quantize to {spec.precision} (ModelOpt)")
    folder = support.CONVERTERS[architecture]
    argv = [toolchain.python(), toolchain.convert_script(architecture),
            "--model_dir", str(layout.model_dir), "--output_dir", str(layout.checkpoint_dir),
            *parallel]
    if spec.precision in DTYPE:
        argv += ["--dtype", DTYPE[spec.precision]]
    else:
        argv += ["--dtype", "auto", "--use_weight_only",
                 "--weight_only_precision", WEIGHT_ONLY[spec.precision]]
    if spec.kv_cache_dtype in support.CONVERTER_KV[folder]:  # check_model refused the rest
        argv.append(f"--{spec.kv_cache_dtype}_kv_cache")
    return Step("checkpoint", argv, description=f"convert to a {spec.precision} checkpoint")


def _gemm_plugin(precision: str) -> str:
    # FP8 GEMMs go through TensorRT's own kernels (the plugin is for small batches only);
    # NVFP4 needs its plugin; everything else uses the checkpoint dtype's plugin.
    return {"fp8": "disable", "nvfp4": "nvfp4"}.get(precision, "auto")


def _build_step(spec: BuildSpec, layout: Layout) -> Step:
    limits = spec.limits
    argv = [toolchain.trtllm_build(),
            "--checkpoint_dir", str(layout.checkpoint_dir),
            "--output_dir", str(layout.staging / "engine"),
            "--max_batch_size", str(limits.max_batch_size),
            "--max_input_len", str(limits.max_input_len),
            "--max_seq_len", str(limits.max_seq_len),
            "--max_num_tokens", str(limits.max_num_tokens),
            "--tokens_per_block", str(limits.tokens_per_block),
            "--kv_cache_type", "paged",
            "--gpt_attention_plugin", "auto",
            # Weight streaming needs TensorRT's own GEMMs: the plugin keeps weights resident.
            "--gemm_plugin", "disable" if limits.weight_streaming else _gemm_plugin(spec.precision),
            "--context_fmha", "enable",
            "--remove_input_padding", "enable",
            "--use_paged_context_fmha", "enable",
            "--use_fp8_context_fmha", "enable" if spec.kv_cache_dtype == "fp8" else "disable",
            "--multiple_profiles", "enable",
            # trtllm-build itself uses min(torch.cuda.device_count(), workers)
            # (tensorrt_llm/commands/build.py main()); NVIDIA_VISIBLE_DEVICES may hold "all"
            # or device UUIDs, so counting it here is wrong and the world size is the bound.
            "--workers", str(spec.world_size),
            # Written by rank 0 after its engine (builder.py, `assert ok`); the default is
            # the relative path model.cache, i.e. the image's read-only working directory.
            "--output_timing_cache", str(spec.work_dir / "model.cache"),
            "--log_level", "info"]
    if limits.weight_streaming:
        argv.append("--weight_streaming")
    return Step("engine", argv, description="trtllm-build", cwd=str(spec.work_dir))


def plan_steps(spec: BuildSpec, architecture: str) -> list[Step]:
    layout = Layout(spec)
    steps: list[Step] = []
    if not spec.source.startswith("/"):
        steps.append(Step("download", ["kiln-runtime", "download", "--source", spec.source,
                                       "--revision", spec.revision, "--out", str(layout.model_dir)],
                          description="fetch weights, config and tokenizer"))
    if spec.calibration_source:
        steps.append(Step("calibration", ["kiln-runtime", "calibration-set", "--source",
                                          spec.calibration_source, "--out", str(layout.calibration_dir)],
                          description="copy and check the calibration set"))
    checkpoint = _checkpoint_step(spec, layout, architecture)
    steps.append(Step(checkpoint.name, checkpoint.argv, description=checkpoint.description,
                      cwd=str(spec.work_dir)))
    if spec.gpus_per_node:
        steps.append(Step("mapping", ["kiln-runtime", "set-gpus-per-node", "--checkpoint-dir",
                                      str(layout.checkpoint_dir), "--gpus-per-node",
                                      str(spec.gpus_per_node)],
                          description="gpus_per_node in the checkpoint's mapping"))
    steps.append(_build_step(spec, layout))
    steps.append(Step("verify", ["kiln-runtime", "verify", "--engine-dir", str(layout.staging / "engine"),
                                 "--world-size", str(spec.world_size)],
                      description="config.json, one rank engine per GPU, mapping"))
    steps.append(Step("publish", ["kiln-runtime", "publish", "--staging", str(layout.staging),
                                  "--cache", str(spec.cache_dir), "--key", spec.engine_key],
                      description="manifest, then rename into the cache"))
    return steps


def _model_dtype(spec: BuildSpec, config: dict[str, Any]) -> str:
    """The checkpoint dtype: the converter's --dtype, else the model's (``auto`` turns
    float32 into float16)."""
    if spec.precision in DTYPE:
        return DTYPE[spec.precision]
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    dtype = str(text.get("torch_dtype") or config.get("torch_dtype") or "bfloat16")
    return "float16" if dtype == "float32" else dtype


def predict_engine_config(spec: BuildSpec, architecture: str,
                          config: dict[str, Any]) -> dict[str, Any]:
    """The parts of the engine's config.json that decide whether it loads where it is served:
    the mapping, the quantization and the plugins, as trtllm-build will write them
    (``EngineConfig.to_dict``: ``pretrained_config`` + ``build_config.plugin_config``)."""
    dtype = _model_dtype(spec, config)
    gemm = _build_step(spec, Layout(spec)).argv
    gemm_plugin = gemm[gemm.index("--gemm_plugin") + 1]
    return {
        "pretrained_config": {
            "architecture": architecture,
            "dtype": dtype,
            "mapping": {"world_size": spec.world_size, "tp_size": spec.tensor_parallel,
                        "pp_size": spec.pipeline_parallel,
                        # Mapping's default when the checkpoint does not say otherwise
                        "gpus_per_node": spec.gpus_per_node or 8},
            "quantization": {"quant_algo": ("FP8_PER_CHANNEL_PER_TOKEN"
                                            if spec.checkpoint_recipe == "fp8-rowwise"
                                            else QUANT_ALGO.get(spec.precision)),
                             "kv_cache_quant_algo": KV_QUANT_ALGO.get(spec.kv_cache_dtype)},
        },
        "build_config": {
            "weight_streaming": spec.limits.weight_streaming,
            # "disable" becomes None; "auto" resolves to the checkpoint's dtype (plugin.py).
            "plugin_config": {"gemm_plugin": {"disable": None, "auto": dtype}.get(gemm_plugin,
                                                                               gemm_plugin),
                              "tokens_per_block": spec.limits.tokens_per_block},
        },
    }
