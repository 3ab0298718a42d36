"""Pod pieces shared by the build Job and the serving workloads."""

from __future__ import annotations

from typing import Any

from kiln_runtime.image import USER

from ..planner import GPU

__all__ = ["CACHE_MOUNT", "GPU_PRODUCT_LABEL", "HOST_CPU", "HOST_MEMORY", "SHM_SIZE", "restricted_pod_security",
           "restricted_container_security", "gpu_scheduling", "secret_env", "shm_volume",
           "tmp_volume"]

CACHE_MOUNT = "/engines"
# What a GPU pod (a server, or a build whose plan does not size its memory) asks of the host
# besides its GPUs: CPUs to feed them, memory to stage weights through.
HOST_CPU = "4"
HOST_MEMORY = "32Gi"
# The memory-backed /dev/shm of every GPU pod (builds and servers alike).
SHM_SIZE = "16Gi"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# The NGC Triton images ship the unprivileged user triton-server, uid 1000 (the image-layout
# manifest names the source).
NGC_UID = USER[0]


def restricted_pod_security() -> dict[str, Any]:
    """Pod Security "restricted": non-root, RuntimeDefault seccomp."""
    return {"runAsNonRoot": True, "runAsUser": NGC_UID, "runAsGroup": NGC_UID,
            "fsGroup": NGC_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security() -> dict[str, Any]:
    """No privilege escalation, no capabilities.

    Together with :func:`restricted_pod_security` this meets Pod Security "restricted". The
    root filesystem stays writable (a hardening step the profile does not require):
    TensorRT-LLM and Triton's Python backend write caches and stubs under their install
    directories.
    """
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": False, "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"}}


def gpu_scheduling(gpu: GPU, resource: str) -> dict[str, Any]:
    """Node selection for the GPU model (GPU feature discovery label) and the GPU taint. A type
    outside the catalog is its own product label: the engine is built for one architecture,
    so the pods must land on that GPU whatever it is called."""
    return {"tolerations": [{"key": resource, "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {GPU_PRODUCT_LABEL: gpu.product_label}}


def secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    """An env var read from a Secret: credentials never appear in the object itself."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def shm_volume() -> dict[str, Any]:
    """/dev/shm for NCCL and MPI between ranks, and Triton's Python backend."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}


def tmp_volume() -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {}}
