"""The engine: its content key, its LLMEngine record and the Job that builds it."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from kiln_runtime import support

from ..api import API_VERSION, EngineCacheLocation, EngineShape, LLMEngineSpec, LLMServiceSpec, ServerKind
from ..api.llmservice import CREDENTIAL_KEYS
from ..planner import GPU, Plan
from ..planner.build import BuildPlan
from ..toolchain import (DJL_ENTRYPOINT, DJL_IMAGE, DJL_LOG_DIR, DJL_PARTITION_SCRIPT, NGC_ENTRYPOINT,
                         RUNTIME_IMAGE, toolchain_for)
from .meta import (LABEL_CACHE_NAMESPACE, LABEL_ENGINE, child_name, content_hash, labels, owned_by,
                   stamp)
from .platform import DEFAULT_PLATFORM, Platform
from .pod import (CACHE_MOUNT, HOST_CPU, HOST_MEMORY, gpu_scheduling, restricted_container_security,
                  restricted_pod_security, secret_env, shm_volume, tmp_volume)

__all__ = ["Engine", "engine_for", "engine_key", "cache_uri", "llm_engine", "build_job",
           "BUILD_SPEC_ENV"]

BUILD_SPEC_ENV = "KILN_BUILD_SPEC"
WORK_MOUNT = "/work"
SOURCE_MOUNT = "/model-source"
CALIBRATION_MOUNT = "/calibration-source"
BUILD_BACKOFF_LIMIT = 2
BUILD_TTL_SECONDS = 7 * 24 * 3600
BUILD_DEADLINE_SECONDS = 6 * 3600
# An LLMEngine's name is ``<model slug>-<digest>``; the name is also a label value (63
# characters at most). 80 bits of digest: inputs are user-chosen, and finding other inputs
# with the same name must be impractical (the operator also compares the full key before
# using a record, so a match is a conflict, never another engine served).
ENGINE_DIGEST_HEX = 20
_SLUG_MAX = 63 - 1 - ENGINE_DIGEST_HEX


@dataclass(frozen=True)
class Engine:
    """One content-addressed engine: its record's name, its key and where it lives."""

    name: str
    key: str
    spec: LLMEngineSpec

    @property
    def storage_uri(self) -> str:
        return cache_uri(self.spec.cache.namespace, self.spec.cache.claim_name, self.key)

    @property
    def path(self) -> str:
        """Where the engine is inside a pod that mounts the cache."""
        return f"{CACHE_MOUNT}/{self.key}"


def cache_uri(namespace: str, claim_name: str, key: str) -> str:
    """Where an engine's files live: its key, in its namespace's cache claim."""
    return f"pvc://{namespace}/{claim_name}/{key}"


def engine_key(inputs: dict[str, Any]) -> str:
    """sha256 over the inputs that change an engine's bytes, and nothing else."""
    return content_hash(inputs)


def _slug(source: str) -> str:
    name = source.split("://", 1)[1].rstrip("/").rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9-]+", "-", name).strip("-")[:_SLUG_MAX].strip("-") or "model"


