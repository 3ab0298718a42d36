"""Trace-driven autoscaling simulator: the same control law as the operator, on recorded load."""

from .compare import compare
from .engine import Fleet, PerfModel, SimResult, routing_for, simulate
from .traces import Request, load_trace

__all__ = ["Fleet", "PerfModel", "SimResult", "simulate", "routing_for", "compare", "Request", "load_trace"]
