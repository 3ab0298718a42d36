"""Break-tests of the code that runs inside the pods: each test is an attack, run against the
runtime as it is (a link planted on the shared cache volume, an HTTP client that never finishes
its request, a log line the server prints with text a tenant chose, a Hub listing that never
ends, hostile bucket keys and volume layouts, hostile model-list headers)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln_runtime import cache, source
from kiln_runtime.errors import BadSpec, StepFailed

KEY = "ab" * 32


class _Bucket:
    """An S3 client whose listing is ``keys`` and whose downloads write ``{}``."""

    def __init__(self, keys):
        self.keys = keys
        self.downloaded: list[str] = []

    def get_paginator(self, _):
        bucket = self

        class Pages:
            def paginate(self, **_):
                yield {"Contents": [{"Key": key, "Size": 2} for key in bucket.keys]}
        return Pages()

    def download_file(self, bucket, key, target):
        self.downloaded.append(target)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text("{}")

    def get_object(self, **_):
        return {"Body": io.BytesIO(b"{}")}


# --- findings --------------------------------------------------------------------------------

def _linked_locks(tmp_path):
    """A cache whose ``.locks`` is a link to a directory outside it: (the cache, the outside)."""
    cache_dir, outside = tmp_path / "cache", tmp_path / "outside"
    cache_dir.mkdir()
    outside.mkdir()
    (cache_dir / ".locks").symlink_to(outside)
    return cache_dir, outside


def test_a_linked_locks_directory_gets_no_lock_file_outside_the_cache(tmp_path):
    """<cache>/.locks planted as a link (as .staging and .work are guarded against): the build
    lock is created in whatever it points to, outside the cache."""
    cache_dir, outside = _linked_locks(tmp_path)
    with pytest.raises(StepFailed, match="lock"):
        with cache.build_lock(cache_dir / ".locks" / f"{KEY}.lock"):
            pass
    assert list(outside.iterdir()) == []


def test_the_write_probe_is_not_made_through_a_linked_locks_directory(tmp_path):
    cache_dir, outside = _linked_locks(tmp_path)
    with pytest.raises(StepFailed, match=".locks"):
        cache.check_writable(cache_dir)
    assert list(outside.iterdir()) == []


def test_deleting_an_entry_takes_no_lock_through_a_linked_locks_directory(tmp_path):
    cache_dir, outside = _linked_locks(tmp_path)
    (cache_dir / KEY).mkdir()
    with pytest.raises(StepFailed, match="lock"):
        cache.delete_entry(cache_dir, KEY)
    assert list(outside.iterdir()) == []


def _relay_with_no_upstream():
    from kiln_runtime.openai_frontend import MetricsRelay

    return MetricsRelay(0, "http://127.0.0.1:9/metrics", host="127.0.0.1").start()


def test_the_metrics_relay_drops_a_connection_that_sends_nothing(monkeypatch):
    """Slowloris on the metrics port (open to any pod when spec.networkPolicy is off, the
    default): each idle connection holds one of the relay's threads for ever."""
    from kiln_runtime import openai_frontend

    monkeypatch.setattr(openai_frontend, "RELAY_TIMEOUT_SECONDS", 2.0, raising=False)
    relay = _relay_with_no_upstream()
    idle = []
    try:
        for n in range(6):
            connection = socket.create_connection(("127.0.0.1", relay.port))
            if n % 2:
                connection.sendall(b"GET /metr")  # half a request line, then nothing
            idle.append(connection)
        for connection in idle:
            connection.settimeout(15)
            try:  # the server closes it (after a 408 for a partial request line, or nothing)
                while connection.recv(1024):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for connection in idle:
            connection.close()
        relay.stop()


def test_the_metrics_relay_holds_a_bounded_number_of_connections(monkeypatch):
    """A flood of connections that send nothing: one thread each, without a bound."""
    from kiln_runtime import openai_frontend

    monkeypatch.setattr(openai_frontend, "RELAY_MAX_CONNECTIONS", 8, raising=False)
    relay = _relay_with_no_upstream()
    before = threading.active_count()
    idle = []
    try:
        for _ in range(80):
            idle.append(socket.create_connection(("127.0.0.1", relay.port)))
        time.sleep(1.0)
        assert threading.active_count() <= before + 8 + 2, threading.active_count() - before
    finally:
        for connection in idle:
            connection.close()
        relay.stop()


