"""kiln-runtime build: command lines checked against the recorded CLIs, and real builds with
fake TensorRT-LLM tools (tests/support/fake_trtllm.py)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
import sys
import time

import pytest
import yaml

from kiln.api.validation import parse_service_spec
from kiln.api.llmservice import CALIBRATED_PRECISIONS
from kiln.planner import catalog_config
from kiln.toolchain import NGC_ENTRYPOINT
from kiln.render.engine import build_spec, engine_for
from kiln_runtime import build, source
from kiln_runtime.cli import main, parser as runtime_parser
from kiln_runtime.errors import BadSpec
from kiln_runtime.spec import parse_build_spec

from ..conftest import EXAMPLES
from ..support import fake_trtllm
from ..support.planning import planned

REFERENCE = fake_trtllm.reference()
PRECISIONS = ["fp16", "bf16", "fp8", "int8-sq", "int4-awq", "w4a8-awq", "int8-wo", "int4-wo", "nvfp4"]


def _triton_examples():
    for path in EXAMPLES:
        manifest = yaml.safe_load(path.read_text())
        if manifest["spec"].get("runtime", {}).get("server", "triton") == "triton":
            yield path.stem, manifest


def _spec_for(manifest, precision, namespace="llm"):
    raw = copy.deepcopy(manifest["spec"])
    raw["precision"] = precision
    raw.pop("kvCacheDtype", None)
    if precision not in CALIBRATED_PRECISIONS:  # a calibration set is refused there
        raw["model"] = {k: v for k, v in raw["model"].items() if k != "calibration"}
    if precision == "nvfp4":
        raw["gpu"] = {**raw.get("gpu", {}), "type": "B200-180GB"}
    spec = parse_service_spec(raw)
    result, gpu = planned(spec)
    return build_spec(engine_for(spec, result, gpu, namespace)), catalog_config(spec.model.location)


def _check_against_reference(argv):
    """Every flag exists in the recorded CLI of its tool, with a value of the recorded kind."""
    tool = fake_trtllm.tool_of(argv[1] if argv[0].startswith("python") else argv[0])
    table = REFERENCE[tool]
    args = argv[2:] if argv[0].startswith("python") else argv[1:]
    i = 0
    while i < len(args):
        flag = args[i]
        assert flag in table, f"{tool} has no {flag}"
        info = table[flag]
        if info["type"] == "flag":
            i += 1
            continue
        value = args[i + 1]
        assert not value.startswith("--"), f"{tool} {flag} needs a value"
        choices = [c for c in (info.get("choices") or []) if c is not None]
        if choices:
            assert value in [str(c) for c in choices], f"{tool} {flag} {value} not in {choices}"
        if info["type"].startswith("int"):
            int(value)
        i += 2
    fake_trtllm.parser_for(tool).parse_args(args)  # and argparse agrees


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("example", [name for name, _ in _triton_examples()])
def test_dry_run_steps_exist_in_the_recorded_clis(example, precision):
    manifest = dict(_triton_examples())[example]
    raw, config = _spec_for(manifest, precision)
    result = build.dry_run(parse_build_spec(raw), config)
    names = [step["name"] for step in result["steps"]]
    multi_node = "gpusPerNode" in raw
    calibrated = "calibration" in raw
    assert names == ["download", *(["calibration"] if calibrated else []), "checkpoint",
                     *(["mapping"] if multi_node else []), "engine", "verify", "publish"]
    for step in result["steps"]:
        argv = step["argv"]
        if argv[0] == "kiln-runtime":
            runtime_parser().parse_args(argv[1:])  # our own subcommands, with our own flags
        else:
            _check_against_reference(argv)
    checkpoint = next(step["argv"] for step in result["steps"] if step["name"] == "checkpoint")
    quantized = precision in ("fp8", "int8-sq", "int4-awq", "w4a8-awq", "nvfp4")
    assert ("quantize.py" in checkpoint[1]) == (quantized and "checkpointRecipe" not in raw)
    if calibrated:  # the set Kiln copied and checked, in a directory of its own
        assert checkpoint[checkpoint.index("--calib_dataset") + 1] == f"{raw['workDir']}/calibration"
    else:
        assert "--calib_dataset" not in checkpoint


def test_dry_run_cli_prints_steps_and_touches_nothing(tmp_path, capsys):
    manifest = dict(_triton_examples())["llama-3.1-70b-fp8-tp4"]
    raw, config = _spec_for(manifest, "fp8")
    raw["cacheDir"] = str(tmp_path / "cache")
    raw["workDir"] = str(tmp_path / "work")
    (tmp_path / "spec.json").write_text(json.dumps(raw))
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["build", "--spec", str(tmp_path / "spec.json"), "--dry-run",
                 "--model-config", str(tmp_path / "config.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in printed["steps"]][1:3] == ["checkpoint", "engine"]
    assert "--tp_size" in printed["steps"][1]["argv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "spec.json"]


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    env = fake_trtllm.install(tmp_path / "fakes")
    calls = tmp_path / "calls.jsonl"
    env["KILN_FAKE_CALLS"] = str(calls)
    env["KILN_TERMINATION_LOG"] = str(tmp_path / "termination-log")
    model = fake_trtllm.tiny_model(tmp_path / "models" / "tiny")
    spec = {"engineKey": "ab" * 32, "engineName": "tiny-0123456789", "model": {"source": str(model), "revision": "main"},
            "precision": "fp8", "kvCacheDtype": "fp8", "tensorParallel": 2, "pipelineParallel": 1,
            "gpuArch": "sm90", "toolchain": "tensorrt-llm==1.2.1",
            "limits": {"maxBatchSize": 8, "maxInputLen": 512, "maxSeqLen": 1024, "maxNumTokens": 1024,
                       "tokensPerBlock": 32},
            "cacheDir": str(tmp_path / "cache"), "workDir": str(tmp_path / "work")}
    return {"env": {**os.environ, **env}, "calls": calls, "spec": spec, "root": tmp_path}


def _run(fakes, spec=None, extra_env=None):
    env = {**fakes["env"], "KILN_BUILD_SPEC": json.dumps(spec or fakes["spec"]), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "kiln_runtime", "build"], env=env,
                          capture_output=True, text=True, timeout=120)


def _calls(fakes):
    if not fakes["calls"].exists():
        return []
    return [json.loads(line)[0] for line in fakes["calls"].read_text().splitlines()]


def test_build_publishes_a_complete_entry_then_reuses_it(fakes):
    first = _run(fakes)
    assert first.returncode == 0, first.stderr
    assert "[2/4] engine: trtllm-build" in first.stderr and "done in" in first.stderr
    assert _calls(fakes) == ["quantize.py", "trtllm-build"]
    entry = fakes["root"] / "cache" / ("ab" * 32)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["engineKey"] == "ab" * 32
    assert manifest["toolchain"]["tensorrt_llm"] == "1.2.1"
    assert manifest["inputs"]["precision"] == "fp8" and manifest["inputs"]["tensorParallel"] == 2
    assert set(manifest["files"]) >= {"engine/config.json", "engine/rank0.engine", "engine/rank1.engine",
                                      "tokenizer/tokenizer.json", "tokenizer/config.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert manifest["engineBytes"] > 0
    assert not (fakes["root"] / "cache" / ".staging" / ("ab" * 32)).exists()
    report = json.loads((fakes["root"] / "termination-log").read_text())
    assert report["result"] == "built" and report["engineBytes"] == manifest["engineBytes"]

    second = _run(fakes)
    assert second.returncode == 0, second.stderr
    assert "reusing" in second.stderr
    assert _calls(fakes) == ["quantize.py", "trtllm-build"]  # the fakes were not called again
    assert json.loads((fakes["root"] / "termination-log").read_text())["result"] == "reused"


@pytest.mark.parametrize("tool, step", [("quantize.py", "checkpoint"), ("trtllm-build", "engine")])
def test_a_failing_step_leaves_no_partial_entry(fakes, tool, step):
    result = _run(fakes, extra_env={"KILN_FAKE_FAIL": tool})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: step '{step}' failed") and "exited with 3" in last
    assert "Traceback" not in result.stderr
    cache = fakes["root"] / "cache"
    assert not (cache / ("ab" * 32)).exists()
    assert not list((cache / ".staging").iterdir())
    report = json.loads((fakes["root"] / "termination-log").read_text())
    assert report["result"] == "failed" and report["step"] == step


def test_a_build_killed_mid_step_leaves_no_entry_and_the_next_build_completes(fakes):
    """Deleting a service (or its Job) mid-build: the kubelet kills the build container,
    at worst with SIGKILL, which no cleanup handler sees. The cache must not hold an entry
    that looks complete, and the next build for the key must build it whole."""
    env = {**fakes["env"], "KILN_BUILD_SPEC": json.dumps(fakes["spec"]), "KILN_FAKE_HANG": "trtllm-build"}
    build_process = subprocess.Popen([sys.executable, "-m", "kiln_runtime", "build"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "trtllm-build" not in _calls(fakes):
            assert build_process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # one rank's engine is written; the next is being built
    finally:
        os.killpg(build_process.pid, signal.SIGKILL)
        build_process.wait(30)
    cache = fakes["root"] / "cache"
    assert list((cache / ".staging" / ("ab" * 32)).rglob("rank0.engine")), "killed mid-step"
    assert not (cache / ("ab" * 32)).exists()

    again = _run(fakes)
    assert again.returncode == 0, again.stderr
    entry = cache / ("ab" * 32)
    manifest = json.loads((entry / "manifest.json").read_text())
    assert {"engine/rank0.engine", "engine/rank1.engine"} <= set(manifest["files"])
    assert not (cache / ".staging" / ("ab" * 32)).exists()


def test_weight_only_uses_the_converter(fakes):
    spec = {**fakes["spec"], "precision": "int4-wo", "kvCacheDtype": "bf16", "engineKey": "cd" * 32}
    result = _run(fakes, spec)
    assert result.returncode == 0, result.stderr
    assert _calls(fakes) == ["convert_checkpoint.py", "trtllm-build"]


def test_an_incomplete_leftover_is_not_reused(fakes):
    leftover = fakes["root"] / "cache" / ("ab" * 32)
    (leftover / "engine").mkdir(parents=True)  # a crash between rename attempts: no manifest
    result = _run(fakes)
    assert result.returncode == 0, result.stderr
    assert (leftover / "manifest.json").is_file()
    assert _calls(fakes) == ["quantize.py", "trtllm-build"]


@pytest.mark.parametrize("change, message", [
    ({"precision": "nvfp4"}, "precision: nvfp4 needs GPU architecture sm100"),
    ({"precision": "fp9"}, "precision: 'fp9' is not one of"),
    ({"tensorParallel": 3}, "tensorParallel: 3 does not divide the 4 attention heads"),
    ({"limits": {"maxBatchSize": 8}}, "limits.maxInputLen: required"),
])
def test_bad_specs_fail_before_any_download(fakes, change, message):
    result = _run(fakes, {**fakes["spec"], **change})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr
    assert _calls(fakes) == []
    assert not (fakes["root"] / "cache").exists()


def test_gated_model_without_token_is_named(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    from types import SimpleNamespace

    response = SimpleNamespace(status_code=403, headers={}, request=None)  # what the error reads

    def gated(*args, **kwargs):
        raise GatedRepoError("403 gated", response=response)

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", gated)
    with pytest.raises(BadSpec, match="gated model and no HF_TOKEN.*secretName"):
        source.read_config("hf://meta-llama/Llama-3.1-8B-Instruct", "main")


def test_operator_build_spec_is_what_the_runtime_reads():
    for _, manifest in _triton_examples():
        raw, _ = _spec_for(manifest, manifest["spec"].get("precision", "bf16"))
        parsed = parse_build_spec(raw)
        assert parsed.engine_key == raw["engineKey"]
        assert parsed.inputs()["limits"] == raw["limits"]


def _commands(obj):
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        command = container.get("command") or []
        # run through the image's entrypoint, which ends in exec "$@"
        yield command[1:] if command[:1] == [NGC_ENTRYPOINT] else command
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = (container.get(kind) or {}).get("exec")
            if probe:
                yield probe["command"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_rendered_runtime_command_is_one_the_runtime_has(path):
    result = subprocess.run([sys.executable, "-m", "kiln", "render", "-f", str(path), "-o", "json"],
                            capture_output=True, text=True, timeout=60)
    seen = 0
    for obj in json.loads(result.stdout)["items"]:
        for command in _commands(obj):
            if command[:1] == ["kiln-runtime"]:
                runtime_parser().parse_args(command[1:])
                seen += 1
    assert seen >= 1


def test_a_tokenizer_with_remote_code_is_published_with_its_module(fakes):
    """THUDM/glm-4-9b-chat's tokenizer is tokenization_chatglm.ChatGLM4Tokenizer (its
    tokenizer_config.json's auto_map) over a tiktoken file: Triton's preprocessing model loads
    it from the entry with trust_remote_code, so the module goes in with it. A name that is
    not a plain module, or one in another repository, is not copied."""
    model = fakes["root"] / "models" / "tiny"
    (model / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": [
        "tokenization_chatglm.ChatGLM4Tokenizer", None]}}))
    (model / "tokenization_chatglm.py").write_text("class ChatGLM4Tokenizer: ...\n")
    (model / "qwen.tiktoken").write_text("IQ== 0\n")
    (model / "modeling_chatglm.py").write_text("# the model's own code: not the tokenizer's\n")
    result = _run(fakes)
    assert result.returncode == 0, result.stderr
    tokenizer = fakes["root"] / "cache" / ("ab" * 32) / "tokenizer"
    assert {"tokenization_chatglm.py", "qwen.tiktoken", "tokenizer_config.json"} <= {p.name for p in tokenizer.iterdir()}
    assert not (tokenizer / "modeling_chatglm.py").exists()


@pytest.mark.parametrize("auto_map", [
    {"AutoTokenizer": ["../../etc/passwd.X", None]}, {"AutoTokenizer": "org/other--tokenization_x.T"},
    {"AutoTokenizer": [{"a": 1}]}, ["not", "a", "map"], {"AutoTokenizer": ["/abs/path.X"]}])
def test_a_hostile_auto_map_copies_nothing(tmp_path, auto_map):
    from kiln_runtime.cache import tokenizer_code

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"auto_map": auto_map}))
    assert tokenizer_code(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to run a build as uid 1000")
def test_a_cache_volume_the_build_cannot_write_is_named_with_the_fix(fakes):
    """A ReadWriteMany volume whose CSI driver does not apply fsGroup stays root's: the build
    (uid 1000, as in the image) says so in one line and in its termination log, before any
    download, instead of a PermissionError on the lock file."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="kiln-rootowned-"))
    try:
        root.chmod(0o755)
        (root / "cache").mkdir(mode=0o755)  # root's, as an NFS export is
        log = root / "log"
        log.mkdir()
        log.chmod(0o777)
        model = fake_trtllm.tiny_model(root / "model")  # readable by uid 1000
        spec = {**fakes["spec"], "model": {"source": str(model), "revision": "main"},
                "cacheDir": str(root / "cache"), "workDir": str(log / "work")}
        env = {**fakes["env"], "KILN_BUILD_SPEC": json.dumps(spec), "KILN_TERMINATION_LOG": str(log / "report"),
               "HOME": str(log)}
        result = subprocess.run(["setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
                                 sys.executable, "-m", "kiln_runtime", "build"],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert "not writable by uid 1000, gid 1000" in result.stderr and "Traceback" not in result.stderr
        assert json.loads((log / "report").read_text())["step"] == "cache"
        assert _calls(fakes) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_multi_node_build_refuses_a_tokenizer_that_runs_code_of_its_own_before_any_gpu_work(fakes):
    """An engine built across nodes serves only from a multi-node leader, which mounts the
    token that may exec into its workers and refuses to load a tokenizer with an ``auto_map``
    (Triton loads it with trust_remote_code: ``kiln_runtime.serve``). The build says so before
    the checkpoint step, as a failed build the service's status shows, instead of leaving an
    engine whose leader crash-loops. One node builds it as before (GLM-4's tokenizer)."""
    model = Path(fakes["spec"]["model"]["source"])
    (model / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["tokenization_glm.GLMTokenizer", None]}}))
    (model / "tokenization_glm.py").write_text("class GLMTokenizer: ...\n")
    result = _run(fakes, {**fakes["spec"], "gpusPerNode": 1})
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: step 'checkpoint' failed: the model's tokenizer runs code of its own "
                           "(tokenizer_config.json's auto_map)") and "one node" in last, last
    assert _calls(fakes) == []
    report = json.loads((fakes["root"] / "termination-log").read_text())
    assert report["result"] == "failed" and report["step"] == "checkpoint"
    assert _run(fakes).returncode == 0
