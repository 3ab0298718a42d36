"""Where the tools are inside the runtime image (``runtime/Dockerfile``), in one place.

The image is ``FROM nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3``, which ships
TensorRT-LLM 1.2.1: the last release with ``trtllm-build``, ``convert_checkpoint.py`` and the
Triton ``tensorrtllm`` C++ backend. Every path can be overridden by an environment variable,
which is how the tests point the runtime at fake tools.
"""

from __future__ import annotations

import os

__all__ = ["TRTLLM_VERSION", "examples_dir", "quantize_script", "convert_script", "trtllm_build",
           "triton_templates", "tritonserver", "mpirun", "CONVERTERS"]

TRTLLM_VERSION = "1.2.1"

# HF architecture -> the TensorRT-LLM example folder whose convert_checkpoint.py handles it.
CONVERTERS = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",  # Mistral uses the Llama converter
    "Qwen2ForCausalLM": "qwen",
    "Qwen3ForCausalLM": "qwen",
}


def examples_dir() -> str:
    return os.environ.get("KILN_TRTLLM_EXAMPLES", "/app/tensorrt_llm/examples")


def quantize_script() -> str:
    return f"{examples_dir()}/quantization/quantize.py"


def convert_script(architecture: str) -> str:
    return f"{examples_dir()}/models/core/{CONVERTERS[architecture]}/convert_checkpoint.py"


def trtllm_build() -> str:
    return os.environ.get("KILN_TRTLLM_BUILD", "trtllm-build")


def triton_templates() -> str:
    return os.environ.get("KILN_TRITON_TEMPLATES", "/app/all_models/inflight_batcher_llm")


def tritonserver() -> str:
    return os.environ.get("KILN_TRITONSERVER", "/opt/tritonserver/bin/tritonserver")


def mpirun() -> str:
    return os.environ.get("KILN_MPIRUN", "mpirun")


def kubectl() -> str:
    return os.environ.get("KILN_KUBECTL", "kubectl")


def python() -> str:
    return os.environ.get("KILN_PYTHON", "python3")
