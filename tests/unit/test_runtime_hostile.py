"""The runtime against what a tenant, a bucket or a shared volume may hold: a build never
copies a file from outside its source into the engine cache, never writes through a link, never
reads without a bound; a server never takes a link or a file the manifest does not list for
part of its engine; and names that would overwrite one of Triton's own models are refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kiln_runtime import cache, source
from kiln_runtime.errors import BadSpec, StepFailed

from ..support import fake_trtllm
from .test_runtime_build import _run, fakes  # noqa: F401  (the fixture)

KEY = "ab" * 32


class _Bucket:
    """An S3 client whose listing is ``pages()`` (an iterable of pages) and whose downloads
    write ``{}``: the store's word, whatever it says."""

    def __init__(self, pages):
        self.pages = pages

    def get_paginator(self, _):
        bucket = self

        class Pages:
            def paginate(self, **_):
                yield from bucket.pages()
        return Pages()

    def download_file(self, bucket, key, target):
        Path(target).write_text("{}")

    def get_object(self, **_):
        return {"Body": io.BytesIO(b"{}")}


def test_a_mounted_sources_link_out_of_its_volume_is_refused_before_any_step(fakes):  # noqa: F811
    """The build of a pvc:// source reads it in place: a tokenizer file linking to the pod's
    environment (the build's credentials) or to a file of the image must not be copied into
    the engine cache, which every serving pod mounts."""
    model = Path(fakes["spec"]["model"]["source"])
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to("/proc/self/environ")
    result = _run(fakes, extra_env={"AWS_SECRET_ACCESS_KEY": "SECRET-AWS-KEY-123"})
    assert result.returncode == 2, result.stderr
    assert "tokenizer.json" in result.stderr and "resolves outside" in result.stderr
    assert not (fakes["root"] / "cache" / KEY).exists()
    assert "SECRET-AWS-KEY-123" not in "".join(
        p.read_text(errors="replace") for p in (fakes["root"] / "cache").rglob("*") if p.is_file())


def test_a_link_inside_the_volume_still_serves_a_mounted_source(fakes):  # noqa: F811
    """A Hugging Face cache on a volume links its snapshot's files to blobs beside it."""
    model = Path(fakes["spec"]["model"]["source"])
    blob = model.parent / "blobs" / "tokenizer-blob"
    blob.parent.mkdir()
    (model / "tokenizer.json").rename(blob)
    (model / "tokenizer.json").symlink_to(blob)
    result = _run(fakes)
    assert result.returncode == 0, result.stderr
    copied = fakes["root"] / "cache" / KEY / "tokenizer" / "tokenizer.json"
    assert not copied.is_symlink() and copied.read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("target, said", [
    ("/etc/passwd", "resolves outside"),  # off the volume: refused before it is parsed
    ("/dev/zero", "resolves outside|not a regular file")])
def test_a_mounted_config_is_read_from_inside_and_bounded(tmp_path, target, said):
    model = fake_trtllm.tiny_model(tmp_path / "models" / "tiny")
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(target)
    with pytest.raises(BadSpec, match=said):
        source.read_config(str(model), "main")


def test_a_mounted_config_of_a_nesting_bomb_is_bad_input(tmp_path):
    model = fake_trtllm.tiny_model(tmp_path / "models" / "tiny")
    (model / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadSpec, match="config.json"):
        source.read_config(str(model), "main")


def test_a_download_does_not_write_through_a_linked_model_directory(tmp_path, monkeypatch):
    victim = tmp_path / "cache" / ("cd" * 32) / "tokenizer"
    victim.mkdir(parents=True)
    (victim / "tokenizer.json").write_text("GOOD")
    out = tmp_path / "cache" / ".work" / KEY / "model"
    out.parent.mkdir(parents=True)
    out.symlink_to(victim)
    with pytest.raises(BadSpec, match="link"):
        source.download("s3://bucket/model", "main", out)
    assert (victim / "tokenizer.json").read_text() == "GOOD"


