"""A damaged engine-cache entry (a truncated or deleted engine file, a corrupt manifest, bytes
flipped in place) is never reused by a build nor loaded by a server: the build makes it again,
the server refuses to start and says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_runtime_build import _calls, _run, fakes  # noqa: F401 (fakes is a fixture)
from .test_runtime_serving import seal
from ..support.triton_templates import write_templates

KEY = "ab" * 32


def _truncate(entry):
    path = entry / "engine" / "rank1.engine"
    path.write_bytes(path.read_bytes()[:10])


def _delete(entry):
    (entry / "engine" / "rank0.engine").unlink()


def _corrupt_manifest(entry):
    (entry / "manifest.json").write_text('{"engineKey": "' + KEY + '", "files": ')


def _manifest_for_another_key(entry):
    manifest = json.loads((entry / "manifest.json").read_text())
    (entry / "manifest.json").write_text(json.dumps({**manifest, "engineKey": "cd" * 32}))


@pytest.mark.parametrize("damage", [_truncate, _delete, _corrupt_manifest, _manifest_for_another_key],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_build_rebuilds_a_damaged_entry_instead_of_reusing_it(fakes, damage):  # noqa: F811
    assert _run(fakes).returncode == 0
    entry = fakes["root"] / "cache" / KEY
    damage(entry)

    again = _run(fakes)
    assert again.returncode == 0, again.stderr
    assert "reusing" not in again.stderr
    assert f"the cache entry {entry} is damaged (" in again.stderr
    assert _calls(fakes).count("trtllm-build") == 2, "built again"
    manifest = json.loads((entry / "manifest.json").read_text())
    for name, record in manifest["files"].items():
        assert (entry / name).stat().st_size == record["bytes"], name
    assert json.loads((fakes["root"] / "termination-log").read_text())["result"] == "built"


def _serve(tmp_path, entry):
    fake = tmp_path / "tritonserver"
    fake.write_text(f"#!{sys.executable}\nprint('started', flush=True)\n")
    fake.chmod(0o755)
    env = {**os.environ, "KILN_TRITONSERVER": str(fake), "KILN_KV_CAPACITY_FILE": str(tmp_path / "kv.json"),
           "KILN_SERVE_SPEC": json.dumps({"engineDir": str(entry), "tensorParallel": 1, "pipelineParallel": 1,
                                          "kvCacheFreeGpuMemFraction": 0.9})}
    return subprocess.run([sys.executable, "-m", "kiln_runtime", "serve", "--model-repo", str(tmp_path / "repo"),
                           "--templates", str(write_templates(tmp_path / "templates"))],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def entry(tmp_path):
    entry = tmp_path / "cache" / KEY
    (entry / "engine").mkdir(parents=True)
    (entry / "tokenizer").mkdir()
    (entry / "engine" / "config.json").write_text(json.dumps({"build_config": {"max_batch_size": 4}}))
    (entry / "engine" / "rank0.engine").write_bytes(b"\x01" * 4096)
    seal(entry)
    return entry


def test_a_whole_entry_serves(tmp_path, entry):
    result = _serve(tmp_path, entry)
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize("damage, why", [
    (lambda e: (e / "engine" / "rank0.engine").write_bytes(b"\x01" * 4095 + b"\x02"),
     "engine/rank0.engine does not match the sha256 the manifest records"),
    (lambda e: (e / "engine" / "rank0.engine").write_bytes(b"\x01" * 100),
     "engine/rank0.engine has 100 bytes, the manifest records 4096"),
    (lambda e: (e / "engine" / "rank0.engine").unlink(), "engine/rank0.engine is missing"),
    (lambda e: (e / "manifest.json").write_text("{not json"), "its manifest.json does not parse (JSONDecodeError)"),
    (lambda e: (e / "manifest.json").write_text(json.dumps({"engineKey": KEY})),
     "its manifest.json lists no engine"),
], ids=["flipped-byte", "truncated", "deleted", "corrupt-manifest", "manifest-without-files"])
def test_a_server_refuses_a_damaged_entry_before_starting(tmp_path, entry, damage, why):
    damage(entry)
    result = _serve(tmp_path, entry)
    assert result.returncode == 2
    assert "started" not in result.stdout, "tritonserver was started on a damaged engine"
    [line] = result.stderr.strip().splitlines()
    assert line == (f"error: engineDir: the cache entry {entry} is damaged: {why}; delete it (and its "
                    "LLMEngine) so that the next build makes it again"), line


def test_a_pod_of_a_group_checks_the_digests_of_the_ranks_it_loads(tmp_path):
    """A 405B engine is hundreds of GiB: each pod of a multi-node group hashes its own ranks'
    files (pod i runs ranks i*slots .. (i+1)*slots - 1), every file's size still checked."""
    from kiln_runtime.cache import damage
    from kiln_runtime.group import Group, worker_index

    entry = tmp_path / "cache" / KEY
    (entry / "engine").mkdir(parents=True)
    (entry / "engine" / "config.json").write_text("{}")
    for rank in range(4):
        (entry / "engine" / f"rank{rank}.engine").write_bytes(bytes([rank]) * 4096)
    seal(entry)
    (entry / "engine" / "rank3.engine").write_bytes(b"\x09" * 4096)  # the second pod's, same size
    assert damage(entry, digests=True, ranks=range(0, 2)) is None
    assert damage(entry, digests=True, ranks=range(2, 4)) == \
        "engine/rank3.engine does not match the sha256 the manifest records"
    assert damage(entry, digests=True) == "engine/rank3.engine does not match the sha256 the manifest records"
    (entry / "engine" / "rank2.engine").write_bytes(b"\x02" * 10)
    assert damage(entry, digests=True, ranks=range(0, 2)) == "engine/rank2.engine has 10 bytes, the manifest records 4096"

    group = Group("lead.sub.ns", size=2, slots=2)
    for value, index in (("1", 1), ("0", 0), ("2", None), ("-1", None), ("x", None), ("", None)):
        os.environ["LWS_WORKER_INDEX"] = value
        try:
            assert worker_index(group) == index, value
        finally:
            del os.environ["LWS_WORKER_INDEX"]
