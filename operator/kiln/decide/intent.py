"""From the manifest to what it asks for, before the cluster is looked at: parse and check the
spec, plan it, render its objects. Pure."""

from __future__ import annotations

from typing import Any

from ..api import AutoscalingMode, LLMServiceSpec
from ..api.validation import check_service_name, parse_service_spec
from ..errors import SpecInvalid
from ..planner import ModelConfig, plan, require_gpu
from ..render import ServiceRef, Platform, render
from ..render.platform import DEFAULT_PLATFORM
from .policy import Policy
from .snapshot import Intent, Parsed

__all__ = ["parse", "intend", "workload_replicas"]


def parse(ref: ServiceRef, raw_spec: Any, policy: Policy) -> Parsed:
    """The spec as the API server and the platform team's policy admit it; SpecInvalid naming
    the field otherwise."""
    check_service_name(ref.name)  # the API server accepts names its Services cannot carry
    spec = parse_service_spec(raw_spec)
    gpu = require_gpu(spec.gpu.type, spec.gpu.memory_gi_b, spec.gpu.arch)
    scaling = spec.autoscaling
    if scaling.mode == AutoscalingMode.KEDA or (scaling.mode == AutoscalingMode.BUILTIN
                                                and scaling.metrics_source == "prometheus"):
        policy.check_prometheus(scaling.prometheus_url)
    return Parsed(spec, gpu)


def intend(ref: ServiceRef, parsed: Parsed, model: ModelConfig | None, replicas: int,
           platform: Platform = DEFAULT_PLATFORM) -> Intent:
    """The plan and, if it fits, the objects for ``replicas`` workload replicas (SpecInvalid
    if one would break the API server's rules on names, labels or size). Raises PlanRefused
    for a layout the model cannot take. ``platform``: the platform team's settings (Policy.platform)."""
    result = plan(model, parsed.spec, parsed.gpu)
    if result.fits is False:
        return Intent(result, None, replicas)
    try:
        return Intent(result, render(ref, parsed.spec, result, parsed.gpu, replicas, platform), replicas)
    except SpecInvalid as error:
        return Intent(result, error, replicas)


def workload_replicas(spec: LLMServiceSpec, desired: int | None) -> int:
    """Replicas of the owned workload: the builtin autoscaler's choice (``desired``, never
    written to the user's spec) in builtin mode, otherwise spec.replicas (which KEDA or an HPA
    may drive through the /scale subresource)."""
    scaling = spec.autoscaling
    if scaling.mode != AutoscalingMode.BUILTIN:
        return int(spec.replicas)
    if desired is None:
        desired = max(scaling.min_replicas, min(scaling.max_replicas, spec.replicas))
    return max(scaling.min_replicas, min(scaling.max_replicas, int(desired)))
