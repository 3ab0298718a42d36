"""Exposure through the Gateway API (``spec.gateway``): an HTTPRoute on the platform's
Gateway, an InferencePool of the serving pods, and the pool's endpoint picker (EPP).

What each object is, from kubernetes-sigs/gateway-api-inference-extension v1.5.0 (the last
release that publishes an endpoint picker; ``kiln.toolchain.EPP_IMAGE``):

- ``InferencePool`` (``inference.networking.k8s.io/v1``): the serving pods by label, the
  OpenAI port as target port, and ``endpointPickerRef`` to the EPP Service's gRPC port 9002.
- The EPP Deployment follows the project's ``config/charts/inferencepool`` chart at v1.5.0
  (``config/charts/epplib/templates/_deployment.yaml``, ``_config.yaml``, and the pool
  chart's ``rbac.yaml``): ``--pool-name``, ``--pool-namespace``, ``--config-file`` with the
  chart's plugins for ``modelServerType: triton-tensorrt-llm`` (queue, KV-cache-utilization
  and prefix-cache scorers; the metrics data source and its extractor with Triton's engine
  config). The chart also passes the older metric flags for Triton, which the v1.5.0 binary
  refuses (``pkg/epp/server/options.go``, ``Validate``); they are not passed here. It
  scrapes ``/metrics`` on the target port, which Triton's OpenAI frontend serves. Its Role
  reads pods and InferencePools, and InferenceObjectives and InferenceModelRewrites
  (``inference.networking.x-k8s.io``) as the chart's ``rbac.yaml`` grants: the picker
  watches them when their CRDs are installed (its controller config discovers them), and
  without the right it never becomes ready (istio/istio.io #17528);
  ``--metrics-endpoint-auth=false`` spares it the chart's cluster-wide
  TokenReview/SubjectAccessReview rights. All of it is run in the tests: the picker built
  from its Go module (``tests/gateway``) against a real API server.
- ``HTTPRoute`` (``gateway.networking.k8s.io/v1``): ``/v1`` requests whose
  ``X-Gateway-Model-Name`` header (set from the body's ``model`` by the project's
  body-based router, ``pkg/bbr``) is the served model name go to the pool.

- ``DestinationRule`` (``networking.istio.io/v1``), where the platform runs Istio
  (``Platform.gateway_provider``): the picker serves its gRPC over TLS with a self-signed
  certificate (``--secure-serving`` defaults to true, ``pkg/epp/server/options.go``), and
  Istio's proxies dial a Service in plaintext unless a DestinationRule says otherwise; the
  project's chart adds this one for ``provider.name: istio``
  (``config/charts/inferencepool/templates/istio.yaml``): TLS ``SIMPLE``, the certificate not
  verified (``insecureSkipVerify``, as the chart's default traffic policy), for the picker's
  Service.

No InferenceObjective is rendered: a request's priority keeps its default.
"""

from __future__ import annotations

from typing import Any

from kiln_runtime.triton_repo import STATS_PERIOD_MS

from ..api import LLMServiceSpec
from ..toolchain import EPP_IMAGE
from .meta import child_name, labels, owned_by, selector, stamp
from .platform import DEFAULT_PLATFORM, Platform
from .pod import restricted_container_security
from .serving import PORTS, served_model_name, server_name

__all__ = ["gateway_objects", "pool_name", "epp_name", "route_name", "INFERENCE_POOL_API", "HTTP_ROUTE_API",
           "DESTINATION_RULE_API", "EPP_PORT", "MODEL_HEADER"]

