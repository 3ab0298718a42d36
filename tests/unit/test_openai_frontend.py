"""The serving pods start Triton's OpenAI-compatible frontend with arguments its main.py
defines (recorded in tests/support/reference/triton-openai-frontend.json with the source
commits), probe routes it serves, name the API model after the service, and relay its
metrics page to the metrics port."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from kiln.api import parse_service_manifest
from kiln.errors import SpecInvalid
from kiln.render import ServiceRef, openai_endpoint, render
from kiln_runtime.alive import GENERATION_TIMEOUT
from kiln_runtime.errors import BadSpec
from kiln_runtime.openai_frontend import MetricsRelay, frontend_argv, frontend_main
from kiln_runtime.serve import SERVE_SPEC_ENV, parse_serve_spec, server_argv
from kiln_runtime.triton_repo import RepoSettings, write_model_repo

from ..conftest import ROOT
from ..support.planning import planned
from ..support.triton_templates import write_templates

REFERENCE = json.loads((ROOT / "tests" / "support" / "reference" /
                        "triton-openai-frontend.json").read_text())
TRITON_EXAMPLES = ["llama-3.1-8b-fp8.yaml", "llama-3.1-70b-fp8-tp4.yaml",
                   "llama-3.1-405b-fp8-multinode.yaml"]


def _frontend_parser() -> argparse.ArgumentParser:
    """main.py's parser, rebuilt from the recorded arguments (exit_on_error off)."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    kinds = {"str": str, "int": int}
    for flag, spec in REFERENCE["arguments"].items():
        options = {k: v for k, v in spec.items() if k in ("choices", "nargs", "action", "required")}
        if spec.get("action") != "store_true":
            options["type"] = kinds[spec["type"]]
        parser.add_argument(flag, **options)
    return parser


def _rendered(example: str):
    manifest = yaml.safe_load((ROOT / "examples" / example).read_text())
    _, spec = parse_service_manifest(manifest)
    result, gpu = planned(spec)
    return manifest, render(ServiceRef(manifest["metadata"]["name"], manifest["metadata"]["namespace"]),
                            spec, result, gpu)


def _leader_container(workload):
    template = (workload["spec"]["template"] if workload["kind"] == "Deployment"
                else workload["spec"]["leaderWorkerTemplate"]["leaderTemplate"])
    return template["spec"]["containers"][0]


@pytest.mark.parametrize("example", TRITON_EXAMPLES)
def test_rank_0_starts_the_frontend_with_arguments_it_defines(example, tmp_path):
    manifest, rendered = _rendered(example)
    container = _leader_container(rendered.workload)
    env = {e["name"]: e.get("value") for e in container["env"]}
    serve = parse_serve_spec(env[SERVE_SPEC_ENV])
    argv = server_argv(serve, tmp_path / "repo")
    rank0 = " ".join(argv).split(" : ")[0].split()
    start = next(i for i, word in enumerate(rank0) if word.endswith("main.py"))
    assert rank0[start] == REFERENCE["image_path"]
    args = _frontend_parser().parse_args(rank0[start + 1:])  # raises on an unknown flag
    assert args.backend == "tensorrtllm" and args.enable_kserve_frontends
    assert args.model_repository == str(tmp_path / "repo")
    assert args.tokenizer == f"{serve.engine_root}/tokenizer"  # the cache entry's tokenizer
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (args.openai_port, args.kserve_http_port, args.kserve_grpc_port) == (
        ports["openai"], ports["http"], ports["grpc"])
    # Ranks > 0 of a multi-GPU replica stay tritonservers that load only tensorrt_llm.
    for segment in " ".join(argv).split(" : ")[1:]:
        assert "tritonserver" in segment and "--load-model=tensorrt_llm" in segment
    # The served model name defaults to the service's name.
    assert serve.served_model_name == manifest["metadata"]["name"]


@pytest.mark.parametrize("example", TRITON_EXAMPLES)
def test_probes_hit_routes_the_frontend_serves(example):
    manifest, rendered = _rendered(example)
    container = _leader_container(rendered.workload)
    routes = {route.split(" ", 1)[1] for route in REFERENCE["routes"] if route.startswith("GET")}
    get = container["readinessProbe"]["httpGet"]
    assert get["port"] == "openai" and get["path"] in routes
    # Liveness reads the engine's progress on the metrics page and asks the OpenAI endpoint
    # (kiln_runtime.alive, tests/unit/test_liveness.py); its timeout covers the generation.
    liveness = container["livenessProbe"]
    assert liveness["exec"]["command"] == ["kiln-runtime", "alive"]
    assert liveness["timeoutSeconds"] > GENERATION_TIMEOUT
    startup = container["startupProbe"]["exec"]["command"]
    assert startup[:3] == ["kiln-runtime", "smoke", "--openai-url"]
    assert startup[3] == "http://localhost:9000/v1"
    assert startup[startup.index("--model") + 1] == manifest["metadata"]["name"]
    service_ports = {p["name"]: p for p in rendered.service["spec"]["ports"]}
    assert service_ports["openai"] == {"name": "openai", "port": 9000, "targetPort": "openai",
                                       "protocol": "TCP"}


def test_the_repository_serves_the_bls_model_under_the_served_name(tmp_path):
    entry = tmp_path / "entry"
    (entry / "engine").mkdir(parents=True)
    (entry / "engine" / "config.json").write_text(json.dumps({"build_config": {
        "max_batch_size": 8, "plugin_config": {"tokens_per_block": 32}}}))
    written = write_model_repo(write_templates(tmp_path / "templates"), tmp_path / "repo",
                               RepoSettings(engine_dir=entry / "engine",
                                            tokenizer_dir=entry / "tokenizer",
                                            served_model_name="llama-3.1-8b-instruct"))
    names = sorted(p.parent.name for p in written)
    assert names == ["ensemble", "llama-3.1-8b-instruct", "postprocessing", "preprocessing",
                     "tensorrt_llm"]
    config = text_format.Parse((tmp_path / "repo" / "llama-3.1-8b-instruct" / "config.pbtxt")
                               .read_text(), model_config_pb2.ModelConfig())
    assert config.name == "llama-3.1-8b-instruct" and config.backend == "python"


