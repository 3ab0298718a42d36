"""The serving pods start Triton's OpenAI-compatible frontend with arguments its main.py
defines (recorded in tests/support/reference/triton-openai-frontend.json with the source
commits), probe routes it serves, name the API model after the service, and relay its
metrics page to the metrics port."""

from __future__ import annotations

import argparse
import http.server
import json
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
from kiln_runtime.errors import BadSpec
from kiln_runtime.openai_frontend import MetricsRelay
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
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "openai" and get["path"] in routes, probe
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