def test_a_tenant_chosen_log_line_does_not_stop_the_server_log_reader(tmp_path, monkeypatch):
    """Before the engine's KV line, the server's output carries text a tenant chose (its
    tokenizer's warnings, its remote code's prints): a look-alike line with a number that is
    not one raised ValueError out of run_server, the serving container's main loop."""
    from kiln_runtime.serve import parse_serve_spec, run_server

    lines = ("[TensorRT-LLM][WARNING] token 'Allocated 1.2.3 GiB for max tokens in paged KV cache (7)'\n"
             "Number of blocks in KV cache primary pool: " + "9" * 5000 + "\n"
             "[TensorRT-LLM][INFO] [MemUsageChange] Allocated 57.80 GiB for max tokens in paged KV cache (405248).\n")
    fake = tmp_path / "tritonserver"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({lines!r})\nsys.exit(7)\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("KILN_TRITONSERVER", str(fake))
    capacity = tmp_path / "kv.json"
    spec = parse_serve_spec(json.dumps({"engineDir": "/engines/k", "tensorParallel": 1, "pipelineParallel": 1,
                                        "kvCacheFreeGpuMemFraction": 0.9}))
    assert run_server(spec, tmp_path / "repo", capacity_file=capacity) == 7
    assert json.loads(capacity.read_text())["kvCacheCapacity"] == {"tokens": 405248, "gib": 57.8}


def test_a_hub_listing_is_cut_like_a_buckets(tmp_path, monkeypatch):
    """security.md: "a listing is cut at 100,000 objects". A Hub repository (or mirror) that
    lists files for ever is read to its end before anything is checked."""
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile

    read = {"n": 0}

    def tree(self, repo_id, path_in_repo=None, *, recursive=False, revision=None, **kw):
        while True:
            read["n"] += 1
            if read["n"] > 3 * source.MAX_LISTED_OBJECTS:
                raise AssertionError(f"read {read['n']} listed files")
            yield RepoFile(path=f"f{read['n']}.txt", size=1, oid="x", blob_id="x")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", tree)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("downloaded")))
    with pytest.raises(BadSpec, match="more than"):
        source.download("hf://org/model", "main", tmp_path / "model")
    assert read["n"] <= source.MAX_LISTED_OBJECTS + 1


def test_a_hub_model_of_too_many_wanted_files_is_refused_before_the_download(tmp_path, monkeypatch):
    """snapshot_download matches every file of the repository against every allow pattern
    (huggingface_hub ``utils/_paths.py``, ``filter_repo_objects``), one pattern per wanted file
    here: time grows with the square of the files (4,000 took 1.9 s, 100,000 would take about
    20 minutes of the build's GPU node). A model needs a few hundred at most."""
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile

    names = ["config.json"] + [f"w/{i}.json" for i in range(source.MAX_HUB_FILES + 1)]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree",
                        lambda self, repo_id, path_in_repo=None, **kw: (
                            RepoFile(path=name, size=1, oid="x", blob_id="x") for name in names))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("downloaded")))
    with pytest.raises(BadSpec, match=f"more than {source.MAX_HUB_FILES} files"):
        source.download("hf://org/model", "main", tmp_path / "model")


def test_a_hub_repository_of_many_files_beside_the_model_is_refused_before_the_download(tmp_path, monkeypatch):
    """snapshot_download matches every file the repository lists, not only those wanted, against
    every pattern: 2,000 wanted among 60,000 listed is as slow as 11,000 wanted alone."""
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile

    names = [f"w/{i}.json" for i in range(2000)] + [f"junk/{i}.bin" for i in range(60_000)]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree",
                        lambda self, repo_id, path_in_repo=None, **kw: (
                            RepoFile(path=name, size=1, oid="x", blob_id="x") for name in names))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("downloaded")))
    with pytest.raises(BadSpec, match="too many to match one by one"):
        source.download("hf://org/model", "main", tmp_path / "model")


def _entry_with_tokenizer(tmp_path: Path, files: dict[str, str]) -> Path:
    """A published cache entry (one rank) whose model directory held ``files``."""
    model, staging = tmp_path / "model", tmp_path / "staging"
    model.mkdir()
    for name, text in files.items():
        (model / name).write_text(text)
    (staging / "engine").mkdir(parents=True)
    (staging / "engine" / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 4}}))
    (staging / "engine" / "rank0.engine").write_bytes(b"engine-0")
    (tmp_path / "cache").mkdir()
    cache.publish(staging, tmp_path / "cache", KEY, model, {}, {}, 1.0)
    return tmp_path / "cache" / KEY


