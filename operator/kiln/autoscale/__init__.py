"""Autoscaling on KV-cache pressure: metric parsing and (later) the control law. Pure."""

from .metrics import KVSample, parse_triton_metrics

__all__ = ["KVSample", "parse_triton_metrics"]
