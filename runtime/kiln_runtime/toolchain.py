"""Where the tools are inside the runtime image (``runtime/Dockerfile``), in one place.

The image is ``FROM nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3``, which ships
TensorRT-LLM 1.2.1: the last release with ``trtllm-build``, ``convert_checkpoint.py`` and the
Triton ``tensorrtllm`` C++ backend. The paths come from the image-layout manifest
(:mod:`kiln_runtime.image`, with their sources). Every path can be overridden by an
environment variable, which is how the tests point the runtime at fake tools.
"""

from __future__ import annotations

import os

from . import image, support

__all__ = ["TRTLLM_VERSION", "examples_dir", "quantize_script", "convert_script", "trtllm_build",
           "triton_templates", "tritonserver", "mpirun"]

TRTLLM_VERSION = "1.2.1"

def examples_dir() -> str:
    return os.environ.get("KILN_TRTLLM_EXAMPLES", image.EXAMPLES_DIR)


def quantize_script() -> str:
    return f"{examples_dir()}/quantization/quantize.py"


def convert_script(architecture: str) -> str:
    return f"{examples_dir()}/models/core/{support.CONVERTERS[architecture]}/convert_checkpoint.py"


def trtllm_build() -> str:
    return os.environ.get("KILN_TRTLLM_BUILD", "trtllm-build")


def triton_templates() -> str:
    return os.environ.get("KILN_TRITON_TEMPLATES", image.TEMPLATES_DIR)


def tritonserver() -> str:
    return os.environ.get("KILN_TRITONSERVER", image.TRITONSERVER)


def mpirun() -> str:
    return os.environ.get("KILN_MPIRUN", "mpirun")


def kubectl() -> str:
    return os.environ.get("KILN_KUBECTL", "kubectl")


def python() -> str:
    return os.environ.get("KILN_PYTHON", "python3")