def _entry(tmp_path: Path, ranks: int = 1) -> Path:
    staging = tmp_path / "staging"
    (staging / "engine").mkdir(parents=True)
    (staging / "engine" / "config.json").write_text("{}")
    for rank in range(ranks):
        (staging / "engine" / f"rank{rank}.engine").write_bytes(b"engine-%d" % rank)
    (tmp_path / "cache").mkdir()
    cache.publish(staging, tmp_path / "cache", KEY, None, {}, {}, 1.0)
    return tmp_path / "cache" / KEY


def test_an_engine_file_that_became_a_link_is_damage(tmp_path):
    entry = _entry(tmp_path)
    outside = tmp_path / "outside.engine"
    outside.write_bytes((entry / "engine" / "rank0.engine").read_bytes())
    (entry / "engine" / "rank0.engine").unlink()
    (entry / "engine" / "rank0.engine").symlink_to(outside)
    assert "not a regular file" in cache.damage(entry, digests=True)


def test_a_fifo_in_place_of_an_engine_file_is_damage_not_a_hang(tmp_path):
    entry = _entry(tmp_path)
    (entry / "engine" / "rank0.engine").unlink()
    os.mkfifo(entry / "engine" / "rank0.engine")
    script = ("import sys; from pathlib import Path; from kiln_runtime import cache; "
              f"print(cache.damage(Path({str(entry)!r}), digests=True))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "not a regular file" in result.stdout, result.stderr


def test_an_engine_file_the_manifest_does_not_list_is_damage(tmp_path):
    entry = _entry(tmp_path)
    (entry / "engine" / "rank1.engine").write_bytes(b"tampered")
    assert "rank1.engine" in cache.damage(entry, digests=True)


def test_publish_refuses_a_key_that_is_not_one(tmp_path):
    (tmp_path / "cache" / "victim").mkdir(parents=True)
    (tmp_path / "cache" / "victim" / "precious").write_text("x")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(BadSpec, match="--key"):
        cache.publish(staging, tmp_path / "cache", "../cache/victim", None, {}, {}, 1.0)
    assert (tmp_path / "cache" / "victim" / "precious").exists()


@pytest.mark.parametrize("name", ["tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "bad\n"])
def test_a_served_model_name_that_would_replace_one_of_tritons_models_is_refused(name):
    from kiln_runtime.serve import parse_serve_spec

    raw = {"engineDir": "/cache/" + KEY, "tensorParallel": 1, "pipelineParallel": 1, "kvCacheFreeGpuMemFraction": 0.9,
           "servedModelName": name, "ports": {"http": 8000, "grpc": 8001, "metrics": 8002, "openai": 9000}}
    with pytest.raises(BadSpec, match="servedModelName"):
        parse_serve_spec(json.dumps(raw))


def test_a_bucket_listing_that_never_ends_is_cut():
    def endless():
        page = 0
        while True:
            page += 1
            yield {"Contents": [{"Key": f"model/f{page}-{i}.json", "Size": 1} for i in range(1000)]}

    with pytest.raises(BadSpec, match="more than"):
        source._listing(_Bucket(endless), "s3://bucket/model", "model.source")


def test_the_cache_probe_and_lock_are_not_opened_through_a_planted_link(tmp_path):
    cache_dir = tmp_path / "cache"
    (cache_dir / ".locks").mkdir(parents=True)
    outside = tmp_path / "outside"
    (cache_dir / ".locks" / f"{KEY}.lock").symlink_to(outside)
    with pytest.raises(StepFailed, match="lock"):
        with cache.build_lock(cache_dir / ".locks" / f"{KEY}.lock"):
            pass
    assert not outside.exists()


def test_a_key_with_a_newline_forges_no_log_line(tmp_path, capsys, monkeypatch):
    bucket = _Bucket(lambda: [{"Contents": [{"Key": "model/x\n[4/4] publish: done.json", "Size": 2}]}])
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    with pytest.raises(BadSpec, match="control character"):
        source.download("s3://bucket/model", "main", tmp_path / "model")
    assert "\n[4/4]" not in capsys.readouterr().err


@pytest.mark.parametrize("change", [{"gpuWeightsPercent": float("nan")}, {"gpuWeightsPercent": -5},
                                    {"tensorParallel": 0}, {"pipelineParallel": -3},
                                    {"ports": {"http": 99999999, "grpc": 8001, "metrics": 8002}}])
def test_a_serve_spec_out_of_range_is_refused(change):
    from kiln_runtime.serve import parse_serve_spec

    raw = {"engineDir": "/cache/" + KEY, "tensorParallel": 1, "pipelineParallel": 1, "kvCacheFreeGpuMemFraction": 0.9,
           "ports": {"http": 8000, "grpc": 8001, "metrics": 8002}, **change}
    with pytest.raises(BadSpec):
        parse_serve_spec(json.dumps(raw))


def test_json_bombs_in_the_runtimes_inputs_are_bad_input(tmp_path):
    bomb = "[" * 100_000 + "]" * 100_000
    (tmp_path / "tokenizer_config.json").write_text(bomb)
    assert cache.tokenizer_code(tmp_path) == []
    entry = tmp_path / "cache" / KEY
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text(bomb)
    assert "does not parse" in cache.damage(entry)
    from kiln_runtime.serve import parse_serve_spec
    from kiln_runtime.spec import load_build_spec
    (tmp_path / "spec.json").write_text(bomb)
    with pytest.raises(BadSpec):
        load_build_spec(str(tmp_path / "spec.json"))
    with pytest.raises(BadSpec):
        parse_serve_spec(bomb)


def test_a_worker_that_fails_to_prepare_again_is_not_left_ready(tmp_path):
    """A worker's ready marker says its repository is whole: a restart that fails half-way
    (here, a damaged entry) takes it back before anything else."""
    from kiln_runtime.group import READY_FILE
    from kiln_runtime.serve import parse_serve_spec, prepare

    entry = _entry(tmp_path)
    (entry / "engine" / "rank0.engine").write_bytes(b"tampered")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / READY_FILE).write_text("ready\n")
    spec = parse_serve_spec(json.dumps({"engineDir": str(entry), "tensorParallel": 1, "pipelineParallel": 1,
                                        "kvCacheFreeGpuMemFraction": 0.9}))
    with pytest.raises(BadSpec, match="damaged"):
        prepare(spec, repo, tmp_path / "templates")
    assert not (repo / READY_FILE).exists()


@pytest.mark.parametrize("config", [{"architectures": {"a": 1}}, {"architectures": []},
                                    {"architectures": ["LlamaForCausalLM"], "num_attention_heads": "many"},
                                    {"architectures": ["LlamaForCausalLM"], "num_hidden_layers": float("inf")}])
def test_a_model_config_of_odd_shapes_is_bad_input(fakes, config):  # noqa: F811
    from kiln_runtime.spec import parse_build_spec
    from kiln_runtime.steps import check_model

    with pytest.raises(BadSpec, match="config.json"):
        check_model(parse_build_spec(fakes["spec"]), config)


@pytest.mark.parametrize("source_", ["hf://https://evil.example/x", "hf://a/b/c/d", "hf://"])
def test_a_hub_source_that_is_no_repository_is_bad_input_before_any_fetch(source_, monkeypatch):
    import huggingface_hub

    def fetch(*args, **kwargs):
        raise AssertionError("fetched")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fetch)
    with pytest.raises(BadSpec, match="model.source"):
        source.read_config(source_, "main")


def test_a_key_that_is_also_a_folder_and_a_listing_without_sizes_are_bad_input(tmp_path, monkeypatch):
    bucket = _Bucket(lambda: [{"Contents": [{"Key": "model/a.json"}, {"Key": "model/a.json/b.json"}]}])
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    with pytest.raises(BadSpec, match="a.json"):
        source.download("s3://bucket/model", "main", tmp_path / "model")


def test_a_checkpoint_mapping_that_is_not_an_object_is_a_failed_step(tmp_path):
    from kiln_runtime.checkpoint import set_gpus_per_node

    (tmp_path / "config.json").write_text(json.dumps({"mapping": "tp8"}))
    with pytest.raises(StepFailed, match="mapping"):
        set_gpus_per_node(tmp_path, 8)


def test_a_fifo_in_a_mounted_source_is_refused_not_waited_on(fakes):  # noqa: F811
    model = Path(fakes["spec"]["model"]["source"])
    (model / "tokenizer_config.json").unlink()
    os.mkfifo(model / "tokenizer_config.json")
    result = _run(fakes)  # the runner's own timeout (120 s) fails it if it hangs
    assert result.returncode == 2 and "tokenizer_config.json" in result.stderr, result.stderr
    assert not (fakes["root"] / "cache" / KEY).exists()


def test_a_fifo_manifest_is_damage_not_a_hang(tmp_path):
    entry = _entry(tmp_path)
    (entry / "manifest.json").unlink()
    os.mkfifo(entry / "manifest.json")
    script = ("from pathlib import Path; from kiln_runtime import cache; "
              f"print(cache.damage(Path({str(entry)!r}), digests=True))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert "manifest.json" in result.stdout, result.stderr


def test_the_build_does_not_write_through_a_link_planted_above_its_scratch(fakes):  # noqa: F811
    """Scratch on the cache volume (<cache>/.work/<key>): a link planted there, or at .work."""
    victim = fakes["root"] / "cache" / ("cd" * 32)
    (victim / "checkpoint").mkdir(parents=True)
    (victim / "checkpoint" / "precious").write_text("keep")
    (fakes["root"] / "cache" / ".work").mkdir(parents=True)
    (fakes["root"] / "cache" / ".work" / KEY).symlink_to(victim)
    spec = {**fakes["spec"], "workDir": str(fakes["root"] / "cache" / ".work" / KEY)}
    result = _run(fakes, spec)
    assert result.returncode == 0, result.stderr
    assert (victim / "checkpoint" / "precious").read_text() == "keep"
    assert sorted(p.name for p in victim.iterdir()) == ["checkpoint"]


def test_a_fifo_at_the_lock_is_a_failed_step(tmp_path):
    (tmp_path / ".locks").mkdir()
    os.mkfifo(tmp_path / ".locks" / "k.lock")
    with pytest.raises(StepFailed, match="not a regular file"):
        with cache.build_lock(tmp_path / ".locks" / "k.lock"):
            pass


def test_a_listing_of_empty_pages_for_ever_is_cut():
    def empty():
        while True:
            yield {"Contents": []}

    with pytest.raises(BadSpec, match="more than"):
        source._listing(_Bucket(empty), "s3://bucket/model", "model.source")


def test_a_tokenizer_module_or_edit_the_manifest_does_not_record_is_damage(tmp_path):
    staging = tmp_path / "staging"
    (staging / "engine").mkdir(parents=True)
    (staging / "engine" / "config.json").write_text("{}")
    (staging / "engine" / "rank0.engine").write_bytes(b"engine")
    (staging / "tokenizer").mkdir()
    (staging / "tokenizer" / "tokenizer_config.json").write_text('{"a": 1}')
    (tmp_path / "cache").mkdir()
    cache.publish(staging, tmp_path / "cache", KEY, None, {}, {}, 1.0)
    entry = tmp_path / "cache" / KEY
    assert cache.damage(entry, digests=True) is None
    (entry / "tokenizer" / "tokenizer_config.json").write_text('{"a": 2}')  # the same size
    assert "tokenizer_config.json" in cache.damage(entry, digests=True)
    (entry / "tokenizer" / "tokenizer_config.json").write_text('{"a": 1}')
    (entry / "tokenizer" / "tokenization_evil.py").write_text("import os")
    assert "tokenization_evil.py" in cache.damage(entry, digests=True)


@pytest.mark.parametrize("change", [{"decoupled": "false"}, {"tensorParallel": 1.9}, {"gpusPerNode": True}])
def test_a_serve_spec_of_the_wrong_type_is_refused(change):
    from kiln_runtime.serve import parse_serve_spec

    raw = {"engineDir": "/cache/" + KEY, "tensorParallel": 1, "pipelineParallel": 1, "kvCacheFreeGpuMemFraction": 0.9,
           **change}
    with pytest.raises(BadSpec):
        parse_serve_spec(json.dumps(raw))