_REMOTE_CODE = {
    "tokenizer-module": {"tokenizer_config.json": json.dumps(
        {"auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}}),
        "tokenization_evil.py": "import os  # reads the launcher's token, execs into a pod\n"},
    "hub-module": {"tokenizer_config.json": json.dumps(
        {"auto_map": {"AutoTokenizer": ["attacker/repo--tokenization_evil.EvilTokenizer", None]}})},
    "config-module": {"tokenizer_config.json": "{}", "config.json": json.dumps(
        {"architectures": ["LlamaForCausalLM"], "auto_map": {"AutoConfig": "attacker/repo--evil.Config"}})},
}


@pytest.mark.parametrize("files", _REMOTE_CODE.values(), ids=_REMOTE_CODE.keys())
def test_a_tokenizers_remote_code_does_not_run_beside_the_launcher_token(tmp_path, files):
    """A multi-node leader mounts the ``<name>-launcher`` token, which may exec into pods named
    like its group's workers; the threat model keeps an author's own code away from it (a
    custom image needs ``multiNode.customImages``). But Triton's preprocessing model loads the
    entry's tokenizer with ``trust_remote_code=True`` (TensorRT-LLM ``triton_backend/all_models/
    inflight_batcher_llm/preprocessing/1/model.py``), so a tokenizer_config.json or config.json
    ``auto_map`` (a module in the model, or ``org/repo--module`` fetched from the Hub at start:
    egress is open) runs the model's Python in the leader. The leader refuses it before writing
    its repository; a single-node pod, which holds no token, still serves it (GLM-4's tokenizer)."""
    from kiln_runtime.group import Group
    from kiln_runtime.serve import parse_serve_spec, prepare

    from ..support.triton_templates import write_templates

    entry = _entry_with_tokenizer(tmp_path, files)
    templates = write_templates(tmp_path / "templates")
    spec = parse_serve_spec(json.dumps({"engineDir": str(entry), "tensorParallel": 1, "pipelineParallel": 1,
                                        "kvCacheFreeGpuMemFraction": 0.9}))
    with pytest.raises(BadSpec, match=r"^engineDir: the model's tokenizer runs code of its own \((tokenizer_)?"
                                      r"config\.json's auto_map\).*multi-node leader"):
        prepare(spec, tmp_path / "leader", templates, Group("g-0.g.ns", size=2, slots=1), 0)
    assert not (tmp_path / "leader" / "preprocessing").exists()
    prepare(spec, tmp_path / "single", templates)
    assert (tmp_path / "single" / "preprocessing" / "config.pbtxt").is_file()


def _build_spec(tmp_path):
    """A build spec (fp8, TP 2) in a file, for ``build --dry-run``."""
    spec = {"engineKey": KEY, "engineName": "tiny-0123456789", "model": {"source": "s3://bucket/model", "revision": "main"},
            "precision": "fp8", "kvCacheDtype": "fp8", "tensorParallel": 2, "pipelineParallel": 1,
            "gpuArch": "sm90", "toolchain": "tensorrt-llm==1.2.1",
            "limits": {"maxBatchSize": 8, "maxInputLen": 512, "maxSeqLen": 1024, "maxNumTokens": 1024,
                       "tokensPerBlock": 32},
            "cacheDir": str(tmp_path / "cache"), "workDir": str(tmp_path / "work")}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("body", [b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                  b'{"num_hidden_layers": ' + b"9" * 5000 + b"}",
                                  b'{"architectures": ["Llama\xff"]}'], ids=["deep", "digits", "not-utf-8"])
def test_a_dry_run_s_model_config_that_is_not_json_is_bad_input_naming_the_flag(tmp_path, capsys, body):
    """``kiln-runtime build --dry-run --model-config`` read the file with ``json.loads`` and
    caught only JSONDecodeError: nesting, a 5,000-digit number or a byte that is not UTF-8 was
    ``error: RecursionError: ...`` and exit 1, which the runtime says for a failed step."""
    from kiln_runtime.cli import main

    config = tmp_path / "config.json"
    config.write_bytes(body)
    code = main(["build", "--spec", str(_build_spec(tmp_path)), "--dry-run", "--model-config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --model-config: ") and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("field, value", [("num_attention_heads", 0.5), ("num_key_value_heads", 0.5),
                                          ("num_hidden_layers", 0.5), ("num_attention_heads", -64),
                                          ("num_hidden_layers", True), ("num_key_value_heads", 5)])
def test_a_head_or_layer_count_that_is_not_a_count_is_refused_naming_it(tmp_path, field, value):
    """A head count of 0.5 was read as int(0.5) == 0, "no heads", and the tensor-parallel check
    skipped; -64 heads passed it (-64 % 2 == 0), and 5 KV heads for 32 heads (no whole groups):
    a build of an s3:// or volume source, whose config the operator does not read, ran on to
    fail in TensorRT-LLM's converter."""
    from kiln_runtime.spec import load_build_spec
    from kiln_runtime.steps import check_model

    config = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 32, "num_key_value_heads": 8,
              "num_hidden_layers": 32, field: value}
    with pytest.raises(BadSpec, match=field):
        check_model(load_build_spec(str(_build_spec(tmp_path))), config)


# --- attacks the code withstood --------------------------------------------------------------

@pytest.mark.parametrize("key", ["model/../../x.json", "model//abs.json", "model/a/../../b.json",
                                 "model/a\\..\\..\\b.json", "model/x\x00.json", "model/\x1b[2Jx.json",
                                 "model/../model2/config.json"])
def test_withstood_hostile_bucket_keys_write_nothing_outside(tmp_path, monkeypatch, key):
    bucket = _Bucket(["model/config.json", key])
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    out = tmp_path / "work" / "model"
    try:
        source.download("s3://bucket/model", "main", out)
    except BadSpec:
        pass
    for target in bucket.downloaded:
        assert Path(os.path.realpath(target)).is_relative_to(out.resolve()), target
    assert {p for p in tmp_path.rglob("*") if p.is_file()} <= {p for p in out.rglob("*")}


def test_withstood_a_key_outside_the_prefix_is_refused(tmp_path, monkeypatch):
    bucket = _Bucket(["model/config.json", "modelX/config.json"])
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    with pytest.raises(BadSpec, match="outside it"):
        source.download("s3://bucket/model", "main", tmp_path / "model")
    assert bucket.downloaded == []


def test_withstood_a_linked_directory_in_a_mounted_source(tmp_path):
    volume = tmp_path / "vol"
    (volume / "m").mkdir(parents=True)
    (volume / "m" / "config.json").write_text("{}")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "tokenizer.json").write_text("SECRET")
    (volume / "m" / "sub").symlink_to(secret)
    # _mounted(check_files=True) checks every name os.walk lists (a linked directory among
    # them, not descended into) with inside(<mount>, ...): here the volume stands for the mount.
    for relative in ("m/sub", "m/sub/tokenizer.json"):
        with pytest.raises(BadSpec, match="resolves outside"):
            source.inside(volume, relative, "the file")


def test_withstood_a_calibration_link_to_the_environment(tmp_path):
    claim = tmp_path / "claim"
    claim.mkdir()
    (claim / "a.jsonl").symlink_to("/proc/self/environ")
    with pytest.raises(BadSpec):
        source.fetch_calibration(str(claim), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_withstood_a_compressed_calibration_file(tmp_path):
    import gzip

    claim = tmp_path / "claim"
    claim.mkdir()
    (claim / "a.jsonl").write_bytes(gzip.compress(b'{"text": "x"}\n' * 1000))
    with pytest.raises(BadSpec, match="compressed"):
        source.fetch_calibration(str(claim), tmp_path / "out")


def test_withstood_a_manifest_naming_a_path_out_of_the_entry(tmp_path):
    entry = tmp_path / "cache" / KEY
    (entry / "engine").mkdir(parents=True)
    (tmp_path / "victim").write_bytes(b"x")
    for name in ("engine/../../../victim", "/etc/passwd", "engine/./../../../victim"):
        (entry / "manifest.json").write_text(json.dumps({
            "engineKey": KEY, "files": {"engine/config.json": {"bytes": 2}, "engine/rank0.engine": {"bytes": 1},
                                        name: {"bytes": 1}}}))
        assert "bad entry" in cache.damage(entry, digests=True), name


def test_withstood_a_linked_engine_folder(tmp_path):
    other = tmp_path / "cache" / ("cd" * 32)
    (other / "engine").mkdir(parents=True)
    (other / "engine" / "config.json").write_text("{}")
    (other / "engine" / "rank0.engine").write_bytes(b"e")
    entry = tmp_path / "cache" / KEY
    entry.mkdir()
    (entry / "engine").symlink_to(other / "engine")
    (entry / "manifest.json").write_text(json.dumps({
        "engineKey": KEY, "files": {"engine/config.json": {"bytes": 2}, "engine/rank0.engine": {"bytes": 1}}}))
    assert "not a regular file of the entry" in cache.damage(entry, digests=True)


@pytest.mark.parametrize("header", ["gw/x/../../secret", "GW/X", "gw/x\t", "gw/x.json", "/gw/x", "gw/x/",
                                    "ｇw/x", "gw%2fx", "gw/" + "a" * 300])
async def test_withstood_model_list_headers(tmp_path, header):
    from aiohttp.test_utils import TestClient, TestServer

    from kiln.modellist import MODEL_LIST_HEADER, model_list_app

    (tmp_path / "secret").write_text('{"object": "list", "data": [{"id": "leaked"}]}')
    (tmp_path / "lists").mkdir()
    async with TestClient(TestServer(model_list_app(tmp_path / "lists"))) as client:
        response = await client.get("/v1/models", headers={MODEL_LIST_HEADER: header})
        assert response.status == 200
        assert "leaked" not in await response.text()


async def test_withstood_model_list_body_and_header_floods(tmp_path):
    from aiohttp.test_utils import TestClient, TestServer

    from kiln.modellist import MODEL_LIST_HEADER, model_list_app

    async with TestClient(TestServer(model_list_app(tmp_path))) as client:
        response = await client.get("/v1/models", headers={MODEL_LIST_HEADER: "g/" + "a" * 20000})
        assert response.status in (400, 431)
        response = await client.post("/v1/models", data=io.BytesIO(b"x" * 10_000_000))
        assert response.status in (405, 413)


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028"])
def test_a_key_with_a_c1_control_or_line_separator_is_refused(tmp_path, monkeypatch, capsys, char):
    """The download log prints each key as it is: C1 controls (NEL, the 8-bit CSI) and U+2028
    are control characters and line breaks as much as the C0 ones the check refuses."""
    bucket = _Bucket([f"model/a{char}[4/4] publish: done.json"])
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    with pytest.raises(BadSpec, match="control character"):
        source.download("s3://bucket/model", "main", tmp_path / "model")
    assert char not in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [
    ("servedModelName", 'llm"\nmax_batch_size: 1\n#'),  # a second pbtxt field after the name
    ("servedModelName", "llm}\ninstance_group [{ count: 64 }]"),
    ("servedModelName", "${engine_dir}"),
    ("servedModelName", "llm\n"),  # Python's `$` matches before a final newline
    ("model.source", "pvc://models/llama\noption.trust_remote_code=true"),  # a serving.properties line
])
def test_withstood_a_value_written_to_add_a_line_to_config_pbtxt_or_serving_properties(field, value):
    """The served model name becomes ``name: "<it>"`` in the BLS model's config.pbtxt, and a
    pvc:// source's path DJL's ``option.model_id`` in serving.properties (a line per key): a
    quote, a brace, a newline or a placeholder would add a field or a property. The schema
    refuses each (pydantic here, the same pattern in the CRD), and the serve spec the runtime
    reads refuses a name the pattern does not match."""
    from kiln.api import parse_service_spec
    from kiln.errors import SpecInvalid
    from kiln_runtime.serve import parse_serve_spec

    spec: dict = {"model": {"source": "hf://a/b"}}
    if field == "model.source":
        spec["model"]["source"] = value
    else:
        spec[field] = value
    with pytest.raises(SpecInvalid, match=rf"^spec\.{field}: "):
        parse_service_spec(spec)
    if field == "servedModelName":
        with pytest.raises(BadSpec, match="^servedModelName: "):
            parse_serve_spec(json.dumps({"engineDir": "/cache/" + KEY, "tensorParallel": 1, "pipelineParallel": 1,
                                         "kvCacheFreeGpuMemFraction": 0.9, "servedModelName": value,
                                         "ports": {"http": 8000, "grpc": 8001, "openai": 9000}}))
