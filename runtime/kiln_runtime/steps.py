"""The build as a list of command lines: what ``--dry-run`` prints and what ``build`` runs.

Every flag and value here exists in the TensorRT-LLM 1.2.1 CLIs (``quantize.py``,
``convert_checkpoint.py``, ``trtllm-build``); ``tests/unit/test_runtime_build.py`` checks
each one against the recorded argument lists. Boolean plugin switches take the words
``enable``/``disable``. ``trtllm-build`` has no TP/PP flags: the checkpoint's mapping,
written by the quantizer or converter from ``--tp_size/--pp_size``, decides them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import toolchain
from .errors import BadSpec
from .spec import BuildSpec

__all__ = ["Step", "Layout", "plan_steps", "check_model", "QFORMAT", "WEIGHT_ONLY"]

# Kiln precision -> quantize.py --qformat (ModelOpt flow).
QFORMAT = {"fp8": "fp8", "int8-sq": "int8_sq", "int4-awq": "int4_awq", "w4a8-awq": "w4a8_awq",
           "nvfp4": "nvfp4"}
# Kiln precision -> convert_checkpoint.py --weight_only_precision.
WEIGHT_ONLY = {"int8-wo": "int8", "int4-wo": "int4"}
DTYPE = {"fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class Step:
    name: str
    argv: list[str]
    # Steps that kiln-runtime runs in-process (its own subcommands) rather than as a child.
    internal: bool = False
    description: str = ""

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "argv": self.argv}


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
    architecture = str((config.get("architectures") or [config.get("architecture") or "?"])[0])
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads = int(text.get("num_attention_heads") or 0)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    layers = int(text.get("num_hidden_layers") or 0)
    if spec.precision in DTYPE or spec.precision in WEIGHT_ONLY:
        if architecture not in toolchain.CONVERTERS:
            supported = ", ".join(sorted(toolchain.CONVERTERS))
            raise BadSpec(f"precision: {spec.precision} is built with convert_checkpoint.py, which "
                          f"Kiln runs for {supported}; {architecture} is not one of them — use a "
                          f"quantized precision ({', '.join(QFORMAT)}) built by quantize.py")
    tp = spec.tensor_parallel
    if heads and heads % tp:
        raise BadSpec(f"tensorParallel: {tp} does not divide the {heads} attention heads of "
                      f"{architecture}")
    if kv_heads and kv_heads % tp and tp % kv_heads:
        raise BadSpec(f"tensorParallel: {tp} and the {kv_heads} KV heads must divide one another")
    if layers and spec.pipeline_parallel > layers:
        raise BadSpec(f"pipelineParallel: {spec.pipeline_parallel} exceeds the {layers} layers")
    return architecture


def _visible_gpus() -> int:
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES") or os.environ.get("CUDA_VISIBLE_DEVICES") or ""
    if visible in ("", "all", "none", "void"):
        return 1
    return len([d for d in visible.split(",") if d.strip()])


def _checkpoint_step(spec: BuildSpec, layout: Layout, architecture: str) -> Step:
    parallel = ["--tp_size", str(spec.tensor_parallel), "--pp_size", str(spec.pipeline_parallel)]
    if spec.precision in QFORMAT:
        argv = [toolchain.python(), toolchain.quantize_script(),
                "--model_dir", str(layout.model_dir), "--output_dir", str(layout.checkpoint_dir),
                "--dtype", "auto", "--qformat", QFORMAT[spec.precision], *parallel,
                "--calib_size", "512"]
        if spec.kv_cache_dtype in ("fp8", "int8"):
            argv += ["--kv_cache_dtype", spec.kv_cache_dtype]
        return Step("checkpoint", argv, description=f"quantize to {spec.precision} (ModelOpt)")
    argv = [toolchain.python(), toolchain.convert_script(architecture),
            "--model_dir", str(layout.model_dir), "--output_dir", str(layout.checkpoint_dir),
            *parallel]
    if spec.precision in DTYPE:
        argv += ["--dtype", DTYPE[spec.precision]]
    else:
        argv += ["--dtype", "auto", "--use_weight_only",
                 "--weight_only_precision", WEIGHT_ONLY[spec.precision]]
    if spec.kv_cache_dtype == "fp8":
        argv.append("--fp8_kv_cache")
    elif spec.kv_cache_dtype == "int8":
        argv.append("--int8_kv_cache")
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
            "--workers", str(min(spec.world_size, _visible_gpus())),
            "--log_level", "info"]
    if limits.weight_streaming:
        argv.append("--weight_streaming")
    return Step("engine", argv, description="trtllm-build")


def plan_steps(spec: BuildSpec, architecture: str) -> list[Step]:
    layout = Layout(spec)
    steps: list[Step] = []
    if not spec.source.startswith("/"):
        steps.append(Step("download", ["kiln-runtime", "download", "--source", spec.source,
                                       "--revision", spec.revision, "--out", str(layout.model_dir)],
                          internal=True, description="fetch weights, config and tokenizer"))
    steps.append(_checkpoint_step(spec, layout, architecture))
    steps.append(_build_step(spec, layout))
    steps.append(Step("verify", ["kiln-runtime", "verify", "--engine-dir", str(layout.staging / "engine"),
                                 "--world-size", str(spec.world_size)],
                      internal=True, description="config.json, one rank engine per GPU, mapping"))
    steps.append(Step("publish", ["kiln-runtime", "publish", "--staging", str(layout.staging),
                                  "--cache", str(spec.cache_dir), "--key", spec.engine_key],
                      internal=True, description="manifest, then rename into the cache"))
    return steps
