"""Trace-driven autoscaling simulator: the same control law as the operator, on recorded load."""

from .compare import compare
from .engine import Fleet, PerfModel, SimResult, simulate
from .traces import Request, load_trace

__all__ = ["Fleet", "PerfModel", "SimResult", "simulate", "compare", "Request", "load_trace"]