def engine_for(spec: LLMServiceSpec, plan: Plan, gpu: GPU, namespace: str) -> Engine:
    """The engine a service needs. The key ignores runtime-only settings (KV memory fraction,
    replicas, autoscaling) so changing those never rebuilds."""
    limits = spec.engine
    inputs: dict[str, Any] = {
        "source": spec.model.source,
        "revision": spec.model.revision,
        "precision": spec.precision,
        "kvCacheDtype": plan.kv_cache_dtype.value,
        "tensorParallel": plan.tensor_parallel,
        "pipelineParallel": plan.pipeline_parallel,
        "gpuArch": gpu.arch,
        "toolchain": toolchain_for(spec.runtime.server),
        "limits": EngineShape(**limits.model_dump(exclude={"kv_cache_free_gpu_mem_fraction",
                                                            "weight_streaming"}),
                              weight_streaming=True if limits.weight_streaming else None).wire(),
    }
    # Both change the bytes of the engine's config.json or weights; absent, they leave the
    # keys of every single-node, usual-recipe engine as they were.
    gpus_per_node = spec.gpu.per_node if spec.gpus > spec.gpu.per_node else None
    recipe = plan.build.recipe if plan.build else None
    if gpus_per_node:
        inputs["gpusPerNode"] = gpus_per_node
    if recipe:
        inputs["checkpointRecipe"] = recipe
    # Only where quantize.py reads it: a set the build would not use must not split the cache.
    calibration = spec.model.calibration.source if spec.model.calibration and \
        support.calibrates(spec.precision, plan.kv_cache_dtype.value, recipe or "") == "quantize" else None
    if calibration:
        inputs["calibration"] = calibration
    key = engine_key(inputs)
    record = LLMEngineSpec(
        key=key,
        model_source=spec.model.source,
        revision=spec.model.revision,
        credentials_secret=spec.model.credentials.secret_name if spec.model.credentials else None,
        precision=spec.precision,
        kv_cache_dtype=plan.kv_cache_dtype,
        tensor_parallel=plan.tensor_parallel,
        pipeline_parallel=plan.pipeline_parallel,
        gpu_type=gpu.name,
        gpu_arch=gpu.arch,
        server=spec.runtime.server,
        toolchain=inputs["toolchain"],
        limits=inputs["limits"],
        cache=EngineCacheLocation(namespace=namespace, claim_name=spec.engine_cache.claim_name),
        gpus_per_node=gpus_per_node,
        calibration_source=calibration,
        checkpoint_recipe=recipe,
    )
    # The record's name also covers the cache it lives in: the same bytes in two namespaces'
    # caches are two records.
    name = f"{_slug(spec.model.source)}-{content_hash([key, namespace, spec.engine_cache.claim_name])[:ENGINE_DIGEST_HEX]}"
    return Engine(name=name, key=key, spec=record)


def llm_engine(engine: Engine, instance: str) -> dict[str, Any]:
    meta_labels = labels(instance, "engine")
    meta_labels[LABEL_ENGINE] = engine.name
    meta_labels[LABEL_CACHE_NAMESPACE] = engine.spec.cache.namespace
    return stamp({
        "apiVersion": API_VERSION,
        "kind": "LLMEngine",
        "metadata": {"name": engine.name, "labels": meta_labels},
        "spec": engine.spec.wire(),
    })


def work_dir(engine: Engine, build: BuildPlan | None) -> str:
    """The build's scratch: an emptyDir, or a directory on the cache volume when the download
    and checkpoint are larger than a node's ephemeral storage is likely to be."""
    return f"{CACHE_MOUNT}/.work/{engine.key}" if build and build.stage_on_cache else WORK_MOUNT


def _scheme(source: str) -> str:
    return source.split("://", 1)[0]


def _claim(source: str) -> str:
    return source.split("://", 1)[1].split("/", 1)[0]


def _calibration_mount(spec: LLMEngineSpec) -> str | None:
    """Where a pvc:// calibration set's claim is mounted: with the model's, when it is the
    same claim (one volume), else a mount of its own; None for no claim to mount."""
    source = spec.calibration_source
    if not source or not source.startswith("pvc://"):
        return None
    same = spec.model_source.startswith("pvc://") and _claim(spec.model_source) == _claim(source)
    return SOURCE_MOUNT if same else CALIBRATION_MOUNT


def _in_pod(source: str, mount: str) -> str:
    """A pvc://claim/path as the path the build container sees under ``mount``."""
    path = source.split("://", 1)[1].rstrip("/").split("/", 1)
    return f"{mount}/{path[1]}" if len(path) > 1 else mount


def build_spec(engine: Engine, build: BuildPlan | None = None) -> dict[str, Any]:
    """The JSON the build container reads from $KILN_BUILD_SPEC."""
    spec = engine.spec
    source = spec.model_source
    if source.startswith("pvc://"):
        source = _in_pod(source, SOURCE_MOUNT)
    calibration = spec.calibration_source
    mount = _calibration_mount(spec)
    if calibration and mount:
        calibration = _in_pod(calibration, mount)
    return {
        "engineKey": engine.key,
        "engineName": engine.name,
        "model": {"source": source, "revision": spec.revision},
        "precision": spec.precision,
        "kvCacheDtype": spec.kv_cache_dtype,
        "tensorParallel": spec.tensor_parallel,
        "pipelineParallel": spec.pipeline_parallel,
        "gpuArch": spec.gpu_arch,
        "toolchain": spec.toolchain,
        "limits": spec.limits.wire(),
        "cacheDir": CACHE_MOUNT,
        "workDir": work_dir(engine, build),
        **({"gpusPerNode": spec.gpus_per_node} if spec.gpus_per_node else {}),
        **({"checkpointRecipe": spec.checkpoint_recipe} if spec.checkpoint_recipe else {}),
        **({"calibration": {"source": calibration}} if calibration else {}),
    }


