"""A small catalog of data-centre GPUs, with the memory CUDA reports for them.

Memory figures are the totals `cudaMemGetInfo` reports (see the KV-sizing notes in
docs/concepts/plan.md), not the marketing size. ``bandwidth_tbs`` feeds the decode-speed estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlanRefused

__all__ = ["GPU", "GPU_CATALOG", "lookup_gpu", "require_gpu", "unknown_gpu_message", "CUDA_CONTEXT_GIB"]

# CUDA context and runtime overhead taken before anything is loaded.
CUDA_CONTEXT_GIB = 0.5


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    arch: str                 # CUDA compute capability, which an engine is built for
    product_label: str        # value of the GPU feature discovery label nvidia.com/gpu.product
    bandwidth_tbs: float
    fp8: bool
    fp4: bool


GPU_CATALOG: dict[str, GPU] = {g.name.lower(): g for g in (
    GPU("H100-80GB", 79.19, "sm90", "NVIDIA-H100-80GB-HBM3", 3.35, True, False),
    GPU("H200-141GB", 139.8, "sm90", "NVIDIA-H200", 4.8, True, False),
    GPU("B200-180GB", 178.4, "sm100", "NVIDIA-B200", 8.0, True, True),
    GPU("A100-80GB", 79.15, "sm80", "NVIDIA-A100-SXM4-80GB", 2.04, False, False),
    GPU("A100-40GB", 39.39, "sm80", "NVIDIA-A100-SXM4-40GB", 1.56, False, False),
    GPU("L40S", 44.39, "sm89", "NVIDIA-L40S", 0.864, True, False),
    GPU("L4", 22.03, "sm89", "NVIDIA-L4", 0.3, True, False),
    GPU("RTX-4090", 23.99, "sm89", "NVIDIA-GeForce-RTX-4090", 1.01, True, False),
    GPU("RTX-5090", 31.84, "sm120", "NVIDIA-GeForce-RTX-5090", 1.79, True, True),
)}


def lookup_gpu(name: str, memory_gib: float | None = None, arch: str | None = None) -> GPU | None:
    """The catalog entry for ``name`` (case-insensitive), with an optional memory override.

    A name outside the catalog needs both its memory and its architecture (``smNN``, what the
    engine is built for); the name is then the nodes' GPU product label. FP8 and FP4 follow
    the architecture as in the catalog (Ada/Hopper and newer; Blackwell).
    """
    known = GPU_CATALOG.get(name.lower())
    if known is None:
        if memory_gib is None or arch is None:
            return None
        number = int(arch.removeprefix("sm"))
        return GPU(name, memory_gib, arch, name, 1.0, number >= 89, number >= 100)
    if memory_gib is not None:
        return GPU(known.name, memory_gib, known.arch, known.product_label, known.bandwidth_tbs,
                   known.fp8, known.fp4)
    return known


def unknown_gpu_message(name: str, memory_gib: float | None) -> str:
    """Why ``lookup_gpu`` found nothing, naming the field to set."""
    if memory_gib is None:
        return (f"spec.gpu.type: unknown GPU {name!r}; use a catalog type "
                f"({', '.join(g.name for g in GPU_CATALOG.values())}) or set spec.gpu.memoryGiB "
                "and spec.gpu.arch")
    return (f"spec.gpu.arch: required for {name!r}, a GPU type outside Kiln's catalog: its CUDA "
            "compute capability, e.g. sm90")


def require_gpu(name: str, memory_gib: float | None = None, arch: str | None = None) -> GPU:
    """``lookup_gpu``, or PlanRefused naming the field to set."""
    gpu = lookup_gpu(name, memory_gib, arch)
    if gpu is None:
        raise PlanRefused(unknown_gpu_message(name, memory_gib))
    return gpu
