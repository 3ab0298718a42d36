"""What runs inside the NVIDIA containers: engine build, Triton model repository, launch."""

__version__ = "0.1.0"
