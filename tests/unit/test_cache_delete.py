"""kiln-runtime delete-entry: one engine's cache entry goes, nothing else does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kiln_runtime import cache, cli, source

from ..support.s3 import MemoryBucket

KEY, NEIGHBOUR = "ab" * 32, "cd" * 32


def _entry(root: Path, key: str) -> Path:
    (root / key / "engine").mkdir(parents=True)
    (root / key / "engine" / "rank0.engine").write_bytes(b"engine")
    (root / key / cache.MANIFEST).write_text(json.dumps({"engineKey": key}))
    return root / key


def _cache(tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    _entry(root, KEY)
    _entry(root, NEIGHBOUR)
    (root / ".staging" / KEY).mkdir(parents=True)
    (root / ".staging" / KEY / "partial").write_text("x")
    return root


def test_exactly_one_entry_is_removed_and_neighbours_and_staging_stay(tmp_path, capsys):
    root = _cache(tmp_path)
    assert cli.main(["delete-entry", "--cache-root", str(root), "--key", KEY]) == 0
    assert json.loads(capsys.readouterr().out) == {"engineKey": KEY, "deleted": True}
    assert not (root / KEY).exists()
    assert (root / NEIGHBOUR / "engine" / "rank0.engine").read_bytes() == b"engine"
    assert (root / ".staging" / KEY / "partial").read_text() == "x"
    assert sorted(p.name for p in root.iterdir()) == [".locks", ".staging", NEIGHBOUR]
    # Again: nothing there, nothing done.
    assert cli.main(["delete-entry", "--cache-root", str(root), "--key", KEY]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] is False


@pytest.mark.parametrize("key", [
    "../" + NEIGHBOUR, ".staging", "", "AB" * 32, "ab" * 31, "ab" * 33, KEY + "/", KEY + "\n",
    "/" + KEY, KEY[:-2] + "..",
])
def test_a_hostile_key_is_refused_in_one_line_and_nothing_is_removed(tmp_path, capsys, key):
    root = _cache(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert cli.main(["delete-entry", "--cache-root", str(root), "--key", key]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --key: ") and err.count("\n") == 1
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_symlinked_entry_is_refused_whether_it_points_out_of_the_cache_or_at_a_neighbour(tmp_path, capsys):
    root = _cache(tmp_path)
    outside = _entry(tmp_path / "elsewhere", KEY)
    for target in (outside, root / NEIGHBOUR):
        if (root / KEY).is_symlink():
            (root / KEY).unlink()
        else:
            import shutil
            shutil.rmtree(root / KEY)
        os.symlink(target, root / KEY)
        assert cli.main(["delete-entry", "--cache-root", str(root), "--key", KEY]) == 2
        err = capsys.readouterr().err
        assert err == f"error: the cache entry {root / KEY} is a symlink; not deleting it\n"
        assert (target / "engine" / "rank0.engine").read_bytes() == b"engine"
        assert (root / KEY).is_symlink()


def test_an_entry_under_a_symlinked_root_is_removed_only_inside_it(tmp_path, capsys):
    real = _cache(tmp_path)
    link = tmp_path / "link"
    os.symlink(real, link)
    assert cli.main(["delete-entry", "--cache-root", str(link), "--key", KEY]) == 0
    assert not (real / KEY).exists() and (real / NEIGHBOUR).is_dir()


def test_a_missing_cache_root_is_refused(tmp_path, capsys):
    assert cli.main(["delete-entry", "--cache-root", str(tmp_path / "none"), "--key", KEY]) == 2
    assert capsys.readouterr().err == f"error: --cache-root: {tmp_path / 'none'} does not exist\n"


def _objects() -> dict[str, bytes]:
    return {f"engines/{KEY}/engine/rank{r}.engine": b"e" for r in range(4)} | {
        f"engines/{KEY}/manifest.json": b"{}",
        f"engines/{KEY}x/manifest.json": b"{}",          # shares the key as a string prefix
        f"engines/{NEIGHBOUR}/manifest.json": b"{}",
        f"engines/.staging/{KEY}/engine/rank0.engine": b"e",
        f"other/{KEY}/manifest.json": b"{}",
    }


def test_s3_deletes_every_page_under_the_prefix_and_key_and_nothing_else(monkeypatch, capsys):
    bucket = MemoryBucket("cache", _objects(), page=2)
    monkeypatch.setattr(source, "_s3_client", lambda: bucket)
    assert cli.main(["delete-entry", "--cache-root", "s3://cache/engines/", "--key", KEY]) == 0
    assert json.loads(capsys.readouterr().out) == {"engineKey": KEY, "deletedObjects": 5}
    assert bucket.pages == 3
    assert sorted(bucket.objects) == sorted(k for k in _objects() if not k.startswith(f"engines/{KEY}/"))


def test_s3_refuses_a_listed_key_outside_the_entry_and_deletes_nothing_of_that_page(monkeypatch, capsys):
    bucket = MemoryBucket("cache", _objects(), page=10, lying=f"engines/{NEIGHBOUR}/manifest.json")
    monkeypatch.setattr(source, "_s3_client", lambda: bucket)
    assert cli.main(["delete-entry", "--cache-root", "s3://cache/engines", "--key", KEY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the listing of s3://cache/engines/{KEY}/ returned ") and err.count("\n") == 1
    assert bucket.objects == _objects()


def test_s3_refuses_a_hostile_key_before_listing(monkeypatch, capsys):
    bucket = MemoryBucket("cache", _objects(), page=2)
    monkeypatch.setattr(source, "_s3_client", lambda: bucket)
    assert cli.main(["delete-entry", "--cache-root", "s3://cache/engines", "--key", ""]) == 2
    assert bucket.pages == 0 and bucket.objects == _objects()