def _credentials_env(engine: Engine) -> list[dict[str, Any]]:
    """The Secret's keys for the model's store and the calibration set's (one Secret serves
    both: spec.model.credentials)."""
    secret = engine.spec.credentials_secret
    if not secret:
        return []
    keys: list[str] = []
    for source in (engine.spec.model_source, engine.spec.calibration_source or ""):
        keys += [key for key in CREDENTIAL_KEYS.get(_scheme(source), ()) if key not in keys]
    return [secret_env(key, secret, key) for key in keys]


def _gi(n: int) -> str:
    return f"{-(-n // 2**30)}Gi"


def build_job(engine: Engine, instance: str, namespace: str, gpu: GPU, gpu_resource: str,
              build_gpus: int, owner_uid: str | None,
              build: BuildPlan | None = None,
              platform: Platform = DEFAULT_PLATFORM) -> dict[str, Any]:
    """A Job that builds the engine into the cache; it runs on the serving GPU's architecture,
    sized from the model (``build``; the planner's :class:`~kiln.planner.build.BuildPlan`)."""
    spec_json = json.dumps(build_spec(engine, build), sort_keys=True, separators=(",", ":"))
    scratch = work_dir(engine, build)
    schemes = {_scheme(source) for source in (engine.spec.model_source, engine.spec.calibration_source or "")}
    if not engine.spec.calibration_source and support.calibrates(
            engine.spec.precision, engine.spec.kv_cache_dtype, engine.spec.checkpoint_recipe or ""):
        schemes.add("hf")  # the default calibration set is a Hub dataset
    env = [{"name": BUILD_SPEC_ENV, "value": spec_json},
           {"name": "HOME", "value": WORK_MOUNT},
           {"name": "HF_HOME", "value": f"{scratch}/hf"},
           *platform.env(schemes),
           *_credentials_env(engine)]
    staged = scratch != WORK_MOUNT
    work_volume: dict[str, Any] = {} if staged or not build else {"sizeLimit": _gi(build.scratch_bytes)}
    volumes = [
        {"name": "engine-cache", "persistentVolumeClaim": {"claimName": engine.spec.cache.claim_name}},
        {"name": "work", "emptyDir": work_volume},
        shm_volume(),
        tmp_volume(),
    ]
    mounts: list[dict[str, Any]] = [{"name": "engine-cache", "mountPath": CACHE_MOUNT},
              {"name": "work", "mountPath": WORK_MOUNT},
              {"name": "dshm", "mountPath": "/dev/shm"},
              {"name": "tmp", "mountPath": "/tmp"}]
    if engine.spec.model_source.startswith("pvc://"):
        volumes.append({"name": "model-source", "persistentVolumeClaim": {
            "claimName": _claim(engine.spec.model_source), "readOnly": True}})
        mounts.append({"name": "model-source", "mountPath": SOURCE_MOUNT, "readOnly": True})
    if _calibration_mount(engine.spec) == CALIBRATION_MOUNT:
        volumes.append({"name": "calibration-source", "persistentVolumeClaim": {
            "claimName": _claim(engine.spec.calibration_source or ""), "readOnly": True}})
        mounts.append({"name": "calibration-source", "mountPath": CALIBRATION_MOUNT, "readOnly": True})
    if engine.spec.calibration_source:
        # quantize.py's load_dataset reads the set Kiln copied to scratch; nothing it lacks is
        # fetched from the Hub (datasets' config.py reads HF_DATASETS_OFFLINE).
        env.append({"name": "HF_DATASETS_OFFLINE", "value": "1"})
    requests = {"cpu": HOST_CPU, "memory": _gi(build.memory_bytes) if build else HOST_MEMORY,
                gpu_resource: str(build_gpus)}
    if build and not staged:
        requests["ephemeral-storage"] = _gi(build.scratch_bytes)
    resources = {"requests": requests, "limits": {gpu_resource: str(build_gpus)}}
    runtime = {"name": "build", "image": RUNTIME_IMAGE, "imagePullPolicy": "IfNotPresent",
               # Through the image's entrypoint (CUDA forward compatibility; kiln_runtime.image).
               "command": [NGC_ENTRYPOINT, "kiln-runtime", "build"], "env": env, "volumeMounts": mounts,
               # Tools write relative paths (trtllm-build's timing cache); the image's own
               # working directory, /opt/tritonserver, is root-owned. (kiln-runtime creates
               # a scratch directory on the cache volume itself, as uid 1000.)
               "workingDir": WORK_MOUNT,
               "resources": resources, "securityContext": restricted_container_security(),
               # kiln-runtime writes its summary (the failing step and its last output lines)
               # to /dev/termination-log; if it dies before, the kubelet keeps the log's tail.
               "terminationMessagePolicy": "FallbackToLogsOnError"}
    if engine.spec.server == ServerKind.DJL:
        containers, init = _djl_build_containers(engine, runtime, scratch)
    else:
        containers, init = [runtime], []
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": restricted_pod_security(),
        "automountServiceAccountToken": False,
        "containers": containers,
        "volumes": volumes,
        **gpu_scheduling(gpu, gpu_resource),
    }
    if init:
        pod_spec["initContainers"] = init
        volumes.append({"name": "djl-logs", "emptyDir": {}})
    job_labels = {**labels(instance, "engine-build"), LABEL_ENGINE: engine.name}
    metadata: dict[str, Any] = {"name": child_name(engine.name, "build"), "namespace": namespace,
                                "labels": job_labels}
    metadata.update(owned_by(instance, owner_uid))
    return stamp({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": BUILD_BACKOFF_LIMIT,
            "ttlSecondsAfterFinished": BUILD_TTL_SECONDS,
            "activeDeadlineSeconds": BUILD_DEADLINE_SECONDS,
            "template": {"metadata": {"labels": dict(job_labels)}, "spec": pod_spec},
        },
    })


