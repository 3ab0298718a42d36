"""The serving workload and its Service: a Deployment when a replica fits on one node
(Triton or DJL Serving), a LeaderWorkerSet when it spans nodes (Triton, one group of
``gpus / perNode`` pods per replica; see kiln_runtime.group for the launch)."""

from __future__ import annotations

import json
from typing import Any

from kiln_runtime.alive import GENERATION_TIMEOUT
from kiln_runtime.drain import DRAIN_SECONDS
from kiln_runtime.triton_repo import TRITON_MODELS

from ..api import AutoscalingMode, LLMServiceSpec, ServerKind
from ..errors import SpecInvalid
from ..planner import GPU, Plan
from ..toolchain import DJL_IMAGE, DJL_LOG_DIR, NGC_ENTRYPOINT, RUNTIME_IMAGE
from .engine import Engine
from .meta import (ENGINE_KEY_ANNOTATION, LABEL_ENGINE, LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY,
                   child_name, labels, owned_by, selector, stamp)
from .network import with_network
from .pod import (CACHE_MOUNT, HOST_CPU, HOST_MEMORY, gpu_scheduling, restricted_container_security,
                  restricted_pod_security, shm_volume, tmp_volume)

__all__ = ["SERVE_SPEC_ENV", "PORTS", "server_name", "group_name", "launcher_name", "multi_node",
           "workload", "workload_ref", "service_accounts", "network_policy", "OPERATOR_POD_LABEL",
           "deployment", "leader_worker_set", "service", "endpoint", "openai_endpoint",
           "served_model_name", "LWS_API_VERSION"]

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
# Pod names in a group are <group>-<index> and <group>-<index>-<worker>; a hostname is at most
# 63 characters, so the LeaderWorkerSet's own name stays well below that.
_GROUP_NAME_LIMIT = 48

SERVE_SPEC_ENV = "KILN_SERVE_SPEC"
# http/grpc: Triton's KServe endpoints; metrics: Triton's metrics page; openai: Triton's
# OpenAI-compatible frontend (9000 is its own default, openai_frontend/main.py).
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002, "openai": 9000}
# Groups a LeaderWorkerSet's rolling update runs beside its replicas (maxSurge): LWS gives them
# the indices after the replicas' ("bursted replicas", index >= spec.replicas: kubernetes-sigs/lws
# pkg/controllers/leaderworkerset_controller.go, updateConditions), so the launcher's Role
# names their workers too.
ROLLOUT_SURGE_GROUPS = 1
DJL_PORT = 8080
# Where KEDA's HTTP add-on runs its interceptor (the chart's install namespace, which
# render.wake's alias names), which keda-http mode's NetworkPolicy admits.
INTERCEPTOR_NAMESPACE = "keda"
# The serving container's preStop sleep: the pod leaves the Service's endpoints before its
# server hears SIGTERM.
PRE_STOP_SECONDS = 15
# The preStop sleep, then the longest a request may take to finish (a multi-rank replica waits
# for them before its mpirun stops: kiln_runtime.drain), and 15 s for the ranks to stop.
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + int(DRAIN_SECONDS) + 15
# (periodSeconds, failureThreshold) of every server's readiness and liveness probes.
READINESS = (5, 3)
LIVENESS = (10, 6)
# kiln-runtime alive: period, failures; its timeout covers the generation it may send and two
# reads of the metrics page.
LIVENESS_EXEC = (30, 3)
LIVENESS_EXEC_TIMEOUT = int(GENERATION_TIMEOUT) + 15


def server_name(instance: str) -> str:
    return child_name(instance, "server")


def group_name(instance: str) -> str:
    """The LeaderWorkerSet (and the headless Service LWS creates for its pods)."""
    return child_name(instance, "group", _GROUP_NAME_LIMIT)


def launcher_name(instance: str) -> str:
    return child_name(instance, "launcher")


def multi_node(spec: LLMServiceSpec) -> bool:
    return spec.gpus > spec.gpu.per_node