def test_a_hostile_served_name_is_refused_naming_the_field():
    manifest = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-fp8.yaml").read_text())
    for bad in ("../etc", "org/model", "a b", "x" * 64, ""):
        manifest["spec"]["servedModelName"] = bad
        with pytest.raises(SpecInvalid, match="spec.servedModelName"):
            parse_service_manifest(manifest)
    with pytest.raises(BadSpec, match="servedModelName"):
        parse_serve_spec(json.dumps({"engineDir": "/e", "tensorParallel": 1, "pipelineParallel": 1,
                                     "kvCacheFreeGpuMemFraction": 0.9, "servedModelName": "../x",
                                     "ports": {"http": 8000, "grpc": 8001, "openai": 9000}}))


def test_djl_reports_no_openai_url():
    manifest, rendered = _rendered("qwen2.5-7b-djl.yaml")
    assert "openai" not in {p["name"] for p in rendered.service["spec"]["ports"]}
    # status.endpoints.openai is left out, not pointed at a route DJL may not serve.
    _, spec = parse_service_manifest(manifest)
    assert openai_endpoint(spec, manifest["metadata"]["name"], "llm") is None


def test_metrics_relay_serves_the_frontend_page_on_the_metrics_port():
    page = b'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"} 100\n'

    class Frontend(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Frontend)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    relay = MetricsRelay(0, f"http://127.0.0.1:{upstream.server_address[1]}/metrics",
                         host="127.0.0.1").start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/metrics") as response:
            assert response.read() == page
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/v1/models")
        upstream.shutdown()
        upstream.server_close()
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/metrics")
    finally:
        relay.stop()


def test_dry_run_prints_the_frontend_command(tmp_path, monkeypatch):
    _, rendered = _rendered("llama-3.1-8b-fp8.yaml")
    env = {e["name"]: e.get("value") for e in _leader_container(rendered.workload)["env"]}
    from kiln_runtime.cli import main
    monkeypatch.setenv(SERVE_SPEC_ENV, env[SERVE_SPEC_ENV])
    assert main(["serve", "--dry-run", "--model-repo", str(tmp_path)]) == 0


_STAND_IN_SERVER = '''
"""tritonserver's Options and Server as triton-inference-server/core
python/tritonserver/_api/_server.py defines them (the fields main.py and Kiln use)."""
import json, os
from dataclasses import asdict, dataclass, field


@dataclass(slots=True)
class Options:
    model_repository: str | list = field(default_factory=list)
    log_info: bool = False
    log_warn: bool = False
    log_error: bool = False
    log_verbose: int = 0
    metrics: bool = True
    metrics_interval: int = 2000
    metrics_configuration: dict = field(default_factory=dict)


class Server:
    def __init__(self, options=None, **kwargs):
        if options is None:
            options = Options(**kwargs)
        self.options = options

    def start(self, wait_until_ready=False):
        with open(os.environ["STARTED_WITH"], "w") as out:
            json.dump(asdict(self.options), out)
        return self
'''

_STAND_IN_MAIN = '''
import argparse, sys
import tritonserver
from engine.triton_engine import ENGINE  # from main.py's own directory, as upstream's

parser = argparse.ArgumentParser()
parser.add_argument("--model-repository", required=True)
parser.add_argument("--tokenizer")
parser.add_argument("--backend")
parser.add_argument("--host")
parser.add_argument("--openai-port", type=int)
parser.add_argument("--enable-kserve-frontends", action="store_true")
parser.add_argument("--kserve-http-port", type=int)
parser.add_argument("--kserve-grpc-port", type=int)
args = parser.parse_args()
# as upstream's main() starts it
tritonserver.Server(model_repository=args.model_repository, log_verbose=0, log_info=True,
                    log_warn=True, log_error=True).start(wait_until_ready=True)
'''


def test_rank_0s_frontend_starts_triton_with_latency_histograms(tmp_path):
    """The frontend has no flag for a metrics configuration and its Triton exports no
    first-response histogram without one: the launcher gives main.py's own Server call the
    global histogram_latencies setting (core's Options.metrics_configuration), as tritonserver
    --metrics-config=histogram_latencies=true would. Against stand-ins with upstream's
    signatures; the image's own are not here."""
    site = tmp_path / "site"
    (site / "tritonserver").mkdir(parents=True)
    (site / "tritonserver" / "__init__.py").write_text(_STAND_IN_SERVER)
    frontend = tmp_path / "openai_frontend"
    (frontend / "engine").mkdir(parents=True)
    (frontend / "engine" / "triton_engine.py").write_text("ENGINE = 'triton'\n")
    (frontend / "main.py").write_text(_STAND_IN_MAIN)
    argv = frontend_argv(sys.executable, tmp_path / "repo", tmp_path / "tokenizer",
                         {"openai": 9000, "http": 8000, "grpc": 8001})
    argv[argv.index(frontend_main())] = str(frontend / "main.py")
    started = tmp_path / "started.json"
    result = subprocess.run(argv, env={**os.environ, "STARTED_WITH": str(started),
                                       "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "runtime")])},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    options = json.loads(started.read_text())
    assert options["metrics_configuration"] == {"": {"histogram_latencies": "true"}}
    assert options["metrics_interval"] == 1000
    assert options["model_repository"] == str(tmp_path / "repo") and options["log_info"] is True
