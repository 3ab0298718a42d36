"""The build spec: the JSON the operator puts in the build Job's ``KILN_BUILD_SPEC``.

Parsed by hand (stdlib only) so the runtime image needs no operator dependencies. Field
names are the operator's (``kiln.render.engine.build_spec``); a test keeps the two in step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import support, toolchain
from .errors import BadSpec

__all__ = ["BuildSpec", "Limits", "load_build_spec", "BUILD_SPEC_ENV", "PRECISIONS",
           "MIN_ARCH"]

BUILD_SPEC_ENV = "KILN_BUILD_SPEC"

PRECISIONS = ("fp16", "bf16", "fp8", "int8-sq", "int4-awq", "w4a8-awq", "int8-wo", "int4-wo", "nvfp4")
KV_DTYPES = ("fp16", "bf16", "fp8", "int8")
RECIPES = ("fp8-rowwise",)
# The oldest GPU architecture each precision's kernels run on (FP8 needs Ada/Hopper,
# NVFP4 needs Blackwell, W4A8 AWQ needs FP8 activations).
MIN_ARCH = {"fp8": 89, "w4a8-awq": 89, "nvfp4": 100}


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    tokens_per_block: int
    weight_streaming: bool = False


@dataclass(frozen=True)
class BuildSpec:
    engine_key: str
    engine_name: str
    source: str
    revision: str
    precision: str
    kv_cache_dtype: str
    tensor_parallel: int
    pipeline_parallel: int
    gpu_arch: str
    toolchain: str
    limits: Limits
    cache_dir: Path
    work_dir: Path
    # GPUs per node of a replica that spans nodes (the checkpoint's mapping.gpus_per_node);
    # 0 when one node holds the replica and TensorRT-LLM's default of 8 is harmless.
    gpus_per_node: int = 0
    # "fp8-rowwise": convert_checkpoint.py --use_fp8_rowwise --load_by_shard (Llama family,
    # models too large to calibrate on one node); "": the precision's usual tool.
    checkpoint_recipe: str = ""
    # The platform team's calibration set (s3:// or a mounted path), copied to scratch and
    # given to quantize.py --calib_dataset; "": quantize.py's default from the Hub.
    calibration_source: str = ""

    @property
    def built_here(self) -> bool:
        """Built by this image's TensorRT-LLM (1.2.1), not DJL's partition script (0.21),
        which has its own rules."""
        return self.toolchain == f"tensorrt-llm=={toolchain.TRTLLM_VERSION}"

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel

    @property
    def arch_number(self) -> int:
        return int(self.gpu_arch.removeprefix("sm") or 0)

    def inputs(self) -> dict[str, Any]:
        """What the manifest records as the engine's inputs."""
        return {"source": self.source, "revision": self.revision, "precision": self.precision,
                "kvCacheDtype": self.kv_cache_dtype, "tensorParallel": self.tensor_parallel,
                "pipelineParallel": self.pipeline_parallel, "gpuArch": self.gpu_arch,
                "toolchain": self.toolchain, "limits": {
                    "maxBatchSize": self.limits.max_batch_size,
                    "maxInputLen": self.limits.max_input_len,
                    "maxSeqLen": self.limits.max_seq_len,
                    "maxNumTokens": self.limits.max_num_tokens,
                    "tokensPerBlock": self.limits.tokens_per_block,
                    **({"weightStreaming": True} if self.limits.weight_streaming else {})},
                **({"gpusPerNode": self.gpus_per_node} if self.gpus_per_node else {}),
                **({"checkpointRecipe": self.checkpoint_recipe} if self.checkpoint_recipe else {}),
                **({"calibration": self.calibration_source} if self.calibration_source else {})}


