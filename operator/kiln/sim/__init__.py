"""Trace-driven autoscaling simulator: the same control law as the operator, on recorded load."""

from .engine import Fleet, PerfModel, SimResult, simulate
from .traces import Request, load_trace

__all__ = ["Fleet", "PerfModel", "SimResult", "simulate", "Request", "load_trace"]
