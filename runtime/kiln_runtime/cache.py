"""The content-addressed engine cache: ``<cache>/<engine-key>/{engine/, tokenizer/, manifest.json}``.

An entry is complete iff its ``manifest.json`` exists and every file it lists is there with its
recorded size: the manifest is written last into the staging directory, which is then renamed
into place (atomic on one filesystem, which is why staging lives on the cache volume). A build
that finds an entry damaged (a file truncated or deleted, a manifest that does not parse)
builds it again; a server about to load one also checks the sha256 the manifest records for
every engine file, and refuses to start on a mismatch (``damage``). A per-key ``flock`` keeps two build Jobs for one key from both
building; the second waits, then finds the entry and reuses it.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import StepFailed

__all__ = ["complete_entry", "damage", "build_lock", "verify_engine", "publish", "MANIFEST",
           "TOKENIZER_FILES"]

MANIFEST = "manifest.json"
TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt")


def _read_manifest(entry: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except FileNotFoundError:
        return None, "it has no manifest.json"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"its manifest.json does not parse ({type(error).__name__})"
    if not isinstance(manifest, dict):
        return None, "its manifest.json is not an object"
    return manifest, ""


def damage(entry: Path, digests: bool = False) -> str | None:
    """What is wrong with the cache entry at ``entry`` (``<cache>/<key>``), or None if whole.

    Whole: the manifest parses and names this key, lists the engine's config.json and at least
    one rank, and every file it lists exists with its recorded size (and, with ``digests``, the
    sha256 of every engine file matches)."""
    manifest, why = _read_manifest(entry)
    if manifest is None:
        return why
    if manifest.get("engineKey") != entry.name:
        return "its manifest.json names another engine key"
    files = manifest.get("files")
    if not isinstance(files, dict) or "engine/config.json" not in files or \
            not any(name.startswith("engine/rank") for name in files):
        return "its manifest.json lists no engine"
    for name, record in sorted(files.items()):
        if not isinstance(record, dict) or ".." in str(name).split("/") or str(name).startswith("/"):
            return f"its manifest.json has a bad entry for {str(name)[:80]!r}"
        path = entry / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != record.get("bytes"):
            return f"{name} has {size} bytes, the manifest records {record.get('bytes')}"
        if digests and name.startswith("engine/") and _sha256(path) != record.get("sha256"):
            return f"{name} does not match the sha256 the manifest records"
    return None


def complete_entry(cache: Path, key: str) -> dict[str, Any] | None:
    """The manifest of a whole cache entry, or None (absent, or damaged: say so and rebuild)."""
    entry = cache / key
    if not entry.exists():
        return None
    why = damage(entry)
    if why is not None:
        print(f"the cache entry {entry} is damaged ({why}): building it again",
              file=sys.stderr, flush=True)
        return None
    return _read_manifest(entry)[0]


@contextlib.contextmanager
def build_lock(path: Path, poll: float = 10.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, logging while another build holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        waited = 0.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waited == 0.0:
                    print(f"another build holds {path}; waiting for it", file=sys.stderr, flush=True)
                time.sleep(poll)
                waited += poll
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def verify_engine(engine_dir: Path, world_size: int) -> dict[str, Any]:
    """config.json, one rank{R}.engine per rank, and a mapping whose world size matches."""
    config_path = engine_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StepFailed("verify", f"{config_path}: {error}") from None
    mapping = (config.get("pretrained_config") or {}).get("mapping") or {}
    recorded = int(mapping.get("world_size") or 0)
    tp, pp = int(mapping.get("tp_size") or 1), int(mapping.get("pp_size") or 1)
    if recorded != world_size or tp * pp != world_size:
        raise StepFailed("verify", f"engine mapping says world_size={recorded} (tp={tp}, pp={pp}), "
                                   f"expected {world_size}")
    missing = [f"rank{r}.engine" for r in range(world_size) if not (engine_dir / f"rank{r}.engine").is_file()]
    if missing:
        raise StepFailed("verify", f"missing {', '.join(missing)} in {engine_dir}")
    return config  # type: ignore[no-any-return]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, cache: Path, key: str, model_dir: Path | None, inputs: dict[str, Any],
            toolchain: dict[str, str], build_seconds: float) -> dict[str, Any]:
    """Copy the tokenizer in, write the manifest last, rename the staging dir into place."""
    if model_dir is not None:
        tokenizer = staging / "tokenizer"
        tokenizer.mkdir(exist_ok=True)
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tokenizer / name)
    files = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        relative = str(path.relative_to(staging))
        files[relative] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {
        "engineKey": key,
        "inputs": inputs,
        "toolchain": toolchain,
        "files": files,
        "engineBytes": sum(f["bytes"] for name, f in files.items() if name.startswith("engine/")),
        "buildSeconds": round(build_seconds, 1),
        "builtAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tmp = staging / f".{MANIFEST}.tmp"
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, staging / MANIFEST)
    _fsync_dir(staging)
    final = cache / key
    if final.exists():  # an incomplete leftover (no manifest) from a crash: replace it
        shutil.rmtree(final)
    os.replace(staging, final)
    _fsync_dir(cache)
    return manifest