def _field(raw: dict[str, Any], path: str, kind: type, choices: tuple[str, ...] | None = None,
           minimum: int | None = None) -> Any:
    value: Any = raw
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BadSpec(f"{path}: required")
        value = value[part]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadSpec(f"{path}: expected an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise BadSpec(f"{path}: expected a string, got {value!r}")
    if choices is not None and value not in choices:
        raise BadSpec(f"{path}: {value!r} is not one of {', '.join(choices)}")
    if minimum is not None and value < minimum:
        raise BadSpec(f"{path}: must be >= {minimum}, got {value}")
    return value


def _flag(raw: dict[str, Any], path: str) -> bool:
    value: Any = raw
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is not None and not isinstance(value, bool):
        raise BadSpec(f"{path}: expected true or false, got {value!r}")
    return bool(value)


def parse_build_spec(raw: Any) -> BuildSpec:
    if not isinstance(raw, dict):
        raise BadSpec("build spec: expected a JSON object")
    spec = BuildSpec(
        engine_key=_field(raw, "engineKey", str),
        engine_name=_field(raw, "engineName", str),
        source=_field(raw, "model.source", str),
        revision=_field(raw, "model.revision", str),
        precision=_field(raw, "precision", str, PRECISIONS),
        kv_cache_dtype=_field(raw, "kvCacheDtype", str, KV_DTYPES),
        tensor_parallel=_field(raw, "tensorParallel", int, minimum=1),
        pipeline_parallel=_field(raw, "pipelineParallel", int, minimum=1),
        gpu_arch=_field(raw, "gpuArch", str),
        toolchain=_field(raw, "toolchain", str),
        limits=Limits(**{name: _field(raw, f"limits.{camel}", int, minimum=1) for name, camel in (
            ("max_batch_size", "maxBatchSize"), ("max_input_len", "maxInputLen"),
            ("max_seq_len", "maxSeqLen"), ("max_num_tokens", "maxNumTokens"),
            ("tokens_per_block", "tokensPerBlock"))},
                      weight_streaming=_flag(raw, "limits.weightStreaming")),
        cache_dir=Path(_field(raw, "cacheDir", str)),
        work_dir=Path(_field(raw, "workDir", str)),
        gpus_per_node=_field(raw, "gpusPerNode", int, minimum=1) if "gpusPerNode" in raw else 0,
        checkpoint_recipe=(_field(raw, "checkpointRecipe", str, RECIPES)
                           if "checkpointRecipe" in raw else ""),
        calibration_source=(_field(raw, "calibration.source", str)
                            if "calibration" in raw else ""),
    )
    if len(spec.engine_key) != 64 or any(c not in "0123456789abcdef" for c in spec.engine_key):
        raise BadSpec("engineKey: expected 64 lowercase hex characters")
    if not spec.gpu_arch.startswith("sm") or not spec.gpu_arch[2:].isdigit():
        raise BadSpec(f"gpuArch: expected smNN, got {spec.gpu_arch!r}")
    needed = MIN_ARCH.get(spec.precision, 0)
    if spec.arch_number < needed:
        raise BadSpec(f"precision: {spec.precision} needs GPU architecture sm{needed} or newer; "
                      f"the build targets {spec.gpu_arch}")
    if spec.kv_cache_dtype == "fp8" and spec.arch_number < 89:
        raise BadSpec(f"kvCacheDtype: fp8 needs sm89 or newer; the build targets {spec.gpu_arch}")
    refused = support.refusals(None, spec.precision, spec.kv_cache_dtype, spec.arch_number,
                               spec.limits.weight_streaming) if spec.built_here else []
    if refused:
        raise BadSpec(refused[0])
    if spec.checkpoint_recipe and spec.precision != "fp8":
        raise BadSpec(f"checkpointRecipe: {spec.checkpoint_recipe} builds precision fp8, not "
                      f"{spec.precision}")
    if spec.limits.max_input_len >= spec.limits.max_seq_len:
        raise BadSpec("limits.maxInputLen: must be smaller than limits.maxSeqLen")
    if not spec.source.startswith(("hf://", "s3://", "/")):
        raise BadSpec(f"model.source: expected hf://, s3:// or a mounted path, got {spec.source!r}")
    if spec.calibration_source:
        if not spec.calibration_source.startswith(("s3://", "/")):
            raise BadSpec("calibration.source: expected s3:// or a mounted path, got "
                          f"{spec.calibration_source[:120]!r}")
        if support.calibrates(spec.precision, spec.kv_cache_dtype, spec.checkpoint_recipe) != "quantize":
            raise BadSpec(f"calibration.source: precision {spec.precision} is not calibrated by "
                          "quantize.py, the one tool that reads a calibration set of its own")
    return spec


def load_build_spec(path: str | None) -> BuildSpec:
    """From ``--spec FILE``, else from ``$KILN_BUILD_SPEC``."""
    if path:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise BadSpec(f"--spec: cannot read {path}: {error.strerror}") from None
    else:
        text = os.environ.get(BUILD_SPEC_ENV, "")
        if not text:
            raise BadSpec(f"no build spec: pass --spec FILE or set {BUILD_SPEC_ENV}")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadSpec(f"build spec: not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise BadSpec("build spec: nested too deep to be read") from None
    return parse_build_spec(raw)
