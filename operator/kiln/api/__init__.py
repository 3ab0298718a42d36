"""The Kiln API: pydantic models that are the single source of truth for the CRDs."""

from .common import (API_VERSION, GROUP, VERSION, AutoscalingMode, ConditionType, KilnModel,
                     KVCacheDtype, Precision, Reason, ServerKind)
from .llmengine import EngineCacheLocation, EngineShape, LLMEngineSpec, LLMEngineStatus
from .llmservice import (AutoscalingSpec, Condition, EngineCacheSpec, EngineLimits, EngineRef,
                         GPUSpec, LLMServiceSpec, LLMServiceStatus, ModelSpec, NetworkSpec,
                         ParallelismSpec,
                         PlanStatus, RuntimeSpec, SecretRef)
from .validation import describe_error, parse_service_manifest, parse_service_spec

__all__ = [
    "API_VERSION", "GROUP", "VERSION", "AutoscalingMode", "ConditionType", "KilnModel",
    "KVCacheDtype", "Precision", "Reason", "ServerKind", "EngineCacheLocation", "EngineShape", "LLMEngineSpec",
    "LLMEngineStatus", "AutoscalingSpec", "Condition", "EngineCacheSpec", "EngineLimits",
    "EngineRef", "GPUSpec", "LLMServiceSpec", "LLMServiceStatus", "ModelSpec", "NetworkSpec",
    "ParallelismSpec",
    "PlanStatus", "RuntimeSpec", "SecretRef", "describe_error", "parse_service_manifest",
    "parse_service_spec",
]
