"""The CLI against input a careless or hostile user gives it: every answer one line naming the
flag, the file (and its line) or the field, a documented exit code (2: bad input; never 1,
which `kiln plan` says for "does not fit"), and bounded work and memory, whatever the input."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kiln.cli import main

from ..conftest import ROOT
from .test_cli_answers import LLAMA, _run, _write

SERVICE = str(ROOT / "examples" / "llama-3.1-8b-fp8.yaml")
GOOD_ROWS = "timestamp_s,input_tokens,output_tokens\n0,100,10\n1,200,20\n2,300,30\n"


def _trace(tmp_path: Path, text: str | bytes, name: str = "trace.csv") -> str:
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


def _answer(capsys, *argv: str) -> tuple[int, str]:
    """The exit code and standard error, whether the parser or the command refused."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def _simulate(capsys, trace: str, *flags: str) -> tuple[int, str]:
    return _answer(capsys, "simulate", "-f", SERVICE, "--trace", trace, "--policy", "static", *flags)


@pytest.mark.parametrize("name, text, said", [
    ("short.csv", GOOD_ROWS + "3,200\n", "trace.csv line 5"),
    ("list.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 5}\n[1, 2, 3]\n', "trace.jsonl line 2"),
    ("text.jsonl", '{"timestamp": "x", "input_length": 10, "output_length": 5}\n', "trace.jsonl line 1"),
    ("nan.csv", "timestamp_s,input_tokens,output_tokens\nnan,100,10\n", "trace.csv line 2"),
    ("inf.csv", "timestamp_s,input_tokens,output_tokens\n0,100,10\ninf,100,10\n", "trace.csv line 3"),
    ("negative.csv", "timestamp_s,input_tokens,output_tokens\n0,-100,10\n", "trace.csv line 2"),
    ("bytes.csv", b"timestamp_s,input_tokens,output_tokens\n0,100,10\n\xff\xfe\n", "not UTF-8"),
    ("huge.jsonl", '{"timestamp": 1%s, "input_length": 10, "output_length": 5}\n' % ("0" * 400), "trace.jsonl line 1"),
    ("huge.csv", "timestamp_s,input_tokens,output_tokens\n0,1%s,10\n" % ("0" * 400), "trace.csv line 2"),
])
def test_a_malformed_trace_is_refused_naming_its_line(tmp_path, capsys, name, text, said):
    suffix = Path(name).suffix
    code, err = _simulate(capsys, _trace(tmp_path, text, "trace" + suffix))
    assert code == 2, err
    assert err.startswith("error: --trace: ") and said in err and len(err.splitlines()) == 1, err


def test_a_spreadsheets_byte_order_mark_is_not_part_of_the_first_column(tmp_path, capsys):
    code, err = _simulate(capsys, _trace(tmp_path, "\ufeff" + GOOD_ROWS), "-o", "json")
    assert code == 0, err


@pytest.mark.parametrize("flags, named", [
    (("--time-scale", "1e308"), "--time-scale"),
    (("--rate-scale", "1e7"), "--rate-scale"),
    (("--max-replicas", "99999999999999"), "--max-replicas"),
    (("--cold-start", "1e300"), "--cold-start"),
    (("--lead-in", "1e300"), "--lead-in"),
    (("--metrics-outage", "5:-10"), "--metrics-outage"),
    (("--metrics-outage", "nan:inf"), "--metrics-outage"),
])
def test_simulate_bounds_its_flags(tmp_path, capsys, flags, named):
    code, err = _simulate(capsys, _trace(tmp_path, GOOD_ROWS), *flags)
    assert code == 2 and named in err.splitlines()[-1], err  # argparse's usage, then the one line


def test_a_trace_too_long_to_replay_is_refused_before_the_replay(tmp_path, capsys):
    """A span of months replays millions of decisions per policy: refused with the bound."""
    code, err = _simulate(capsys, _trace(tmp_path, "timestamp_s,input_tokens,output_tokens\n0,100,10\n1e7,100,10\n"))
    assert code == 2 and err.startswith("error: --trace: ") and "days" in err, err


@pytest.mark.parametrize("flag, value", [("--gpu-memory-gib", "1e300"), ("--gpu-memory-gib", "1e20")])
def test_gpu_memory_is_bounded_as_the_manifest_bounds_it(tmp_path, capsys, flag, value):
    code, err = _answer(capsys, "plan", "-f", SERVICE, flag, value)
    assert code == 2 and flag in err and "1024" in err, err


@pytest.mark.parametrize("argv", [
    ["run", "--metrics-port", "70000"], ["run", "--health-port", "99999"], ["model-list", "--port", "70000"]])
def test_ports_above_65535_are_refused(capsys, argv):
    code, err = _answer(capsys, *argv)
    assert code == 2 and "65535" in err, err


def _limited(argv: list[str], stdin: bytes | None = None, memory: int = 1 << 30) -> subprocess.CompletedProcess:
    """``kiln`` in a process of its own, its address space capped, so that an unbounded read
    fails there and not in the test runner."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT / "runtime")])}
    return subprocess.run([sys.executable, "-m", "kiln", *argv], input=stdin, capture_output=True,
                          timeout=120, preexec_fn=cap, env=env)


@pytest.mark.parametrize("argv, stdin", [
    (["plan", "-f", "/dev/zero"], None),
    (["plan", "-f", "-"], b"a: b\n" * 2_000_000),
    (["plan", "-f", SERVICE, "--model-config", "/dev/zero"], None),
])
def test_reads_are_bounded_whatever_the_file_says_its_size_is(argv, stdin):
    result = _limited(argv, stdin)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "more than" in err and "MemoryError" not in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("make", [
    lambda tmp: tmp / "afile",                 # an existing file
    lambda tmp: tmp / "afile" / "sub",         # under a file
    lambda tmp: Path("/proc/kiln-crds"),       # nowhere one can create a folder
])
def test_crds_into_a_folder_that_cannot_be_written_names_it(tmp_path, capsys, make):
    (tmp_path / "afile").write_text("x")
    target = make(tmp_path)
    code, _, err = _run(capsys, "crds", "-o", str(target))
    assert code == 2 and err.startswith("error: --output-dir: ") and len(err.splitlines()) == 1, err


def test_an_empty_output_folder_is_refused(capsys):
    code, out, err = _run(capsys, "crds", "-o", "")
    assert code == 2 and out == "" and err.startswith("error: --output-dir"), err


def test_output_that_cannot_be_written_is_not_read_as_a_verdict(tmp_path):
    """`kiln plan` exits 1 for "does not fit": a full disk must not say that."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "kiln", "plan", "-f", SERVICE], stdout=full,
                                stderr=subprocess.PIPE, timeout=120, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "operator")})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and "No space left on device" in result.stderr


