"""The serving container's liveness probe (`kiln-runtime alive`) against a stand-in server
that speaks what the real one does: TensorRT-LLM's metrics page (the backend's
``nv_trt_llm_general_metrics`` family, labels as custom_metrics_reporter.cc writes them) and
the OpenAI frontend's streamed /v1/completions."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from kiln_runtime.alive import GENERATION_TIMEOUT, check
from kiln_runtime.smoke import smoke_openai


class Engine:
    """What the probe reads and asks: an iteration counter that moves while the engine works,
    and completions that come back, hang (a wedged engine) or fail."""

    def __init__(self) -> None:
        self.iteration = 0
        self.completions = "ok"  # ok | hang | error
        self.asked = 0
        self.release = threading.Event()


def _handler(engine: Engine):
    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/metrics":
                page = ("# HELP nv_trt_llm_general_metrics General TRT LLM metrics\n"
                        "# TYPE nv_trt_llm_general_metrics gauge\n"
                        'nv_trt_llm_general_metrics{general_type="iteration_counter",model="tensorrt_llm",'
                        f'version="1"}} {engine.iteration}\n'
                        'nv_trt_llm_general_metrics{general_type="timestamp",model="tensorrt_llm",'
                        'version="1"} 1733490000000000\n')
                self._send(200, page.encode(), "text/plain")
            elif self.path == "/v1/models":  # answers whatever the engine does
                self._send(200, b'{"object":"list","data":[{"id":"llama","object":"model"}]}',
                           "application/json")
            else:
                self._send(404, b"{}", "application/json")

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            engine.asked += 1
            if engine.completions == "hang":
                engine.release.wait(30)
                return
            if engine.completions == "error":
                self._send(500, b'{"detail":"executor failed"}', "application/json")
                return
            engine.iteration += 2
            chunk = {"choices": [{"index": 0, "text": " Paris"}]}
            self._send(200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def engine():
    state = Engine()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.port = server.server_address[1]
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


def _probe(engine, tmp_path, now, timeout=GENERATION_TIMEOUT):
    base = f"http://127.0.0.1:{engine.port}"
    return check(f"{base}/metrics",
                 lambda: smoke_openai(f"{base}/v1", "llama", max_tokens=2, timeout=timeout),
                 tmp_path / "liveness.json", stall=120, clock=lambda: now)


def test_a_working_engine_is_never_sent_a_request(engine, tmp_path):
    for second in range(0, 600, 30):
        engine.iteration += 500  # the executor iterates between probes
        verdict = _probe(engine, tmp_path, 1000.0 + second)
        assert verdict.alive, verdict.reason
    assert engine.asked == 0


def test_an_idle_engine_answers_one_short_generation_per_stall(engine, tmp_path):
    engine.iteration = 40
    assert _probe(engine, tmp_path, 1000.0).alive
    assert _probe(engine, tmp_path, 1090.0).alive and engine.asked == 0  # within the stall
    verdict = _probe(engine, tmp_path, 1125.0)
    assert verdict.alive and engine.asked == 1, verdict.reason
    assert "a generation came back" in verdict.reason
    assert _probe(engine, tmp_path, 1155.0).alive and engine.asked == 1  # the clock started again


def test_a_wedged_engine_fails_the_probe_though_its_routes_still_answer(engine, tmp_path):
    """The probe before this one (GET /v1/models) passes on a wedged engine; this one fails it,
    and keeps failing at every period until the kubelet restarts the container."""
    engine.iteration = 900
    assert _probe(engine, tmp_path, 1000.0).alive  # was working
    engine.completions = "hang"  # the executor stops: no iteration, no token
    with urllib.request.urlopen(f"http://127.0.0.1:{engine.port}/v1/models", timeout=5) as answer:
        assert answer.status == 200
    assert _probe(engine, tmp_path, 1060.0).alive  # not yet: within the stall
    for now in (1130.0, 1160.0, 1190.0):
        verdict = _probe(engine, tmp_path, now, timeout=1.0)
        assert not verdict.alive
        assert "no iteration for" in verdict.reason and "generation failed" in verdict.reason


def test_a_failed_generation_or_an_unreadable_page_decides(engine, tmp_path):
    engine.completions = "error"
    engine.iteration = 7
    assert _probe(engine, tmp_path, 0.0).alive
    verdict = _probe(engine, tmp_path, 200.0)
    assert not verdict.alive and "HTTP 500" in verdict.reason
    # No metrics page at all: the generation alone decides, at every probe.
    state = tmp_path / "other.json"
    answered = check("http://127.0.0.1:9/metrics", lambda: "ok", state, clock=lambda: 5.0)
    assert answered.alive and "metrics page unreadable" in answered.reason

    def wedged():
        raise RuntimeError("no response within 45s")

    assert not check("http://127.0.0.1:9/metrics", wedged, state, clock=lambda: 6.0).alive


def test_a_corrupt_state_file_starts_the_clock_again(engine, tmp_path):
    (tmp_path / "liveness.json").write_text("{not json")
    engine.iteration = 3
    assert _probe(engine, tmp_path, 50.0).alive and engine.asked == 0


def test_the_command_reads_the_serve_spec_and_exits_1_on_a_wedged_engine(engine, tmp_path):
    env = {**os.environ, "KILN_SERVE_SPEC": json.dumps({
        "engineDir": str(tmp_path / "cache" / ("ab" * 32) / "engine"), "tensorParallel": 1,
        "pipelineParallel": 1, "kvCacheFreeGpuMemFraction": 0.9, "servedModelName": "llama",
        "ports": {"http": 8000, "grpc": 8001, "metrics": engine.port, "openai": engine.port}})}
    state = tmp_path / "state.json"

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "kiln_runtime", "alive", "--state", str(state),
                               *extra], env=env, capture_output=True, text=True, timeout=120)

    engine.iteration = 11
    first = run()
    assert first.returncode == 0 and "iteration 11" in first.stdout, first.stderr
    # Stalled (the state says the counter last moved long ago) and the engine is idle: answers.
    state.write_text(json.dumps({"counter": 11, "since": time.time() - 600}))
    idle = run()
    assert idle.returncode == 0 and engine.asked == 1, idle.stderr
    state.write_text(json.dumps({"counter": engine.iteration, "since": time.time() - 600}))
    engine.completions = "error"
    wedged = run()
    assert wedged.returncode == 1
    assert wedged.stderr.startswith("[alive] no iteration for") and "HTTP 500" in wedged.stderr
    assert "Traceback" not in wedged.stderr
