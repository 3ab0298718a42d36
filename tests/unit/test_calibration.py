"""A calibration set of the platform team's own (``spec.model.calibration``): what lets fp8, AWQ,
SmoothQuant and NVFP4 builds run without the Hub, and the INT8 KV cache the converter
calibrates on the Hub's cnn_dailymail.

The copy Kiln makes is read here with the real ``datasets.load_dataset``, as quantize.py reads a
local directory (``get_calib_dataloader``: the train split, the ``text`` column).
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from kiln.api import parse_service_spec
from kiln.api.llmservice import CALIBRATED_PRECISIONS
from kiln.errors import SpecInvalid
from kiln.render.engine import build_job, engine_for
from kiln_runtime import source, support
from kiln_runtime.errors import BadSpec
from kiln_runtime.spec import parse_build_spec

from ..conftest import ROOT
from ..support.planning import catalog_model, planned
from ..support.s3 import MemoryBucket
from .test_runtime_build import _calls, _run, fakes  # noqa: F401 (a fixture)

EXAMPLE = yaml.safe_load((ROOT / "examples" / "qwen2.5-7b-fp8-own-calibration.yaml").read_text())
ROWS = [{"text": f"customer question {i}: how do I reset my password?"} for i in range(20)]


@pytest.fixture(autouse=True)
def _datasets_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _load(directory):
    """What quantize.py calibrates on, read as it reads a directory."""
    from datasets import load_dataset

    return load_dataset(str(directory), split="train")["text"]


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _refused(src, tmp_path, match):
    """fetch_calibration refuses ``src`` naming the field, and leaves no copy behind."""
    with pytest.raises(BadSpec, match=match) as raised:
        source.fetch_calibration(str(src), tmp_path / "calibration")
    assert str(raised.value).startswith("model.calibration.source: ")
    assert not (tmp_path / "calibration").exists()
    return str(raised.value)


def test_the_precisions_that_take_a_set_are_the_ones_quantize_py_builds():
    for precision in ("fp16", "bf16", "fp8", "int8-sq", "int4-awq", "w4a8-awq", "int8-wo", "int4-wo", "nvfp4"):
        assert (precision in CALIBRATED_PRECISIONS) == (support.calibrates(precision, "auto") == "quantize")
    assert support.calibrates("bf16", "int8") == "convert"  # on ccdv/cnn_dailymail, from the Hub
    assert support.calibrates("bf16", "fp8") == support.calibrates("fp8", "auto", "fp8-rowwise") == ""


def test_a_mounted_set_is_copied_as_the_train_split_quantize_py_reads(tmp_path):
    claim = tmp_path / "claim" / "support-chats"
    _jsonl(claim / "test.jsonl", ROWS[:10])  # "test" would be datasets' test split, not train
    _jsonl(claim / "2026" / "november.jsonl", ROWS[10:])
    (claim / "README.md").write_text("# support chats\n")
    (claim / ".gitattributes").write_text("*.jsonl filter=lfs\n")
    out = source.fetch_calibration(str(claim), tmp_path / "work" / "calibration")
    assert sorted(p.name for p in out.iterdir()) == ["train-00000.jsonl", "train-00001.jsonl"]
    assert sorted(_load(out)) == sorted(row["text"] for row in ROWS)


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".json"])
def test_every_accepted_format_loads_with_its_text_column(tmp_path, suffix):
    claim = tmp_path / "claim"
    claim.mkdir()
    texts = [row["text"] for row in ROWS]
    if suffix == ".txt":
        (claim / "prompts.txt").write_text("\n".join(texts) + "\n")
    elif suffix == ".csv":
        (claim / "prompts.csv").write_text("id,text\n" + "".join(f"{i},\"{t}\"\n" for i, t in enumerate(texts)))
    else:
        (claim / "prompts.json").write_text(json.dumps(ROWS))
    out = source.fetch_calibration(str(claim), tmp_path / "calibration")
    assert _load(out) == texts


@pytest.mark.parametrize("case, files, message", [
    ("no text column", {"a.jsonl": '{"prompt": "hi"}\n'}, 'has no "text" column'),
    ("text not a string", {"a.jsonl": '{"text": ["hi"]}\n'}, 'has no "text" column'),
    ("csv without text", {"a.csv": "prompt\nhi\n"}, 'has no "text" column'),
    ("two formats", {"a.jsonl": '{"text": "hi"}\n', "b.csv": "text\nhi\n"}, "mixes .csv and .jsonl"),
    ("no data", {"README.md": "nothing here", "data.jsonl.zst": "x"}, "holds no .jsonl"),
    # parquet pages are compressed: its bytes do not bound what datasets unpacks
    ("parquet", {"a.parquet": "PAR1"}, "holds no .jsonl, .json, .csv, .txt file; it holds .parquet"),
    # refused as a name (inside: a control character), and quoted on one line
    ("a name on several lines", {"a.x\nBuild OK: engine published\nfoo": "x"}, "has a control character"),
    ("empty", {}, "it holds nothing"),
])
def test_a_set_quantize_py_cannot_read_is_named_before_any_gpu_work(tmp_path, case, files, message):
    claim = tmp_path / "claim"
    claim.mkdir()
    for name, text in files.items():
        (claim / name).write_text(text)
    with pytest.raises(BadSpec, match=message) as raised:
        source.fetch_calibration(str(claim), tmp_path / "calibration")
    assert str(raised.value).startswith("model.calibration.source: ")
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 400
    assert not (tmp_path / "calibration").exists()


def test_a_set_larger_than_the_bound_is_refused_before_a_byte_is_copied(tmp_path, monkeypatch):
    monkeypatch.setattr(source, "MAX_CALIBRATION_BYTES", 1000)
    claim = tmp_path / "claim"
    _jsonl(claim / "a.jsonl", ROWS * 3)
    _refused(str(claim), tmp_path, "more than the 0 MiB")


def test_a_link_out_of_the_claim_is_refused_and_nothing_is_copied(tmp_path):
    claim = tmp_path / "claim"
    _jsonl(claim / "a.jsonl", ROWS)
    (claim / "b.jsonl").symlink_to("/etc/passwd")  # the claim is mounted under /tmp here
    _refused(str(claim), tmp_path, r"the file 'b.jsonl' is not a file inside the calibration set")


@pytest.mark.parametrize("key", ["sets/a/../../weights/model.jsonl", "sets/a/..\\..\\x.jsonl"])
def test_a_bucket_key_outside_the_prefix_is_refused_and_nothing_is_downloaded(tmp_path, monkeypatch, key):
    objects = {"sets/a/ok.jsonl": b'{"text": "hi"}\n', key: b'{"text": "x"}\n'}
    bucket = MemoryBucket("calib", objects)
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    _refused("s3://calib/sets/a", tmp_path, "model.calibration.source: the file")


def test_a_bucket_set_is_copied_as_its_train_split(tmp_path, monkeypatch):
    objects = {"sets/a/": b"", "sets/a/validation.jsonl": "".join(json.dumps(r) + "\n" for r in ROWS).encode(),
               "sets/a/README.md": b"# prompts", "sets/ab/other.jsonl": b'{"text": "not this set"}\n'}
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": MemoryBucket("calib", objects))
    out = source.fetch_calibration("s3://calib/sets/a", tmp_path / "calibration")
    assert [p.name for p in out.iterdir()] == ["train-00000.jsonl"]
    assert _load(out) == [row["text"] for row in ROWS]


def _render(spec_changes=None, model_changes=None, namespace="llm"):
    raw = json.loads(json.dumps(EXAMPLE["spec"]))
    raw["model"].update(model_changes or {})
    raw.update(spec_changes or {})
    spec = parse_service_spec(raw)
    result, gpu = planned(spec, catalog_model("hf://Qwen/Qwen2.5-7B-Instruct"))
    engine = engine_for(spec, result, gpu, namespace)
    return engine, build_job(engine, "svc", namespace, gpu, "nvidia.com/gpu", 1, None, result.build)


def test_the_set_is_part_of_the_engine_key_only_where_quantize_py_reads_it():
    own, _ = _render()
    other, _ = _render(model_changes={"calibration": {"source": "pvc://calibration-sets/other"}})
    hub, _ = _render(model_changes={"calibration": None})
    assert len({own.key, other.key, hub.key}) == 3
    assert own.spec.calibration_source == "pvc://calibration-sets/support-chats"
    assert hub.spec.calibration_source is None


def test_the_build_job_mounts_a_claim_read_only_and_fetches_nothing_from_the_hub():
    engine, job = _render()
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["calibration-source"]["persistentVolumeClaim"] == {"claimName": "calibration-sets",
                                                                      "readOnly": True}
    container = pod["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["calibration-source"] == {"name": "calibration-source",
                                            "mountPath": "/calibration-source", "readOnly": True}
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_DATASETS_OFFLINE"]["value"] == "1"
    spec = parse_build_spec(json.loads(env["KILN_BUILD_SPEC"]["value"]))
    assert spec.calibration_source == "/calibration-source/support-chats"


def test_a_set_on_the_models_own_claim_is_read_through_its_one_volume():
    _, job = _render(model_changes={"source": "pvc://models/Qwen2.5-7B-Instruct",
                                    "calibration": {"source": "pvc://models/calibration"}})
    pod = job["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == ["engine-cache", "model-source"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env["KILN_BUILD_SPEC"])["calibration"] == {"source": "/model-source/calibration"}


def test_a_bucket_set_is_read_with_the_services_credentials():
    _, job = _render(model_changes={"credentials": {"secretName": "model-access"},
                                    "calibration": {"source": "s3://calibration/support"}})
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    for key in ("HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "model-access", "key": key}


@pytest.mark.parametrize("changes, message", [
    ({"precision": "bf16"}, "spec.model.calibration: precision bf16 is not calibrated by quantize.py"),
    ({"runtime": {"server": "djl"}}, "spec.model.calibration: needs runtime.server: triton"),
])
def test_a_set_no_build_would_read_is_refused_naming_the_field(changes, message):
    raw = {**json.loads(json.dumps(EXAMPLE["spec"])), **changes}
    with pytest.raises(SpecInvalid, match=message):
        parse_service_spec(raw)


def test_a_build_calibrates_on_the_copied_set(fakes, tmp_path):  # noqa: F811 (the fixture)
    claim = tmp_path / "claim"
    _jsonl(claim / "chats.jsonl", ROWS)
    spec = {**fakes["spec"], "calibration": {"source": str(claim)}}
    result = _run(fakes, spec, {"HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    assert "[1/5] calibration: copy and check the calibration set" in result.stderr
    assert f"calibrating on {len(ROWS)} samples from {tmp_path}/work/calibration" in result.stderr
    assert _calls(fakes) == ["quantize.py", "trtllm-build"]
    manifest = json.loads((tmp_path / "cache" / ("ab" * 32) / "manifest.json").read_text())
    assert manifest["inputs"]["calibration"] == str(claim)


def test_a_refused_set_fails_the_build_at_its_step_with_nothing_published(fakes, tmp_path):  # noqa: F811
    claim = tmp_path / "claim"
    _jsonl(claim / "chats.jsonl", [{"prompt": "no text column"}])
    result = _run(fakes, {**fakes["spec"], "calibration": {"source": str(claim)}})
    assert result.returncode == 2 and "Traceback" not in result.stderr  # bad input, named
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: model.calibration.source: the first row of its first .jsonl file '
                           'has no "text" column'), last
    assert _calls(fakes) == []  # no GPU work
    assert not (tmp_path / "cache" / ("ab" * 32)).exists()


def test_a_set_a_row_wise_build_does_not_read_is_said_and_splits_no_cache():
    manifest = yaml.safe_load((ROOT / "examples" / "llama-3.1-405b-fp8-multinode.yaml").read_text())
    raw = manifest["spec"]
    engines = []
    for calibration in (None, {"source": "pvc://sets/chats"}):
        spec = parse_service_spec({**raw, "model": {**raw["model"], "calibration": calibration}})
        result, gpu = planned(spec)
        engines.append(engine_for(spec, result, gpu, "llm"))
    assert engines[0].key == engines[1].key and engines[1].spec.calibration_source is None
    assert any(note.endswith("so model.calibration is not read") for note in result.notes)


def test_a_link_swapped_after_the_listing_is_caught_as_opened(tmp_path, monkeypatch):
    """The check is on the file as opened (its path through /proc/self/fd), so a link on the
    claim repointed between the listing and the copy reads nothing from outside it."""
    claim = tmp_path / "claim"
    _jsonl(claim / "a.jsonl", ROWS)
    (claim / "b.jsonl").symlink_to(claim / "a.jsonl")  # inside, when listed
    listed = source._calibration_files

    def swap(found, src, out):
        (claim / "b.jsonl").unlink()
        (claim / "b.jsonl").symlink_to("/etc/passwd")  # outside, when copied
        return listed(found, src, out)

    monkeypatch.setattr(source, "_calibration_files", swap)
    _refused(str(claim), tmp_path, "'b.jsonl' is not a file inside the calibration set")


def test_a_pipe_on_the_claim_is_not_read(tmp_path):
    claim = tmp_path / "claim"
    _jsonl(claim / "a.jsonl", ROWS)
    os.mkfifo(claim / "b.jsonl")  # would block an open for reading, and never end
    _refused(str(claim), tmp_path, "'b.jsonl' is not a file inside the calibration set")


@pytest.mark.parametrize("codec", ["bz2", "gzip"])
def test_a_compressed_file_is_refused_whatever_its_name(tmp_path, codec):
    """datasets opens files through fsspec, which unpacks by their first bytes: a few kB of
    bzip2 would be hundreds of MB of rows past the bound."""
    import bz2
    import gzip

    claim = tmp_path / "claim"
    claim.mkdir()
    packed = {"bz2": bz2.compress, "gzip": gzip.compress}[codec](b"calibration row\n" * 100_000)
    (claim / "prompts.txt").write_bytes(packed)
    _refused(str(claim), tmp_path, "'prompts.txt' is compressed")


def test_a_bucket_is_bounded_by_what_it_sends_not_what_it_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(source, "MAX_CALIBRATION_BYTES", 1000)

    class Growing(MemoryBucket):  # the object grew after the listing
        def get_paginator(self, operation):
            pages = super().get_paginator(operation)

            class _Pages:
                def paginate(self, **kwargs):
                    for page in pages.paginate(**kwargs):
                        yield {"Contents": [{**o, "Size": 16} for o in page["Contents"]]}
            return _Pages()

    big = "".join(json.dumps(r) + "\n" for r in ROWS * 50).encode()
    bucket = Growing("calib", {"sets/a/x.jsonl": big})
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    _refused("s3://calib/sets/a", tmp_path, "more than the 0 MiB")


def test_a_listing_that_names_an_object_outside_the_prefix_is_refused(tmp_path, monkeypatch):
    objects = {"sets/a/ok.jsonl": b'{"text": "hi"}\n', "private/other-team/secret.jsonl": b'{"text": "x"}\n'}
    bucket = MemoryBucket("calib", objects, lying="private/other-team/secret.jsonl")
    monkeypatch.setattr(source, "_s3_client", lambda field="model.source": bucket)
    _refused("s3://calib/sets/a", tmp_path, "names 'private/other-team/secret.jsonl', outside it")
