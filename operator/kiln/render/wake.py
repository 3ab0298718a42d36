"""Scale from zero that wakes (``autoscaling.mode: keda-http``): KEDA's HTTP add-on.

What the add-on does, from kedacore/http-add-on v0.15.0 (the release of the stored
``http.keda.sh_httpscaledobjects.yaml``):

- Its operator turns an ``HTTPScaledObject`` into a KEDA ``ScaledObject`` of the same name,
  whose ``scaleTargetRef`` is the HTTPScaledObject's ``apiVersion``/``kind``/``name``
  (``operator/controllers/http/scaled_object.go``), min/max from ``spec.replicas`` and an
  external-push trigger on the add-on's scaler. Here the target is the LLMService's
  ``/scale`` subresource, as in keda mode, so the operator keeps rendering the workload.
- Its interceptor (Service ``keda-add-ons-http-interceptor-proxy``, namespace ``keda``, port
  8080 in the add-on's chart) routes a request by its ``Host`` header with the port stripped
  and the longest ``pathPrefixes`` match (``pkg/routing/key.go``), counts it as pending (what
  the scaler reports, so a request at zero replicas raises the target to one), waits up to
  ``spec.timeouts.conditionWait`` for the Service to have a ready endpoint, then proxies to
  ``<scaleTargetRef.service>.<namespace>:<port>`` (``interceptor/proxy_handlers.go``,
  ``interceptor/middleware/routing.go``). Its default wait, ``KEDA_CONDITION_WAIT_TIMEOUT``,
  is 1.5 s (``interceptor/config/timeouts.go``): far shorter than a replica's cold start, so
  the object sets it from the plan.

Clients reach the interceptor under a name of the service's own: an ``ExternalName``
Service ``<name>-openai`` that resolves to the interceptor, so the Host a client sends
(``<name>-openai.<namespace>.svc``) is the host the HTTPScaledObject routes.
"""

from __future__ import annotations

from typing import Any

from ..api import API_VERSION, AutoscalingMode, LLMServiceSpec
from ..planner import Plan, cold_start_seconds
from .meta import child_name, labels, owned_by, stamp
from .platform import DEFAULT_CLUSTER_DOMAIN
from .serving import INTERCEPTOR_NAMESPACE, PORTS, server_name

__all__ = ["wake_objects", "wake_name", "wake_endpoint", "wake_hosts", "HTTP_SCALED_OBJECT_API",
           "INTERCEPTOR_SERVICE", "INTERCEPTOR_NAMESPACE", "INTERCEPTOR_PORT",
           "RESPONSE_HEADER_SECONDS", "concurrency_target", "hold_seconds"]

HTTP_SCALED_OBJECT_API = "http.keda.sh/v1alpha1"
INTERCEPTOR_SERVICE = "keda-add-ons-http-interceptor-proxy"
INTERCEPTOR_PORT = 8080
# A non-streamed completion sends its headers when the whole answer is ready: up to
# maxSeqLen tokens of decoding. The interceptor's default (0.5 s) would cut every one.
RESPONSE_HEADER_SECONDS = 600


def wake_name(instance: str) -> str:
    return child_name(instance, "openai")


def wake_hosts(instance: str, namespace: str, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> list[str]:
    """The Host values (port stripped) a client of the wake URL sends."""
    base = f"{wake_name(instance)}.{namespace}.svc"
    return [base, f"{base}.{cluster_domain}"]


def wake_endpoint(instance: str, namespace: str) -> str:
    return f"http://{wake_hosts(instance, namespace)[0]}:{INTERCEPTOR_PORT}/v1"


def concurrency_target(spec: LLMServiceSpec, plan: Plan) -> int:
    """In-flight requests per replica the add-on scales to: the sequences a replica holds at
    maxSeqLen (or its batch size) times the KV-cache target."""
    sequences = plan.max_concurrent_sequences or spec.engine.max_batch_size
    return max(1, int(sequences * spec.autoscaling.target_kv_cache_utilization))


def hold_seconds(plan: Plan) -> int:
    """How long the interceptor holds a request for a ready replica: twice the expected cold
    start, so a held request is answered, not cut at the add-on's default 1.5 s."""
    return 2 * cold_start_seconds(plan)


def _meta(name: str, instance: str, namespace: str, uid: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": labels(instance, "autoscaler")}
    meta.update(owned_by(instance, uid))
    return meta


def http_scaled_object(spec: LLMServiceSpec, plan: Plan, instance: str, namespace: str,
                       uid: str | None, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> dict[str, Any]:
    scaling = spec.autoscaling
    return stamp({
        "apiVersion": HTTP_SCALED_OBJECT_API,
        "kind": "HTTPScaledObject",
        "metadata": _meta(instance, instance, namespace, uid),
        "spec": {
            "hosts": wake_hosts(instance, namespace, cluster_domain),
            "pathPrefixes": ["/v1"],
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": "LLMService", "name": instance,
                               "service": server_name(instance), "port": PORTS["openai"]},
            "replicas": {"min": scaling.min_replicas, "max": scaling.max_replicas},
            "scaledownPeriod": scaling.scale_down_stabilization_seconds,
            "scalingMetric": {"concurrency": {"targetValue": concurrency_target(spec, plan)}},
            "timeouts": {"conditionWait": f"{hold_seconds(plan)}s",
                         "responseHeader": f"{RESPONSE_HEADER_SECONDS}s"},
        },
    })


def interceptor_alias(instance: str, namespace: str, uid: str | None,
                      cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> dict[str, Any]:
    # An ExternalName is a CNAME, whose target no search path completes: fully qualified.
    return stamp({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(wake_name(instance), instance, namespace, uid),
        "spec": {"type": "ExternalName",
                 "externalName": f"{INTERCEPTOR_SERVICE}.{INTERCEPTOR_NAMESPACE}.svc.{cluster_domain}",
                 "ports": [{"name": "http", "port": INTERCEPTOR_PORT, "protocol": "TCP"}]},
    })


def wake_objects(spec: LLMServiceSpec, plan: Plan, instance: str, namespace: str,
                 uid: str | None, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> list[dict[str, Any]]:
    if spec.autoscaling.mode != AutoscalingMode.KEDA_HTTP:
        return []
    return [interceptor_alias(instance, namespace, uid, cluster_domain),
            http_scaled_object(spec, plan, instance, namespace, uid, cluster_domain)]
