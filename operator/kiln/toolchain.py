"""Every image and toolchain version Kiln renders, in one place.

The TensorRT engine path (``convert_checkpoint.py``/``quantize.py`` -> ``trtllm-build`` ->
Triton's ``tensorrtllm`` backend) exists up to TensorRT-LLM 1.2.1 and was removed after it;
Triton 26.04-26.07 ``trtllm-python-py3`` images ship 1.2.1. The Kiln runtime image is built
``FROM`` the Triton image (``runtime/Dockerfile``) and adds ``kiln-runtime``.

DJL Serving's newest TensorRT-LLM LMI image holds TensorRT-LLM 0.21, so DJL engines are built
by that image's own partition script: an engine is only loadable by the version that built it,
and the toolchain is part of the engine key.
"""

from __future__ import annotations

from kiln_runtime.image import DJL_ENTRYPOINT, DJL_LOG_DIR, DJL_PARTITION_SCRIPT, NGC_ENTRYPOINT

from . import __version__

__all__ = ["TRTLLM_VERSION", "TRITON_IMAGE", "RUNTIME_IMAGE", "DJL_IMAGE", "DJL_TRTLLM_VERSION",
           "DJL_PARTITION_SCRIPT", "DJL_LOG_DIR", "NGC_ENTRYPOINT", "DJL_ENTRYPOINT", "EPP_IMAGE", "toolchain_for"]

TRTLLM_VERSION = "1.2.1"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
RUNTIME_IMAGE = f"ghcr.io/kiln-serving/kiln-runtime:{__version__}-trtllm{TRTLLM_VERSION}"

DJL_IMAGE = "deepjavalibrary/djl-serving:0.33.0-tensorrt-llm"
DJL_TRTLLM_VERSION = "0.21.0"
# DJL_PARTITION_SCRIPT and DJL_LOG_DIR: the image-layout manifest (kiln_runtime.image).

# The Gateway API Inference Extension's endpoint picker: v1.5.0, its last release with one.
# From v1.6.0 the project publishes only a conformance picker, lwepp (kubernetes/k8s.io #9830,
# "Promote gateway-api-inference-extension v1.6.0 lwepp image", against #9361 promoting the
# v1.5.0 images; its cloudbuild.yaml pushes only lwepp-image-push): the EPP moved to
# llm-d/llm-d-router. v1.5.0's InferencePool is the same inference.networking.k8s.io/v1.
EPP_IMAGE = "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"


def toolchain_for(server: str) -> str:
    """The TensorRT-LLM version that builds and loads engines for a server kind."""
    return f"tensorrt-llm=={DJL_TRTLLM_VERSION if server == 'djl' else TRTLLM_VERSION}"