def _djl_build_containers(engine: Engine, runtime: dict[str, Any],
                          scratch: str) -> tuple[list[Any], list[Any]]:
    """DJL engines are built by DJL's own partition script, with the TensorRT-LLM it loads.

    kiln-runtime prepares (download + serving.properties) in an init container; the DJL image
    partitions into a staging directory that is renamed into the cache only when complete.
    """
    prepare = {**runtime, "name": "prepare",
               "command": ["kiln-runtime", "djl-properties", "--download",
                           "--out", f"{scratch}/properties"],
               "resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}
    staging = f"{CACHE_MOUNT}/.staging-{engine.key}"
    final = f"{CACHE_MOUNT}/{engine.key}"
    partition = [
        "python3", DJL_PARTITION_SCRIPT,
        "--properties_dir", f"{scratch}/properties",
        "--trt_llm_model_repo", staging,
        "--tensor_parallel_degree", str(engine.spec.tensor_parallel),
        "--pipeline_parallel_degree", str(engine.spec.pipeline_parallel),
        "--model_path", f"{scratch}/model",
    ]
    script = (f"set -e; rm -rf {staging}; {shlex.join(partition)}; "
              f"test -e {final} || mv {staging} {final}")
    # The image's entrypoint sets up CUDA forward compatibility, then evals the script.
    partition_container = {**runtime, "image": DJL_IMAGE, "command": [DJL_ENTRYPOINT, script],
                           "env": [e for e in runtime["env"] if e["name"] != BUILD_SPEC_ENV],
                           # /opt/djl belongs to the image's djl user; uid 1000 writes its
                           # logs to an emptyDir instead.
                           "volumeMounts": [*runtime["volumeMounts"],
                                            {"name": "djl-logs", "mountPath": DJL_LOG_DIR}]}
    return [partition_container], [prepare]
