"""The LLMEngine resource: a cluster-scoped record of one content-addressed engine build.

Its name is ``<model-slug>-<hash20>`` (80 bits over the key, the namespace and the cache);
``spec.key`` is the content hash of every input that changes the engine's bytes. Engines outlive the services that asked for them: they are the cache.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .common import KilnModel, KVCacheDtype, Precision, ServerKind
from .llmservice import Condition

__all__ = ["EngineCacheLocation", "EngineShape", "LLMEngineSpec", "LLMEngineStatus"]


class EngineShape(KilnModel):
    """The limits compiled into an engine (runtime-only settings are not part of it)."""

    max_batch_size: int = Field(ge=1)
    max_input_len: int = Field(ge=1)
    max_seq_len: int = Field(ge=2)
    max_num_tokens: int = Field(ge=1)
    tokens_per_block: int = Field(ge=1)
    weight_streaming: bool | None = None


class EngineCacheLocation(KilnModel):
    """The PersistentVolumeClaim the engine is built into."""

    namespace: str = Field(min_length=1, max_length=63)
    claim_name: str = Field(min_length=1, max_length=253)


class LLMEngineSpec(KilnModel):
    """Every input of one engine build; immutable once created."""

    key: str = Field(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$",
                     description="sha256 over the inputs that change the engine's bytes.")
    model_source: str = Field(max_length=256)
    revision: str = Field(max_length=128)
    credentials_secret: str | None = Field(default=None, max_length=253)
    precision: Precision
    kv_cache_dtype: KVCacheDtype
    tensor_parallel: int = Field(ge=1, le=512)
    pipeline_parallel: int = Field(ge=1, le=512)
    gpu_type: str = Field(max_length=64)
    gpu_arch: str = Field(max_length=16, description="CUDA compute capability, e.g. sm90.")
    server: ServerKind
    toolchain: str = Field(max_length=64, description="TensorRT-LLM version the engine is built with.")
    limits: EngineShape
    cache: EngineCacheLocation
    gpus_per_node: int | None = Field(
        default=None, ge=1, le=16,
        description="GPUs per node of a replica that spans nodes (the checkpoint's "
        "mapping.gpus_per_node); unset for one node.")
    calibration_source: str | None = Field(
        default=None, max_length=256,
        description="The service's spec.model.calibration.source, for a build that calibrates "
        "with quantize.py; unset: TensorRT-LLM's default set from the Hub, or no calibration.")
    checkpoint_recipe: Literal["fp8-rowwise"] | None = Field(
        default=None,
        description="fp8-rowwise: convert_checkpoint.py --use_fp8_rowwise --load_by_shard, for "
        "models too large to calibrate on one node; unset: the precision's usual tool.")


class LLMEngineStatus(KilnModel):
    """Where the build stands."""

    conditions: list[Condition] = Field(default_factory=list)
    build_job: str | None = None
    storage_uri: str | None = None
    size_bytes: int | None = None
    build_seconds: float | None = None
    unreferenced_since: str | None = Field(
        default=None, description="When the operator first found no LLMService referencing this "
        "engine; the record is deleted a grace period later (the cache contents are kept unless "
        "the platform team opts in: engineCache.deleteUnreferencedFiles).")
