"""The planner: will it fit, with how much KV cache, on which TP x PP layout. Pure."""

from .coldstart import cold_start_for_weights, cold_start_seconds
from .gpus import GPU, GPU_CATALOG, lookup_gpu, require_gpu, unknown_gpu_message
from .model import ModelConfig, UnsupportedModel, catalog_config, load_catalog, model_config
from .plan import Plan, plan, resolve_parallelism

__all__ = ["GPU", "GPU_CATALOG", "lookup_gpu", "require_gpu", "unknown_gpu_message", "ModelConfig", "UnsupportedModel",
           "catalog_config", "load_catalog", "model_config", "Plan", "plan", "resolve_parallelism",
           "cold_start_seconds", "cold_start_for_weights"]