def test_an_unexpected_failure_is_one_line_and_not_a_verdict(capsys, monkeypatch):
    import kiln.cli as cli

    def broken(args):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(cli, "cmd_plan", broken)
    code = cli.main(["plan", "-f", SERVICE])
    err = capsys.readouterr().err
    assert code == 70 and len(err.splitlines()) == 1 and "ZeroDivisionError" in err and "report" in err


@pytest.mark.parametrize("target, said", [
    ("folder", "is a folder"),
    ("out.txt", "PNG"),
    ("/proc/kiln.png", "cannot write"),
])
def test_a_plot_that_cannot_be_written_is_refused_before_the_run(tmp_path, capsys, target, said):
    (tmp_path / "folder").mkdir()
    path = target if target.startswith("/") else str(tmp_path / target)
    code, err = _simulate(capsys, _trace(tmp_path, GOOD_ROWS), "--plot", path)
    assert code == 2 and err.startswith("error: --plot: ") and said in err, err


@pytest.mark.parametrize("content", ["a: [", "", "[1, 2]", None])
def test_run_with_a_kubeconfig_that_is_not_one_says_so(tmp_path, capsys, monkeypatch, content):
    config = tmp_path / "config"
    if content is None:
        config.mkdir()
    else:
        config.write_text(content)
    monkeypatch.setenv("KUBECONFIG", str(config))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code, _, err = _run(capsys, "run", "--metrics-port", "0")
    assert code == 2 and err.startswith("error: ") and str(config) in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("argv, named", [
    (["run", "-n", "BAD_NS"], "--namespace"),
    (["run", "--leader-election-namespace", "BAD/NS"], "--leader-election-namespace"),
    (["run", "--public-model", "notasource"], "--public-model"),
    (["run", "--public-model", "hf://a/../b"], "--public-model"),
])
def test_run_refuses_names_kubernetes_would(capsys, argv, named):
    code, err = _answer(capsys, *argv)
    assert code == 2 and named in err, err


def test_a_duplicate_key_is_refused_as_the_api_server_refuses_it(tmp_path, capsys):
    path = tmp_path / "svc.yaml"
    path.write_text("apiVersion: serving.kiln.dev/v1alpha1\nkind: LLMService\nmetadata: {name: svc}\n"
                    "spec:\n  model: {source: hf://meta-llama/Llama-3.1-8B-Instruct}\n  gpus: 1\n  gpus: 8\n")
    code, _, err = _run(capsys, "plan", "-f", str(path))
    assert code == 2 and f"{path}:7:3" in err and "gpus" in err and "duplicate" in err, err


def test_compare_says_why_a_given_model_config_cannot_be_planned(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["FooForCausalLM"], "num_hidden_layers": 2, "hidden_size": 64,
                                  "num_attention_heads": 2, "vocab_size": 100}))
    code, _, err = _run(capsys, "plan", "-f", str(_write(tmp_path, {"model": {"source": "s3://bucket/foo"}})),
                        "--compare", "--model-config", str(config))
    assert code == 2 and "FooForCausalLM" in err and "pass --model-config" not in err, err


