"""A spec planned by the operator's own path, for tests whose model is in Kiln's catalog: the
model through :func:`kiln.planner.model_config` (as the operator's ModelResolver, ``kiln
plan`` and the perf model resolve it), the GPU through :func:`kiln.planner.require_gpu` (as
:func:`kiln.decide.parse` finds it)."""

from __future__ import annotations

from kiln.api import LLMServiceSpec
from kiln.planner import GPU, ModelConfig, Plan, model_config, plan, require_gpu

__all__ = ["catalog_model", "planned"]


def catalog_model(source: str) -> ModelConfig:
    """The config the operator sizes ``source`` (``hf://org/name``) with, from the catalog."""
    model, why = model_config(source)
    assert model is not None, why
    return model


def planned(spec: LLMServiceSpec, model: ModelConfig | None = None) -> tuple[Plan, GPU]:
    """The plan for ``spec`` and the GPU it is planned on; ``model``: another model's config
    than the spec's source (a name the catalog does not hold)."""
    gpu = require_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    return plan(model or catalog_model(spec.model.source), spec, gpu), gpu
