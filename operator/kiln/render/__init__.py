"""Pure rendering: (service, plan, engine) -> the Kubernetes objects Kiln applies.

No environment, no clock, no API calls. The operator and ``kiln render`` call the same code,
so what a GitOps repository holds is exactly what the operator would apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import AutoscalingMode, LLMServiceSpec
from ..planner import GPU, Plan
from .checks import check_objects
from .engine import Engine, build_job, engine_for, engine_key, llm_engine
from .gateway import epp_name, gateway_objects, pool_name, route_name
from .meta import FIELD_MANAGER, SPEC_HASH_ANNOTATION, labels, selector
from .scaling import scaler
from .serving import (disruption_budget, endpoint, group_name, launcher_name, multi_node, network_policy,
                      served_model_name, server_name, service, service_accounts, workload, workload_ref)
from .serving import openai_endpoint as _server_openai_endpoint
from .platform import DEFAULT_PLATFORM, Platform
from .wake import wake_endpoint, wake_name, wake_objects

__all__ = ["ServiceRef", "Rendered", "render", "Engine", "Platform", "engine_for", "engine_key",
           "FIELD_MANAGER", "SPEC_HASH_ANNOTATION", "endpoint", "server_name", "selector",
           "labels", "multi_node", "workload_ref", "openai_endpoint", "served_model_name",
           "wake_endpoint", "inventory", "workload_keys"]


@dataclass(frozen=True)
class ServiceRef:
    """Identity of the LLMService being rendered; ``uid`` is None outside a cluster."""

    name: str
    namespace: str
    uid: str | None = None


@dataclass(frozen=True)
class Rendered:
    """The objects for one service, by role, in the order they are applied."""

    engine: dict[str, Any]
    build_job: dict[str, Any]
    workload: dict[str, Any]
    service: dict[str, Any]
    scaler: dict[str, Any] | None = None  # KEDA ScaledObject or HPA, by autoscaling.mode
    # The serving pods' ServiceAccount; multi-node also the leader's, its Role and
    # RoleBinding. Applied before the workload.
    access: tuple[dict[str, Any], ...] = ()
    network_policy: dict[str, Any] | None = None  # spec.networkPolicy.enabled
    disruption_budget: dict[str, Any] | None = None  # one node's replicas (not multi-node)
    # spec.gateway: the endpoint picker (ServiceAccount, Role, RoleBinding, ConfigMap,
    # Deployment, Service), the InferencePool and the HTTPRoute. Applied after the Service.
    gateway: tuple[dict[str, Any], ...] = ()
    # autoscaling.mode keda-http: the ExternalName Service clients call and the
    # HTTPScaledObject routing it through KEDA's HTTP add-on interceptor.
    wake: tuple[dict[str, Any], ...] = ()

    def objects(self) -> list[dict[str, Any]]:
        objects = [self.engine, self.build_job, *self.access, self.workload, self.service]
        return objects + [obj for obj in (self.network_policy, self.disruption_budget, self.scaler) if obj] + [
            *self.gateway, *self.wake]


def openai_endpoint(spec: LLMServiceSpec, instance: str, namespace: str) -> str | None:
    """The in-cluster base URL clients use: the interceptor's route in keda-http mode (a
    request there wakes a service at zero), else the serving Service (Triton only)."""
    if spec.autoscaling.mode == AutoscalingMode.KEDA_HTTP:
        return wake_endpoint(instance, namespace)
    return _server_openai_endpoint(spec, instance, namespace)


def inventory(instance: str) -> frozenset[tuple[str, str]]:
    """(kind, name) of every object :func:`render` can make in LLMService ``instance``'s
    namespace, whatever its spec: what a service's inventory (``status.children``) may name;
    nothing outside it is ever deleted as no longer wanted."""
    server, launcher, epp = server_name(instance), launcher_name(instance), epp_name(instance)
    return frozenset({
        ("ServiceAccount", server), ("Service", server), ("NetworkPolicy", server),
        ("PodDisruptionBudget", server),
        ("Deployment", server), ("LeaderWorkerSet", group_name(instance)),
        ("ServiceAccount", launcher), ("Role", launcher), ("RoleBinding", launcher),
        ("ScaledObject", instance), ("HorizontalPodAutoscaler", instance), ("HTTPScaledObject", instance),
        ("Service", wake_name(instance)),
        ("ServiceAccount", epp), ("Role", epp), ("RoleBinding", epp), ("ConfigMap", epp),
        ("Deployment", epp), ("Service", epp), ("DestinationRule", epp),
        ("InferencePool", pool_name(instance)), ("HTTPRoute", route_name(instance)),
    })


def workload_keys(instance: str) -> frozenset[tuple[str, str]]:
    """The (kind, name) of either workload the service can have: one node's Deployment, or
    the multi-node LeaderWorkerSet."""
    return frozenset({("Deployment", server_name(instance)), ("LeaderWorkerSet", group_name(instance))})


def render(ref: ServiceRef, spec: LLMServiceSpec, plan: Plan, gpu: GPU,
           replicas: int | None = None, platform: Platform = DEFAULT_PLATFORM) -> Rendered:
    """Every object for the service; ``replicas`` overrides spec.replicas (the autoscaler);
    ``platform``: the platform team's settings (model stores, cluster domain).

    Raises SpecInvalid if an object would break the API server's rules on names, labels or
    size: nothing is applied that has not passed them."""
    engine = engine_for(spec, plan, gpu, ref.namespace)
    build_gpus = min(spec.gpus, spec.gpu.per_node)
    rendered = Rendered(
        engine=llm_engine(engine, ref.name),
        build_job=build_job(engine, ref.name, ref.namespace, gpu, spec.gpu.resource_name,
                            build_gpus, ref.uid, plan.build, platform),
        workload=workload(spec, plan, engine, gpu, ref.name, ref.namespace,
                          spec.replicas if replicas is None else replicas, ref.uid),
        access=tuple(service_accounts(spec, ref.name, ref.namespace, ref.uid)),
        network_policy=network_policy(spec, ref.name, ref.namespace, ref.uid),
        disruption_budget=disruption_budget(spec, ref.name, ref.namespace, ref.uid),
        service=service(spec, ref.name, ref.namespace, ref.uid),
        scaler=scaler(spec, ref.name, ref.namespace, ref.uid),
        gateway=tuple(gateway_objects(spec, ref.name, ref.namespace, ref.uid, platform)),
        wake=tuple(wake_objects(spec, plan, ref.name, ref.namespace, ref.uid, platform.cluster_domain)),
    )
    check_objects(rendered.objects())
    return rendered