INFERENCE_POOL_API = "inference.networking.k8s.io/v1"
HTTP_ROUTE_API = "gateway.networking.k8s.io/v1"
DESTINATION_RULE_API = "networking.istio.io/v1"
EPP_PORT = 9002          # ext-proc gRPC (the chart's grpc port)
EPP_HEALTH_PORT = 9003   # gRPC health
EPP_METRICS_PORT = 9090
MODEL_HEADER = "X-Gateway-Model-Name"
EPP_CONFIG_FILE = "default-plugins.yaml"
# The chart's default-plugins.yaml (config/charts/epplib/templates/_config.yaml @ v1.5.0) for
# modelServerType triton-tensorrt-llm: the metrics come from the data layer, whose extractor
# reads Triton's series by its built-in engine config ("triton-tensorrt-llm" in
# pkg/epp/framework/plugins/datalayer/extractor/metrics/factories.go: nv_trt_llm_request_metrics
# waiting and scheduled, nv_trt_llm_kv_cache_block_metrics fraction, tokens_per and max). Left
# out, the loader adds both with the vLLM engine (config/loader/defaults.go, ensureDataLayer),
# whose series Triton does not have.
EPP_PLUGINS = """apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: metrics-data-source
  parameters:
    scheme: "http"
    path: "/metrics"
    insecureSkipVerify: true
- type: core-metrics-extractor
  parameters:
    defaultEngine: "triton-tensorrt-llm"
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
"""
# Long enough for a generation in flight to finish (the serving pods' grace period, and a
# multi-rank replica's drain, are longer: render.serving.TERMINATION_GRACE_SECONDS).
ROUTE_TIMEOUT = "300s"


def pool_name(instance: str) -> str:
    return child_name(instance, "pool")


def epp_name(instance: str) -> str:
    return child_name(instance, "epp")


def route_name(instance: str) -> str:
    return child_name(instance, "openai")


def _meta(name: str, instance: str, namespace: str, owner_uid: str | None,
          component: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(instance, component),
            **owned_by(instance, owner_uid)}


