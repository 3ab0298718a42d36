"""The serving workload (Triton or DJL Serving) and its Service, for one node per replica."""

from __future__ import annotations

import json
from typing import Any

from ..api import API_VERSION, LLMServiceSpec, ServerKind
from ..planner import GPU, Plan
from ..toolchain import DJL_IMAGE, RUNTIME_IMAGE
from .engine import Engine
from .meta import (ENGINE_KEY_ANNOTATION, LABEL_ENGINE, child_name, labels, owner_reference,
                   selector, stamp)
from .pod import (CACHE_MOUNT, gpu_scheduling, restricted_container_security,
                  restricted_pod_security, shm_volume, tmp_volume)

__all__ = ["SERVE_SPEC_ENV", "PORTS", "server_name", "deployment", "service", "endpoint"]

SERVE_SPEC_ENV = "KILN_SERVE_SPEC"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
DJL_PORT = 8080
# Long enough for the longest generation to finish after readiness drops.
TERMINATION_GRACE_SECONDS = 180


def server_name(instance: str) -> str:
    return child_name(instance, "server")


def endpoint(instance: str, namespace: str) -> str:
    return f"http://{server_name(instance)}.{namespace}.svc:{PORTS['http']}"


def _owner(instance: str, uid: str | None) -> list[dict[str, Any]]:
    return [owner_reference(API_VERSION, "LLMService", instance, uid)] if uid else []


def serve_spec(spec: LLMServiceSpec, plan: Plan, engine: Engine) -> dict[str, Any]:
    """The JSON `kiln-runtime serve` reads: where the engine is and how to run it."""
    return {
        "engineDir": engine.path,
        "engineKey": engine.key,
        "tensorParallel": plan.tensor_parallel,
        "pipelineParallel": plan.pipeline_parallel,
        "maxBatchSize": spec.engine.max_batch_size,
        "kvCacheFreeGpuMemFraction": spec.engine.kv_cache_free_gpu_mem_fraction,
        "decoupled": True,
        "ports": PORTS,
        **({"gpuWeightsPercent": plan.gpu_weights_percent}
           if plan.gpu_weights_percent is not None else {}),
    }


def _probe(path: str, port: int | str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period,
            "failureThreshold": failures, "timeoutSeconds": 5}


def _triton_container(spec: LLMServiceSpec, plan: Plan, engine: Engine) -> dict[str, Any]:
    return {
        "name": "server",
        "image": spec.runtime.image or RUNTIME_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kiln-runtime", "serve"],
        "env": [{"name": SERVE_SPEC_ENV,
                 "value": json.dumps(serve_spec(spec, plan, engine), sort_keys=True,
                                     separators=(",", ":"))}],
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"}
                  for name, port in PORTS.items()],
        # Loading an engine takes minutes: the startup probe allows 30 of them, and passes
        # only once one real generation comes back through the ensemble.
        "startupProbe": {"exec": {"command": ["kiln-runtime", "smoke", "--url",
                                              f"localhost:{PORTS['grpc']}", "--max-tokens", "2"]},
                         "periodSeconds": 15, "failureThreshold": 120, "timeoutSeconds": 60},
        "readinessProbe": _probe("/v2/health/ready", "http", 5, 3),
        "livenessProbe": _probe("/v2/health/live", "http", 10, 6),
        # Readiness drops first, then in-flight generations get time to finish.
        "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},
    }


def _djl_container(spec: LLMServiceSpec, plan: Plan, engine: Engine) -> dict[str, Any]:
    env = {
        "OPTION_MODEL_ID": engine.path,
        "OPTION_ROLLING_BATCH": "trtllm",
        "OPTION_TENSOR_PARALLEL_DEGREE": str(plan.tensor_parallel),
        "OPTION_PIPELINE_PARALLEL_DEGREE": str(plan.pipeline_parallel),
        "OPTION_MAX_ROLLING_BATCH_SIZE": str(spec.engine.max_batch_size),
        "OPTION_KV_CACHE_FREE_GPU_MEM_FRACTION": str(spec.engine.kv_cache_free_gpu_mem_fraction),
        "SERVING_PROMETHEUS": "true",
    }
    return {
        "name": "server",
        "image": spec.runtime.image or DJL_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"name": "http", "containerPort": DJL_PORT, "protocol": "TCP"}],
        "startupProbe": _probe("/ping", "http", 10, 180),
        "readinessProbe": _probe("/ping", "http", 5, 3),
        "livenessProbe": _probe("/ping", "http", 10, 6),
        "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},
    }


def deployment(spec: LLMServiceSpec, plan: Plan, engine: Engine, gpu: GPU, instance: str,
               namespace: str, replicas: int, owner_uid: str | None) -> dict[str, Any]:
    container = (_djl_container if spec.runtime.server == ServerKind.DJL
                 else _triton_container)(spec, plan, engine)
    container["resources"] = {"requests": {"cpu": "4", "memory": "32Gi",
                                           spec.gpu.resource_name: str(spec.gpus)},
                              "limits": {spec.gpu.resource_name: str(spec.gpus)}}
    container["securityContext"] = restricted_container_security()
    container["volumeMounts"] = [
        {"name": "engine-cache", "mountPath": CACHE_MOUNT, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    pod_labels = {**labels(instance, "server"), LABEL_ENGINE: engine.name}
    return stamp({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": server_name(instance), "namespace": namespace,
                     "labels": labels(instance, "server"),
                     "annotations": {ENGINE_KEY_ANNOTATION: engine.key},
                     "ownerReferences": _owner(instance, owner_uid)},
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
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "containers": [container],
                    "volumes": [
                        {"name": "engine-cache", "persistentVolumeClaim": {
                            "claimName": engine.spec.cache.claim_name, "readOnly": True}},
                        shm_volume("16Gi"),
                        tmp_volume(),
                    ],
                    **gpu_scheduling(gpu, spec.gpu.resource_name),
                },
            },
        },
    })


def service(spec: LLMServiceSpec, instance: str, namespace: str,
            owner_uid: str | None) -> dict[str, Any]:
    djl = spec.runtime.server == ServerKind.DJL
    ports = [{"name": "http", "port": PORTS["http"], "targetPort": "http", "protocol": "TCP"}]
    if not djl:
        ports += [{"name": name, "port": PORTS[name], "targetPort": name, "protocol": "TCP"}
                  for name in ("grpc", "metrics")]
    return stamp({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": server_name(instance), "namespace": namespace,
                     "labels": labels(instance, "server"),
                     "ownerReferences": _owner(instance, owner_uid)},
        "spec": {"type": "ClusterIP", "selector": selector(instance, "server"), "ports": ports},
    })