def workload_ref(spec: LLMServiceSpec, instance: str) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of the object whose replicas are the service's replicas."""
    if multi_node(spec):
        return LWS_API_VERSION, "LeaderWorkerSet", group_name(instance)
    return "apps/v1", "Deployment", server_name(instance)


def endpoint(instance: str, namespace: str) -> str:
    return f"http://{server_name(instance)}.{namespace}.svc:{PORTS['http']}"


def openai_endpoint(spec: LLMServiceSpec, instance: str, namespace: str) -> str | None:
    """The in-cluster base URL of the OpenAI-compatible API (Triton only)."""
    if spec.runtime.server == ServerKind.DJL:
        return None
    return f"http://{server_name(instance)}.{namespace}.svc:{PORTS['openai']}/v1"


def served_model_name(spec: LLMServiceSpec, instance: str) -> str:
    return spec.served_model_name or instance


def serve_spec(spec: LLMServiceSpec, plan: Plan, engine: Engine, instance: str) -> dict[str, Any]:
    """The JSON `kiln-runtime serve` reads: where the engine is and how to run it."""
    served = served_model_name(spec, instance)
    if served in TRITON_MODELS:
        # The served name is a directory of the model repository, beside these (the runtime
        # refuses it too, at the pod's start; here the service stalls saying what to set).
        given = "" if spec.served_model_name else " (the LLMService's name, its default)"
        raise SpecInvalid(f"spec.servedModelName: {served!r}{given} is the name of one of the Triton models "
                          f"Kiln serves the engine with ({', '.join(TRITON_MODELS)}); set spec.servedModelName "
                          "to another name")
    group = {"gpusPerNode": spec.gpu.per_node} if multi_node(spec) else {}
    return {
        **group,
        "engineDir": engine.path,
        "engineKey": engine.key,
        "tensorParallel": plan.tensor_parallel,
        "pipelineParallel": plan.pipeline_parallel,
        "maxBatchSize": spec.engine.max_batch_size,
        "kvCacheFreeGpuMemFraction": spec.engine.kv_cache_free_gpu_mem_fraction,
        "decoupled": True,
        "ports": PORTS,
        "servedModelName": served,
        **({"gpuWeightsPercent": plan.gpu_weights_percent}
           if plan.gpu_weights_percent is not None else {}),
    }