def _epp(instance: str, namespace: str, owner_uid: str | None) -> list[dict[str, Any]]:
    name = epp_name(instance)

    def meta() -> dict[str, Any]:
        return _meta(name, instance, namespace, owner_uid, "epp")

    pod_selector = selector(instance, "epp")
    container = {
        "name": "epp", "image": EPP_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["--pool-name", pool_name(instance), "--pool-namespace", namespace,
                 "--zap-encoder", "json", "--config-file", f"/config/{EPP_CONFIG_FILE}",
                 # No metric flags: v1.5.0 refuses every one it names, "deprecated and cannot be
                 # used; configure metrics via engineConfigs in EndpointPickerConfig instead"
                 # (pkg/epp/server/options.go, Validate), and never starts; the plugins above
                 # name Triton's series.
                 # The engine's gauges change once per stats period (kiln_runtime.triton_repo,
                 # stats_check_period_ms 100), and the page is made by the serving pod's Python
                 # frontend on every GET: the picker's 50 ms default read each change twice.
                 "--refresh-metrics-interval", f"{STATS_PERIOD_MS}ms",
                 "--tracing=false", "--metrics-endpoint-auth=false"],
        "ports": [{"name": "grpc", "containerPort": EPP_PORT, "protocol": "TCP"},
                  {"name": "grpc-health", "containerPort": EPP_HEALTH_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": EPP_METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {"grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"},
                          "initialDelaySeconds": 5, "periodSeconds": 10},
        "readinessProbe": {"grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"},
                           "periodSeconds": 2},
        "env": [{"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
        "securityContext": restricted_container_security() | {"readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "plugins-config", "mountPath": "/config", "readOnly": True}],
    }
    return [
        stamp({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(),
               "automountServiceAccountToken": True}),
        stamp({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
               "rules": [{"apiGroups": [""], "resources": ["pods"],
                          "verbs": ["get", "list", "watch"]},
                         {"apiGroups": ["inference.networking.k8s.io"],
                          "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
                         {"apiGroups": ["inference.networking.x-k8s.io"],
                          "resources": ["inferenceobjectives", "inferencemodelrewrites"],
                          "verbs": ["get", "list", "watch"]}]}),
        stamp({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": meta(),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}),
        stamp({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(),
               "data": {EPP_CONFIG_FILE: EPP_PLUGINS}}),
        stamp({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(), "spec": {
            "replicas": 1,
            # One active picker: its prefix-cache state lives in memory (the chart's reason).
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": pod_selector},
            "template": {"metadata": {"labels": labels(instance, "epp")}, "spec": {
                "serviceAccountName": name,
                # Restricted Pod Security; an explicit uid, so that runAsNonRoot holds whatever
                # user the image names (65532, distroless's nonroot).
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "terminationGracePeriodSeconds": 130,
                "containers": [container],
                "volumes": [{"name": "plugins-config", "configMap": {"name": name}}]}}}}),
        stamp({"apiVersion": "v1", "kind": "Service", "metadata": meta(), "spec": {
            "type": "ClusterIP", "selector": pod_selector,
            "ports": [{"name": "grpc-ext-proc", "port": EPP_PORT, "targetPort": "grpc",
                       "protocol": "TCP", "appProtocol": "http2"},
                      # The chart's epp-service.yaml: where a ServiceMonitor reads the picker.
                      {"name": "http-metrics", "port": EPP_METRICS_PORT, "targetPort": "metrics",
                       "protocol": "TCP"}]}}),
    ]


def _destination_rule(instance: str, namespace: str, owner_uid: str | None,
                      cluster_domain: str) -> dict[str, Any]:
    name = epp_name(instance)
    return stamp({
        "apiVersion": DESTINATION_RULE_API, "kind": "DestinationRule",
        "metadata": _meta(name, instance, namespace, owner_uid, "epp"),
        "spec": {"host": f"{name}.{namespace}.svc.{cluster_domain}",
                 "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}},
    })


def gateway_objects(spec: LLMServiceSpec, instance: str, namespace: str, owner_uid: str | None,
                    platform: Platform = DEFAULT_PLATFORM) -> list[dict[str, Any]]:
    """The objects for ``spec.gateway``, in the order they are applied; [] when it is unset."""
    if spec.gateway is None:
        return []
    pool = pool_name(instance)
    inference_pool = stamp({
        "apiVersion": INFERENCE_POOL_API, "kind": "InferencePool",
        "metadata": _meta(pool, instance, namespace, owner_uid, "server"),
        "spec": {"selector": {"matchLabels": selector(instance, "server")},
                 "targetPorts": [{"number": PORTS["openai"]}],
                 "endpointPickerRef": {"name": epp_name(instance), "kind": "Service",
                                       "port": {"number": EPP_PORT}, "failureMode": "FailClose"}},
    })
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": spec.gateway.name,
              **({"namespace": spec.gateway.namespace} if spec.gateway.namespace else {})}
    route = stamp({
        "apiVersion": HTTP_ROUTE_API, "kind": "HTTPRoute",
        "metadata": _meta(route_name(instance), instance, namespace, owner_uid, "server"),
        "spec": {"parentRefs": [parent], "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": "/v1"},
                         "headers": [{"type": "Exact", "name": MODEL_HEADER,
                                      "value": served_model_name(spec, instance)}]}],
            "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                             "name": pool}],
            "timeouts": {"request": ROUTE_TIMEOUT}}, {
            # OpenAI's "retrieve model": a GET has no body, so the body-based router sets no
            # model header; the model is in the path. To the Service, past the picker, which
            # has nothing to weigh (Triton's frontend: GET /v1/models/{model_name},
            # openai_frontend/frontend/fastapi/routers/models.py).
            "matches": [{"method": "GET", "path": {
                "type": "Exact", "value": f"/v1/models/{served_model_name(spec, instance)}"}}],
            "backendRefs": [{"kind": "Service", "name": server_name(instance),
                             "port": PORTS["openai"]}]}]},
    })
    istio = ([_destination_rule(instance, namespace, owner_uid, platform.cluster_domain)]
             if platform.gateway_provider == "istio" else [])
    return _epp(instance, namespace, owner_uid) + istio + [inference_pool, route]
