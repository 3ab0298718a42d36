"""Autoscaling on KV-cache pressure: metric parsing, the control law, the HPA baseline. Pure."""

from .law import Decision, LawParams, Recommendations, Sample, decide
from .metrics import KVSample, parse_triton_metrics

__all__ = ["KVSample", "parse_triton_metrics", "Decision", "LawParams", "Recommendations", "Sample",
           "decide"]