@pytest.mark.parametrize("raw, said", [("null", "must be a JSON object"),
                                      ('{"architectures": "LlamaForCausalLM"}', "architectures")])
def test_a_model_config_of_the_wrong_shape_is_refused(tmp_path, capsys, raw, said):
    config = tmp_path / "config.json"
    config.write_text(raw)
    code, _, err = _run(capsys, "plan", "-f", str(_write(tmp_path, {"model": LLAMA})), "--model-config", str(config))
    assert code == 2 and err.startswith("error: --model-config: ") and said in err, err


def test_model_list_answers_an_empty_list_for_a_malformed_file(tmp_path):
    import asyncio

    from kiln.modellist import model_list_app
    (tmp_path / "gw_public.json").write_text("not json")

    async def get() -> tuple[int, dict]:
        from aiohttp.test_utils import TestClient, TestServer
        async with TestClient(TestServer(model_list_app(tmp_path))) as client:
            response = await client.get("/v1/models", headers={"X-Kiln-Gateway": "gw/public"})
            return response.status, await response.json()
    status, body = asyncio.run(get())
    assert status == 200 and body == {"object": "list", "data": []}


def test_help_names_every_command_and_the_version(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "model-list" in capsys.readouterr().out.split("positional arguments")[0]
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    from kiln import __version__
    assert capsys.readouterr().out.strip() == f"kiln {__version__}"


def test_a_sequence_longer_than_the_models_positions_is_not_told_to_buy_a_larger_gpu(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 16, "hidden_size": 2048,
                                  "intermediate_size": 8192, "num_attention_heads": 16, "num_key_value_heads": 8,
                                  "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}))
    manifest = _write(tmp_path, {"model": {"source": "s3://models/llama-like"}, "engine": {"maxSeqLen": 8192}})
    code, out, _ = _run(capsys, "plan", "-f", str(manifest), "--model-config", str(config))
    assert code == 1 and "larger GPU" not in out, out
    assert "engine.maxSeqLen to at most 4096" in out, out


@pytest.mark.parametrize("argv, named", [
    (["run", "--metrics-port", "0", "--hub-endpoint", "http://a b"], "--hub-endpoint"),
    (["run", "--metrics-port", "0", "--s3-endpoint", "http://minio\t:9000"], "--s3-endpoint"),
])
def test_an_endpoint_with_whitespace_is_not_an_endpoint(capsys, argv, named):
    code, err = _answer(capsys, *argv)
    assert code == 2 and err.startswith(f"error: {named}"), err


def test_a_manifest_of_another_kind_is_named_with_its_file(tmp_path, capsys):
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n")
    code, _, err = _run(capsys, "plan", "-f", str(path))
    assert code == 2 and err == f"error: kind: 'ConfigMap' in {path} is not an LLMService\n", err


@pytest.mark.parametrize("command", ["plan", "render"])
def test_a_manifest_of_another_version_is_named_with_its_file(tmp_path, capsys, command):
    manifest = yaml.safe_load((ROOT / "examples" / "mistral-7b-fp16.yaml").read_text())
    manifest["apiVersion"] = "serving.kiln.dev/v1"
    path = tmp_path / "svc.yaml"
    path.write_text(yaml.safe_dump(manifest))
    code, _, err = _run(capsys, command, "-f", str(path))
    assert code == 2 and err == ("error: apiVersion: must be serving.kiln.dev/v1alpha1 (got 'serving.kiln.dev/v1' "
                                 f"in {path})\n"), err


def test_a_kv_cache_type_the_gpu_lacks_is_not_told_to_buy_a_larger_gpu(tmp_path, capsys):
    manifest = _write(tmp_path, {"model": LLAMA, "precision": "fp16", "kvCacheDtype": "fp8",
                                 "gpu": {"type": "A100-80GB"}})
    code, out, _ = _run(capsys, "plan", "-f", str(manifest))
    assert code == 1 and "larger GPU" not in out, out
    assert "kvCacheDtype: auto" in out, out


@pytest.mark.parametrize("make", [lambda p: os.mkfifo(p), lambda p: p.write_text('{"object": "list", "data": [1, "x", null]}')])
def test_model_list_answers_an_empty_list_for_a_fifo_or_a_list_of_no_models(tmp_path, make):
    import asyncio

    from kiln.modellist import model_list_app
    make(tmp_path / "gw_public.json")

    async def get() -> tuple[int, dict]:
        from aiohttp.test_utils import TestClient, TestServer
        async with TestClient(TestServer(model_list_app(tmp_path))) as client:
            response = await asyncio.wait_for(client.get("/v1/models", headers={"X-Kiln-Gateway": "gw/public"}), 10)
            return response.status, await response.json()
    assert asyncio.run(get()) == (200, {"object": "list", "data": []})
