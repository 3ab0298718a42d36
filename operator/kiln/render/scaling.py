"""KEDA ScaledObject and HPA for ``autoscaling.mode: keda | hpa``.

Both target the LLMService's ``/scale`` subresource (``spec.replicas``, selector from
``status.selector``), so the operator keeps rendering the workload from the spec and the
external autoscaler never touches the Deployment. The signal is the same as the builtin
mode's: the TensorRT-LLM backend's KV block fraction (used/max) per serving pod.
- KEDA: a prometheus trigger on the sum of the pods' fractions, threshold = target, so
  replicas = ceil(Σ fraction / target), which is the builtin law's proportional term.
- HPA: a Pods metric (served by prometheus-adapter from the same series) with an
  AverageValue target.
"""

from __future__ import annotations

from typing import Any

from ..api import API_VERSION, AutoscalingMode, LLMServiceSpec
from ..autoscale.metrics import KV_METRIC, service_matchers
from .meta import labels, owned_by, stamp

__all__ = ["scaler", "SCALED_OBJECT_API"]

SCALED_OBJECT_API = "keda.sh/v1alpha1"

POLLING_SECONDS = 15


def _target_ref(instance: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "LLMService", "name": instance}


def _metadata(instance: str, namespace: str, uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": instance, "namespace": namespace,
                            "labels": labels(instance, "autoscaler")}
    meta.update(owned_by(instance, uid))
    return meta


def scaled_object(spec: LLMServiceSpec, instance: str, namespace: str, uid: str | None) -> dict[str, Any]:
    scaling = spec.autoscaling
    query = f'sum({KV_METRIC}{{kv_cache_block_type="fraction",{service_matchers(namespace, instance)}}})'
    return stamp({
        "apiVersion": SCALED_OBJECT_API,
        "kind": "ScaledObject",
        "metadata": _metadata(instance, namespace, uid),
        "spec": {
            "scaleTargetRef": _target_ref(instance),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": POLLING_SECONDS,
            "cooldownPeriod": max(scaling.scale_down_stabilization_seconds, 60),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds}}}},
            "triggers": [{"type": "prometheus", "metadata": {
                "serverAddress": scaling.prometheus_url,
                "query": query,
                "threshold": f"{scaling.target_kv_cache_utilization:g}",
            }}],
        },
    })


def horizontal_pod_autoscaler(spec: LLMServiceSpec, instance: str, namespace: str,
                              uid: str | None) -> dict[str, Any]:
    scaling = spec.autoscaling
    return stamp({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(instance, namespace, uid),
        "spec": {
            "scaleTargetRef": _target_ref(instance),
            # An HPA cannot go below one replica; scale-to-zero needs keda mode.
            "minReplicas": max(1, scaling.min_replicas),
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": KV_METRIC,
                           "selector": {"matchLabels": {"kv_cache_block_type": "fraction"}}},
                "target": {"type": "AverageValue",
                           "averageValue": f"{round(scaling.target_kv_cache_utilization * 1000)}m"},
            }}],
            "behavior": {"scaleDown": {
                "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds}},
        },
    })


def scaler(spec: LLMServiceSpec, instance: str, namespace: str, uid: str | None) -> dict[str, Any] | None:
    mode = spec.autoscaling.mode
    if mode == AutoscalingMode.KEDA:
        return scaled_object(spec, instance, namespace, uid)
    if mode == AutoscalingMode.HPA:
        return horizontal_pod_autoscaler(spec, instance, namespace, uid)
    return None
