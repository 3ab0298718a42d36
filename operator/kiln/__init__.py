"""Kiln: plan, build and serve TensorRT-LLM engines on Kubernetes from one manifest."""

__version__ = "0.1.0"
__all__ = ["__version__"]