def _probe(path: str, port: int | str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": 5}


def _triton_container(spec: LLMServiceSpec, plan: Plan, engine: Engine, instance: str,
                      role: str | None = None) -> dict[str, Any]:
    return {
        "name": "server",
        "image": spec.runtime.image or RUNTIME_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        # Through the image's entrypoint (CUDA forward compatibility; kiln_runtime.image).
        "command": [NGC_ENTRYPOINT, "kiln-runtime", "serve", *([f"--role={role}"] if role else [])],
        # Never the image's root-owned /opt/tritonserver: anything relative lands in /tmp.
        "workingDir": "/tmp",
        "env": [{"name": SERVE_SPEC_ENV,
                 "value": json.dumps(serve_spec(spec, plan, engine, instance), sort_keys=True,
                                     separators=(",", ":"))},
                # uid 1000 is the image's triton-server, made by a plain `useradd` (no home
                # directory; triton-inference-server/server build.py): $HOME, where transformers
                # keeps a remote-code tokenizer's modules, goes to the /tmp emptyDir.
                {"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"}
                  for name, port in PORTS.items()],
        # Loading an engine takes minutes: the startup probe allows 30 of them, and passes
        # only once one real generation comes back through the OpenAI endpoint.
        "startupProbe": {"exec": {"command": [
            "kiln-runtime", "smoke", "--openai-url", f"http://localhost:{PORTS['openai']}/v1",
            "--model", served_model_name(spec, instance), "--max-tokens", "2"]},
                         "periodSeconds": 15, "failureThreshold": 120, "timeoutSeconds": 60},
        # The frontend's own route (frontend/fastapi/routers/observability.py): Triton's
        # readiness.
        "readinessProbe": _probe("/health/ready", "openai", *READINESS),
        # A wedged engine keeps every HTTP route answering: liveness reads whether the
        # executor still iterates, and when it has not for STALL_SECONDS, whether a two-token
        # generation comes back (kiln_runtime.alive). Restarted within about STALL_SECONDS +
        # LIVENESS_EXEC's period × failures of the engine's last iteration.
        "livenessProbe": {"exec": {"command": ["kiln-runtime", "alive"]},
                          "periodSeconds": LIVENESS_EXEC[0], "failureThreshold": LIVENESS_EXEC[1],
                          "timeoutSeconds": LIVENESS_EXEC_TIMEOUT},
        # Readiness drops first, then in-flight generations get time to finish.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }


def _djl_container(spec: LLMServiceSpec, plan: Plan, engine: Engine,
                   instance: str) -> dict[str, Any]:
    env = {
        # The server registers a model at start from HF_MODEL_ID (a local path is taken as the
        # model's directory: djl-serving ModelStore.initialize, createHuggingFaceModel); with
        # the model store empty and no HF_MODEL_ID it starts with no model, and /ping answers
        # 200 all the same. OPTION_* become that model's option.* (ModelInfo).
        "HF_MODEL_ID": engine.path,
        "OPTION_MODEL_ID": engine.path,
        "OPTION_ROLLING_BATCH": "trtllm",
        "OPTION_TENSOR_PARALLEL_DEGREE": str(plan.tensor_parallel),
        "OPTION_PIPELINE_PARALLEL_DEGREE": str(plan.pipeline_parallel),
        # The LLM-API handler's properties read pipeline_parallel_size in some versions
        # (djl_python/properties_manager/trt_properties.py); each handler ignores the other's
        # name (extra keys are allowed).
        "OPTION_PIPELINE_PARALLEL_SIZE": str(plan.pipeline_parallel),
        "OPTION_MAX_ROLLING_BATCH_SIZE": str(spec.engine.max_batch_size),
        "OPTION_KV_CACHE_FREE_GPU_MEM_FRACTION": str(spec.engine.kv_cache_free_gpu_mem_fraction),
        # The same under the name the LLM-API handler reads (djl_python trt_properties:
        # free_gpu_memory_fraction); each handler ignores the other's.
        "OPTION_FREE_GPU_MEMORY_FRACTION": str(spec.engine.kv_cache_free_gpu_mem_fraction),
        "SERVING_PROMETHEUS": "true",
        # uid 1000 has no home in the DJL image (its user is djl); anything written under
        # $HOME goes to the /tmp emptyDir.
        "HOME": "/tmp",
    }
    return {
        "name": "server",
        "image": spec.runtime.image or DJL_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": DJL_PORT, "protocol": "TCP"}],
        "startupProbe": _probe("/ping", "http", 10, 180),
        "readinessProbe": _probe("/ping", "http", *READINESS),
        "livenessProbe": _probe("/ping", "http", *LIVENESS),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
    }


def _finish_container(container: dict[str, Any], spec: LLMServiceSpec, gpus: int) -> dict[str, Any]:
    djl = spec.runtime.server == ServerKind.DJL
    container["resources"] = {"requests": {"cpu": HOST_CPU, "memory": HOST_MEMORY,
                                           spec.gpu.resource_name: str(gpus)},
                              "limits": {spec.gpu.resource_name: str(gpus)}}
    container["securityContext"] = restricted_container_security()
    # A server that exits with an error leaves the tail of its log (kiln-runtime's error line,
    # or the server's last words) as its termination message, which the service's rollout
    # message quotes (kubernetes.io/docs/tasks/debug/debug-application/
    # determine-reason-pod-failure: the log's last 2,048 bytes or 80 lines, whichever is
    # smaller; Knative's serving container is rendered the same way).
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["volumeMounts"] = [
        {"name": "engine-cache", "mountPath": CACHE_MOUNT, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        # The DJL image runs as root with /opt/djl owned by its djl user; as uid 1000 the
        # server can write only its log directory, given here as an emptyDir.
        *([{"name": "djl-logs", "mountPath": DJL_LOG_DIR}] if djl else []),
    ]
    return container


def _volumes(engine: Engine) -> list[dict[str, Any]]:
    return [{"name": "engine-cache", "persistentVolumeClaim": {
                "claimName": engine.spec.cache.claim_name, "readOnly": True}},
            shm_volume(), tmp_volume(),
            *([{"name": "djl-logs", "emptyDir": {}}] if engine.spec.server == ServerKind.DJL
              else [])]


def _workload_meta(name: str, instance: str, namespace: str, engine: Engine,
                   owner_uid: str | None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(instance, "server"),
            "annotations": {ENGINE_KEY_ANNOTATION: engine.key},
            **owned_by(instance, owner_uid)}


def workload(spec: LLMServiceSpec, plan: Plan, engine: Engine, gpu: GPU, instance: str,
             namespace: str, replicas: int, owner_uid: str | None) -> dict[str, Any]:
    make = leader_worker_set if multi_node(spec) else deployment
    return make(spec, plan, engine, gpu, instance, namespace, replicas, owner_uid)


def deployment(spec: LLMServiceSpec, plan: Plan, engine: Engine, gpu: GPU, instance: str,
               namespace: str, replicas: int, owner_uid: str | None) -> dict[str, Any]:
    container = _finish_container((_djl_container if spec.runtime.server == ServerKind.DJL
                                   else _triton_container)(spec, plan, engine, instance),
                                  spec, spec.gpus)
    pod_labels = {**labels(instance, "server"), LABEL_ENGINE: engine.name}
    return stamp({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _workload_meta(server_name(instance), instance, namespace, engine, owner_uid),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(instance, "server")},
            # A new replica must be serving before an old one goes: no capacity dip.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels,
                             "annotations": {ENGINE_KEY_ANNOTATION: engine.key}},
                "spec": {
                    "securityContext": restricted_pod_security(),
                    "serviceAccountName": server_name(instance),
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "containers": [container],
                    "volumes": _volumes(engine),
                    **gpu_scheduling(gpu, spec.gpu.resource_name),
                },
            },
        },
    })


