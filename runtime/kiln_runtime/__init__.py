"""What runs inside the NVIDIA containers: engine build, Triton model repository, launch."""

__all__ = ["__version__"]

__version__ = "0.1.0"
