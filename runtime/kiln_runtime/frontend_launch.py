"""``python3 -m kiln_runtime.frontend_launch MAIN [ARGS...]``: Triton's OpenAI frontend
(``MAIN``, its ``openai_frontend/main.py``) with the in-process server's latency histograms on.

The frontend starts Triton with ``tritonserver.Server(model_repository=..., log_*=...)`` and
no metrics configuration (triton-inference-server/server ``python/openai/openai_frontend/
main.py``, ``main``), and has no flag for one. The server's options default to an empty one
(triton-inference-server/core ``python/tritonserver/_api/_server.py``, ``Options.
metrics_configuration``), with which Triton exports no ``nv_inference_first_response_histogram_ms``
(core ``src/metric_model_reporter.cc``: only with ``histogram_latencies=true``): the time to
first token the autoscaler's TTFT objective and the dashboard read. So this launcher runs the
frontend's ``main`` unchanged, with ``tritonserver.Server`` given what ``tritonserver
--metrics-config=histogram_latencies=true --metrics-interval-ms=1000`` sets: the setting in the
global group (the empty name: ``TRITONSERVER_ServerOptionsSetMetricsConfig``) and the interval
the other ranks' servers use.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

__all__ = ["METRICS_CONFIGURATION", "METRICS_INTERVAL_MS", "with_latency_histograms", "main"]

# {group: {setting: value}}; "" is the global group.
METRICS_CONFIGURATION = {"": {"histogram_latencies": "true"}}
METRICS_INTERVAL_MS = 1000


def with_latency_histograms(tritonserver: Any) -> None:
    """Have every ``tritonserver.Server`` made from here on start with the latency histograms
    (a setting the caller gave wins)."""
    original = tritonserver.Server.__init__
    options_type = tritonserver.Options

    def __init__(self: Any, options: Any = None, **kwargs: Any) -> None:
        if options is None:
            kwargs.setdefault("metrics_interval", METRICS_INTERVAL_MS)
            options = options_type(**kwargs)
        for group, settings in METRICS_CONFIGURATION.items():
            chosen = options.metrics_configuration.setdefault(group, {})
            for setting, value in settings.items():
                chosen.setdefault(setting, value)
        original(self, options)

    tritonserver.Server.__init__ = __init__


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python3 -m kiln_runtime.frontend_launch MAIN [ARGS...]")
    path, *args = argv
    import tritonserver

    with_latency_histograms(tritonserver)
    # As `python3 MAIN ARGS` runs it: its own directory first on the path (it imports its
    # engine and frontend packages from there), its arguments in sys.argv.
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    sys.argv = [path, *args]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