def leader_worker_set(spec: LLMServiceSpec, plan: Plan, engine: Engine, gpu: GPU, instance: str,
                      namespace: str, replicas: int, owner_uid: str | None) -> dict[str, Any]:
    """One replica = one group of ``gpus / perNode`` pods, started, restarted and scaled
    together. The leader (rank 0 and its node's ranks) serves; the workers host the rest."""
    per_node = spec.gpu.per_node
    size = spec.gpus // per_node
    env = [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}]

    def template(role: str) -> dict[str, Any]:
        container = with_network(_finish_container(
            _triton_container(spec, plan, engine, instance, role), spec, per_node), spec)
        leader = role == "leader"
        # The leader checks each worker pod against these before it execs into it.
        container["env"] = container["env"] + env + (_LEADER_IDENTITY if leader else [])
        if not leader:  # ranks arrive through the leader's mpirun; nothing to probe or expose
            for key in ("ports", "startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
                container.pop(key)
        component = "server" if leader else "worker"
        return {
            "metadata": {"labels": {**labels(instance, component), LABEL_ENGINE: engine.name},
                         "annotations": {ENGINE_KEY_ANNOTATION: engine.key}},
            "spec": {
                "securityContext": restricted_pod_security(),
                # Only the leader talks to the API (kubectl exec into its workers).
                "serviceAccountName": launcher_name(instance) if leader else server_name(instance),
                "automountServiceAccountToken": leader,
                "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                "containers": [container],
                "volumes": _volumes(engine),
                **gpu_scheduling(gpu, spec.gpu.resource_name),
            },
        }

    return stamp({
        "apiVersion": LWS_API_VERSION,
        "kind": "LeaderWorkerSet",
        "metadata": _workload_meta(group_name(instance), instance, namespace, engine, owner_uid),
        "spec": {
            "replicas": replicas,
            "startupPolicy": "LeaderCreated",
            # A new group must be serving before an old one goes.
            "rolloutStrategy": {"type": "RollingUpdate", "rollingUpdateConfiguration": {
                "maxSurge": ROLLOUT_SURGE_GROUPS, "maxUnavailable": 0}},
            "networkConfig": {"subdomainPolicy": "Shared"},
            "leaderWorkerTemplate": {
                "size": size,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": template("leader"),
                "workerTemplate": template("worker"),
            },
        },
    })


_LEADER_IDENTITY = [
    {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
    {"name": "LWS_NAME", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/name']"}}},
    {"name": "LWS_GROUP_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.labels['leaderworkerset.sigs.k8s.io/group-index']"}}},
]


def _leader_pods(instance: str, groups: int) -> list[str]:
    return [f"{group_name(instance)}-{g}" for g in range(groups)]


def _worker_pods(instance: str, groups: int, size: int) -> list[str]:
    name = group_name(instance)
    return [f"{name}-{g}-{w}" for g in range(groups) for w in range(1, size)]


def _server_meta(instance: str, namespace: str, owner_uid: str | None) -> dict[str, Any]:
    """Metadata of the objects named after the serving pods (Service, ServiceAccount,
    NetworkPolicy)."""
    return {"name": server_name(instance), "namespace": namespace,
            "labels": labels(instance, "server"), **owned_by(instance, owner_uid)}


def service_accounts(spec: LLMServiceSpec, instance: str, namespace: str,
                     owner_uid: str | None) -> list[dict[str, Any]]:
    """The service's own ServiceAccount for its serving pods (no token mounted: they never
    call the API), and for a multi-node service the leader's, with a Role that lets it
    exec into its group's workers only: pods and pods/exec by name, for every group up to
    the most replicas the service may run and the groups a rolling update adds beside them."""
    objects = [stamp({"apiVersion": "v1", "kind": "ServiceAccount",
                      "metadata": _server_meta(instance, namespace, owner_uid),
                      "automountServiceAccountToken": False})]
    if not multi_node(spec):
        return objects
    groups = max(spec.replicas, spec.autoscaling.max_replicas) + ROLLOUT_SURGE_GROUPS
    pods = _worker_pods(instance, groups, spec.gpus // spec.gpu.per_node)
    name = launcher_name(instance)
    meta = {"name": name, "namespace": namespace, "labels": labels(instance, "launcher"),
            **owned_by(instance, owner_uid)}
    return objects + [
        stamp({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta),
               "automountServiceAccountToken": False}),
        stamp({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta),
               "rules": [
                   {"apiGroups": [""], "resources": ["pods"], "resourceNames": pods, "verbs": ["get"]},
                   # kubectl exec: create (SPDY, and WebSocket since Kubernetes 1.35), get
                   # (WebSocket on older API servers).
                   {"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": pods,
                    "verbs": ["create", "get"]},
                   # The worker StatefulSets (named after the leader pods): the leader checks
                   # that a pod it execs into is its own worker (kiln_runtime.group).
                   {"apiGroups": ["apps"], "resources": ["statefulsets"],
                    "resourceNames": _leader_pods(instance, groups), "verbs": ["get"]}]}),
        stamp({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": dict(meta),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
               "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}),
    ]


# The label the operator's pods carry (charts/kiln), so that a NetworkPolicy can let
# them, and only them, scrape the serving pods' metrics.
OPERATOR_POD_LABEL = ("kiln.dev/operator", "true")


def network_policy(spec: LLMServiceSpec, instance: str, namespace: str,
                   owner_uid: str | None) -> dict[str, Any] | None:
    """Ingress to the service's pods (see :class:`~kiln.api.NetworkPolicySpec`), or None
    when ``spec.networkPolicy.enabled`` is off."""
    policy = spec.network_policy
    if not policy.enabled:
        return None

    def namespaces(names: list[str]) -> list[dict[str, Any]]:
        return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
                for name in sorted(set(names))]

    def ports(*names: str) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": name} for name in names]

    djl = spec.runtime.server == ServerKind.DJL
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": dict([OPERATOR_POD_LABEL])}}
    # Who the spec itself sends requests through: its Gateway's namespace (its proxies, for
    # most implementations; Envoy Gateway's run in its controller's unless listed) and, with
    # keda-http, the add-on's interceptor.
    callers = [name for name in (
        spec.gateway.namespace if spec.gateway is not None else None,
        INTERCEPTOR_NAMESPACE if spec.autoscaling.mode == AutoscalingMode.KEDA_HTTP else None)
        if name and name != namespace]  # the pods of its own namespace are admitted already
    rules = [
        {"from": [{"podSelector": {}}, *namespaces([*policy.allowed_namespaces, *callers])],
         "ports": ports("http") if djl else ports("http", "grpc", "openai")},
        # DJL Serving has one port (HTTP), covered by the first rule.
        *([] if djl else [{"from": [operator, *namespaces(policy.metrics_namespaces)],
                           "ports": ports("metrics")}]),
        # The ranks of a multi-node replica: MPI and NCCL on ports chosen at run time.
        *([{"from": [{"podSelector": {"matchLabels": {LABEL_INSTANCE: instance}}}]}]
          if multi_node(spec) else []),
    ]
    return stamp({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _server_meta(instance, namespace, owner_uid),
        # The service's own pods: managed-by too, as a pod of the chart's (the operator's, the
        # model list's) carries instance=<release> and may share the service's name.
        "spec": {"podSelector": {"matchLabels": {LABEL_INSTANCE: instance, LABEL_MANAGED_BY: MANAGED_BY}},
                 "policyTypes": ["Ingress"], "ingress": rules},
    })


def disruption_budget(spec: LLMServiceSpec, instance: str, namespace: str,
                      owner_uid: str | None) -> dict[str, Any] | None:
    """At most one serving pod evicted at a time by a voluntary disruption (a node drain, the
    cluster autoscaler's scale-down): a drain of a node holding several replicas would
    otherwise take them all at once, each minutes from serving again. Never blocks a drain
    for good: one replica may always go, and a pod that is not Ready may go whatever the
    budget (``unhealthyPodEvictionPolicy: AlwaysAllow``, on by default from Kubernetes 1.27,
    GA in 1.31). None for a service that never has more than one replica (nothing to keep),
    and for a multi-node service: its group's pods go and come back together
    (LeaderWorkerSet), which a per-pod budget does not describe."""
    scaling = spec.autoscaling
    most = spec.replicas if scaling.mode == AutoscalingMode.NONE else max(spec.replicas, scaling.max_replicas)
    if multi_node(spec) or most < 2:
        return None
    return stamp({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _server_meta(instance, namespace, owner_uid),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(instance, "server")},
                 "unhealthyPodEvictionPolicy": "AlwaysAllow"},
    })


def service(spec: LLMServiceSpec, instance: str, namespace: str,
            owner_uid: str | None) -> dict[str, Any]:
    djl = spec.runtime.server == ServerKind.DJL
    ports = [{"name": "http", "port": PORTS["http"], "targetPort": "http", "protocol": "TCP"}]
    if not djl:
        ports += [{"name": name, "port": PORTS[name], "targetPort": name, "protocol": "TCP"}
                  for name in ("grpc", "metrics", "openai")]
    return stamp({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _server_meta(instance, namespace, owner_uid),
        "spec": {"type": "ClusterIP", "selector": selector(instance, "server"), "ports": ports},
    })
