"""Letting the requests in flight finish before a multi-rank replica stops.

On SIGTERM ``mpirun`` sends its ranks SIGTERM, waits a few seconds and kills them, and it ends
the whole job when any rank dies (open-mpi/ompi ``docs/man-openmpi/man1/mpirun.1.rst``, "Signal
Propagation"); a multi-node group's worker pods hold ranks that die with the pod's main process.
So a replica of more than one rank passes the pod's SIGTERM on only once the engine has no
request in flight (TensorRT-LLM's ``nv_trt_llm_request_metrics{request_type="active"}`` on
rank 0's metrics page), or after :data:`DRAIN_SECONDS`. By then the pod has left the Service's
endpoints (the serving container's preStop sleep covers the endpoints' update), so no request
arrives that would keep it from draining.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

__all__ = ["DRAIN_SECONDS", "POLL_SECONDS", "MAX_PAGE_BYTES", "active_requests", "drain",
           "engine_gauge"]

# The longest a request may take on Kiln's paths (the keda-http interceptor's response-header
# timeout, kiln.render.wake.RESPONSE_HEADER_SECONDS); the serving pods' grace period covers it,
# the preStop sleep and a margin for mpirun's own shutdown (a unit test holds them in step).
DRAIN_SECONDS = 600.0
POLL_SECONDS = 1.0
# A Triton metrics page is a few hundred KiB at most; more is not read.
MAX_PAGE_BYTES = 4 * 2**20
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+([0-9.eE+-]+)\s*$')


def engine_gauge(url: str, family: str, label: str, timeout: float = 2.0) -> float | None:
    """The sum of one TensorRT-LLM backend gauge (``family{<label>, model="tensorrt_llm"}``)
    on a metrics page; None when the page cannot be read or has no such series (the server is
    not up, or already gone)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            page = response.read(MAX_PAGE_BYTES).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    total, found = 0.0, False
    for line in page.splitlines():
        match = _SAMPLE.match(line)
        if (match and match[1] == family and label in match[2]
                and 'model="tensorrt_llm"' in match[2]):
            try:
                total += float(match[3])
                found = True
            except ValueError:
                continue
    return total if found else None


def active_requests(url: str, timeout: float = 2.0) -> float | None:
    """The requests in flight in the TensorRT-LLM engine, from a metrics page."""
    return engine_gauge(url, "nv_trt_llm_request_metrics", 'request_type="active"', timeout)


def drain(url: str, then: Callable[[], None], deadline: float = DRAIN_SECONDS,
          poll: float = POLL_SECONDS, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> None:
    """Wait until ``url`` shows no request in flight (or cannot be read), at most ``deadline``
    seconds, then call ``then``."""
    end = clock() + deadline
    while clock() < end:
        active = active_requests(url)
        if not active:
            break
        print(f"[drain] {active:.0f} request(s) in flight; waiting before stopping",
              file=sys.stderr, flush=True)
        sleep(poll)
    then()
