"""Triton's OpenAI-compatible frontend, as it ships in the pinned image.

The frontend is ``/opt/tritonserver/python/openai/openai_frontend/main.py``: the server's
``build.py`` (``create_dockerfile_linux``) copies Triton's install tree to ``/opt/tritonserver``
and runs ``pip3 install -r python/openai/requirements.txt`` from there, and the frontend's
README starts it with ``cd /opt/tritonserver/python/openai; python3 openai_frontend/main.py``
(triton-inference-server/server ``python/openai/README.md``).

It runs Triton in process (``tritonserver.Server``) and serves ``/v1/models``,
``/v1/completions``, ``/v1/chat/completions`` (streamed as server-sent events or not),
``/health/ready`` and ``/metrics`` on ``--openai-port``; ``--enable-kserve-frontends`` keeps
Triton's own HTTP and gRPC endpoints on ``--kserve-http-port``/``--kserve-grpc-port``
(``openai_frontend/main.py``, ``frontend/fastapi/routers/{models,chat,observability}.py``).
Every loaded Triton model is an API model under its own name, so the repository holds the
``tensorrt_llm_bls`` model under the served model name; TensorRT-LLM requests go out in the
``tensorrtllm`` format (``engine/triton_engine.py``: ``_determine_request_converter``), and
the chat template is the one in the tokenizer directory passed as ``--tokenizer``
(``apply_chat_template`` on the tokenizer ``get_tokenizer`` loads).

The in-process server starts no metrics HTTP endpoint of its own (only ``/metrics`` on the
OpenAI port), so :class:`MetricsRelay` serves that page on the metrics port as well, where
the operator, the PodMonitor and the NetworkPolicy already expect Triton's metrics. The
frontend takes no metrics configuration, so :mod:`kiln_runtime.frontend_launch` starts it with
the latency histograms on (the time to first token).
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .image import OPENAI_FRONTEND

__all__ = ["FRONTEND_MAIN", "frontend_main", "frontend_argv", "MetricsRelay",
           "SERVED_MODEL_NAME_PATTERN", "OPENAI_FLAGS"]

FRONTEND_MAIN = OPENAI_FRONTEND
# A Triton model directory and an OpenAI model id at once: no "/", no "..", no spaces.
SERVED_MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# The flags Kiln passes, each defined by openai_frontend/main.py's parse_args() (Triton
# 26.07): a test parses the rendered command line with a parser of exactly these.
OPENAI_FLAGS = ("--model-repository", "--tokenizer", "--backend", "--host", "--openai-port",
                "--enable-kserve-frontends", "--kserve-http-port", "--kserve-grpc-port")


def frontend_main() -> str:
    return os.environ.get("KILN_OPENAI_FRONTEND", FRONTEND_MAIN)


def frontend_argv(python: str, repo: Path, tokenizer: Path, ports: dict[str, int]) -> list[str]:
    """Rank 0's command line: the frontend with Triton in process, KServe endpoints kept, run
    through :mod:`kiln_runtime.frontend_launch` for its latency histograms."""
    # -P: the working directory (the pod's writable /tmp) is not on the import path.
    return [python, "-P", "-m", "kiln_runtime.frontend_launch", frontend_main(),
            f"--model-repository={repo}", f"--tokenizer={tokenizer}",
            "--backend=tensorrtllm", "--host=0.0.0.0", f"--openai-port={ports['openai']}",
            "--enable-kserve-frontends", f"--kserve-http-port={ports['http']}",
            f"--kserve-grpc-port={ports['grpc']}"]


# The metrics port is open to any pod unless spec.networkPolicy is on (off by default), and
# http.server gives each connection a thread that waits on it for ever (its handlers' timeout
# is None: Lib/socketserver.py, StreamRequestHandler.timeout): a client that connects and sends
# nothing, or half a request, holds a thread for good. Each read waits at most this long, and
# past this many connections at once a new one is closed at once (a scrape is one short GET).
RELAY_TIMEOUT_SECONDS = 10.0
RELAY_MAX_CONNECTIONS = 32


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most ``slots`` connections served at once."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], slots: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(slots)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsRelay:
    """A GET of the upstream's path (``/metrics``) on ``port`` answers with the upstream page."""

    def __init__(self, port: int, upstream: str, host: str = "0.0.0.0") -> None:
        target = upstream
        route = urlsplit(upstream).path

        class Handler(BaseHTTPRequestHandler):
            timeout = RELAY_TIMEOUT_SECONDS

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?", 1)[0] != route:
                    self.send_error(404)
                    return
                try:
                    with urllib.request.urlopen(target, timeout=5) as response:
                        body = response.read()
                except (urllib.error.URLError, OSError):
                    self.send_error(503, "the OpenAI frontend is not serving metrics yet")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
                pass

        self.server = _BoundedServer((host, port), Handler, RELAY_MAX_CONNECTIONS)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> MetricsRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
