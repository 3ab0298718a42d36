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

import concurrent.futures
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import BadSpec, StepFailed
from .safe_io import MAX_JSON_BYTES, open_inside, open_regular

__all__ = ["complete_entry", "damage", "build_lock", "verify_engine", "publish", "delete_entry",
           "delete_s3_entry", "tokenizer_code", "remote_code", "leader_refuses", "check_writable", "MANIFEST", "TOKENIZER_FILES"]

MANIFEST = "manifest.json"
# A tokenizer_config.json with every added token is a few MiB at most; past this it is not read.
MAX_TOKENIZER_CONFIG_BYTES = 32 * 2**20
TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt")


def check_writable(cache_dir: Path) -> None:
    """StepFailed, saying what to change, when this container cannot write the cache volume.
    The pods run as uid 1000 and count on the pod's ``fsGroup: 1000`` for the volume, which a
    CSI driver applies to a ReadWriteMany volume only with ``fsGroupPolicy: File``: the default,
    ``ReadWriteOnceWithFSType``, applies it only to ReadWriteOnce volumes with an fsType
    (kubernetes-csi docs, "CSI Driver fsGroup Support"), and an NFS export is often root's."""
    locks = cache_dir / ".locks"
    try:
        directory = _open_locks(locks)
        try:
            probe = f".write-test-{os.getpid()}"
            # Created here or not at all: a name planted as a link is not followed.
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                             dir_fd=directory))
            os.unlink(probe, dir_fd=directory)
        finally:
            os.close(directory)
    except _LinkedLocks:
        raise StepFailed("cache", f"{locks} is a link or not a directory; refusing to write through it "
                         "(remove it)") from None
    except PermissionError:
        raise StepFailed("cache", f"the engine cache volume ({cache_dir}) is not writable by uid "
                         f"{os.getuid()}, gid {os.getgid()}: its CSI driver did not apply the pod's "
                         "fsGroup (fsGroupPolicy File applies it to ReadWriteMany volumes); make the "
                         "volume's root directory writable by group 1000") from None
    except OSError as error:  # a read-only volume, a full one, a name taken by something else
        raise StepFailed("cache", f"the engine cache volume ({cache_dir}) cannot be written: "
                         f"{error.strerror}") from None


def tokenizer_code(model_dir: Path) -> list[str]:
    """The Python files a tokenizer loaded with ``trust_remote_code`` needs: the modules its
    ``tokenizer_config.json``'s ``auto_map`` names (THUDM/glm-4-9b-chat:
    ``tokenization_chatglm.ChatGLM4Tokenizer``). Triton's preprocessing and postprocessing
    models load the tokenizer from the cache entry with ``trust_remote_code=True``
    (``triton_backend/all_models/inflight_batcher_llm/preprocessing/1/model.py``), and without
    the module it does not load. A name in another repository (``org/repo--module.Class``)
    or one that is not a plain module name is not copied."""
    try:
        with open_regular(model_dir / "tokenizer_config.json") as handle:
            config = json.loads(handle.read(MAX_TOKENIZER_CONFIG_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return []
    refs = config.get("auto_map", {}).get("AutoTokenizer") if isinstance(config, dict) \
        and isinstance(config.get("auto_map"), dict) else None
    refs = [refs] if isinstance(refs, str) else refs if isinstance(refs, list) else []
    modules = {ref.rpartition(".")[0] for ref in refs if isinstance(ref, str) and "--" not in ref}
    return sorted(f"{module}.py" for module in modules if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", module))


def leader_refuses(code: str) -> str:
    """Why an engine whose tokenizer runs code of its own (:func:`remote_code`) is not served
    across nodes: what the build of such an engine and its leader both say."""
    return (f"the model's tokenizer runs code of its own ({code}), which Triton loads with "
            "trust_remote_code; a multi-node leader holds the token that may exec into its workers "
            "and does not run it: serve this model on one node (gpus <= gpu.perNode)")


def remote_code(model_dir: Path) -> str | None:
    """What in a model's tokenizer files has transformers import the model's own Python when
    loaded with trust_remote_code, as Triton's preprocessing model loads it (an ``auto_map``:
    AutoTokenizer reads tokenizer_config.json's, and AutoConfig config.json's, naming a module
    beside them or ``org/repo--module`` on the Hub), or None."""
    for name in ("tokenizer_config.json", "config.json"):
        try:
            with open_regular(model_dir / name) as handle:
                data = handle.read(MAX_JSON_BYTES + 1)
        except OSError:
            continue
        if len(data) > MAX_JSON_BYTES:
            return f"{name} is too large to be checked for an auto_map"
        try:
            config = json.loads(data)
        except (ValueError, RecursionError):
            continue  # transformers cannot read it either
        if isinstance(config, dict) and config.get("auto_map"):
            return f"{name}'s auto_map"
    return None


def _read_manifest(entry: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        with open_regular(entry / MANIFEST) as handle:
            data = handle.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            return None, f"its manifest.json is larger than {MAX_JSON_BYTES} bytes"
        manifest = json.loads(data)
    except FileNotFoundError:
        return None, "it has no manifest.json"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        return None, f"its manifest.json does not parse ({type(error).__name__})"
    if not isinstance(manifest, dict):
        return None, "its manifest.json is not an object"
    return manifest, ""


def damage(entry: Path, digests: bool = False, ranks: range | None = None) -> str | None:
    """What is wrong with the cache entry at ``entry`` (``<cache>/<key>``), or None if whole.

    Whole: the manifest parses and names this key, lists the engine's config.json and at least
    one rank, and every file it lists exists with its recorded size (and, with ``digests``, the
    sha256 of every engine file matches: of the ``rank{R}.engine`` files, those of ``ranks``
    only, when given, the ones a pod of a multi-node group loads). The digests are read in
    parallel (hashlib releases the GIL): a 405B engine is hundreds of GiB on a shared volume,
    read within the serving pod's startup probe."""
    manifest, why = _read_manifest(entry)
    if manifest is None:
        return why
    if manifest.get("engineKey") != entry.name:
        return "its manifest.json names another engine key"
    files = manifest.get("files")
    if not isinstance(files, dict) or "engine/config.json" not in files or \
            not any(name.startswith("engine/rank") for name in files):
        return "its manifest.json lists no engine"
    base = entry.resolve()
    for name, record in sorted(files.items()):
        if not isinstance(record, dict) or ".." in str(name).split("/") or str(name).startswith("/"):
            return f"its manifest.json has a bad entry for {str(name)[:80]!r}"
        path = entry / name
        try:
            found = path.lstat()
        except OSError:
            return f"{name} is missing"
        # A link (to a file outside the entry with the same bytes) or a FIFO that a digest would
        # wait on for ever: neither is what was published.
        if not stat.S_ISREG(found.st_mode) or not path.parent.resolve().is_relative_to(base):
            return f"{name} is not a regular file of the entry"
        if found.st_size != record.get("bytes"):
            return f"{name} has {found.st_size} bytes, the manifest records {record.get('bytes')}"
    # A file the manifest does not list is not one the build published (a tokenizer module is
    # code the server runs).
    for folder in ("engine", "tokenizer"):
        for path in sorted(p for p in (entry / folder).rglob("*") if not p.is_dir() or p.is_symlink()):
            if str(path.relative_to(entry)) not in files:
                return f"{path.relative_to(entry)} is not in the manifest"
    if not digests:
        return None
    # Every file this pod reads: its ranks' engine files, the engine's config, the tokenizer.
    checked = sorted(name for name in files if name.startswith(("engine/", "tokenizer/")) and _loaded(name, ranks))
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for name, digest in zip(checked, pool.map(lambda name: _sha256(entry / name), checked), strict=True):
            if digest != files[name].get("sha256"):
                return f"{name} does not match the sha256 the manifest records"
    return None


def _loaded(name: str, ranks: range | None) -> bool:
    """Whether a pod loading ``ranks`` (None: every one) reads the engine file ``name``."""
    match = re.fullmatch(r"engine/rank(\d+)\.engine", name)
    return ranks is None or match is None or int(match.group(1)) in ranks


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


class _LinkedLocks(Exception):
    pass


def _open_locks(locks: Path) -> int:
    """The directory of the build locks (``<cache>/.locks``), made if missing and opened as
    itself: a link planted in its place on the shared volume would have every lock and probe
    made wherever it points, outside the cache (as a link at ``.staging`` or ``.work``)."""
    locks.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(locks, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:  # Linux: ELOOP for a link with O_NOFOLLOW (ENOTDIR with O_DIRECTORY on some)
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _LinkedLocks() from None
        raise


@contextlib.contextmanager
def build_lock(path: Path, poll: float = 10.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path``, logging while another build holds it."""
    try:  # never through a link planted in its place (or in its directory's), nor a FIFO
        directory = _open_locks(path.parent)
        try:
            descriptor = os.open(path.name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                                 | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=directory)
        finally:
            os.close(directory)
    except _LinkedLocks:
        raise StepFailed("cache", f"the build lock's directory {path.parent} is a link or not a directory: "
                         "remove it") from None
    except OSError as error:
        raise StepFailed("cache", f"the build lock {path} cannot be opened ({error.strerror}): remove it") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise StepFailed("cache", f"the build lock {path} is not a regular file: remove it")
    with os.fdopen(descriptor, "a+") as handle:
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
        pretrained = config.get("pretrained_config") if isinstance(config, dict) else None
        mapping = (pretrained.get("mapping") if isinstance(pretrained, dict) else None) or {}
        recorded = int(mapping.get("world_size") or 0)
        tp, pp = int(mapping.get("tp_size") or 1), int(mapping.get("pp_size") or 1)
    except (OSError, ValueError, TypeError, AttributeError, RecursionError, OverflowError) as error:
        raise StepFailed("verify", f"{config_path}: {type(error).__name__}: "
                                   f"{' '.join(str(error).split())[:160]}") from None
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
            toolchain: dict[str, str], build_seconds: float, boundary: Path | None = None) -> dict[str, Any]:
    """Copy the tokenizer in, write the manifest last, rename the staging dir into place.
    Each tokenizer file is copied as opened: a regular file inside ``boundary`` (the source's
    volume; default ``model_dir``), whatever a link there points to."""
    _check_key(key)
    if model_dir is not None:
        tokenizer = staging / "tokenizer"
        tokenizer.mkdir(exist_ok=True)
        for name in (*TOKENIZER_FILES, *tokenizer_code(model_dir),
                     *sorted(path.name for path in model_dir.glob("*.tiktoken"))):
            if os.path.lexists(model_dir / name) and not (model_dir / name).is_dir():
                with open_inside(model_dir / name, boundary or model_dir, "model.source") as source, \
                        open(tokenizer / name, "wb") as target:
                    shutil.copyfileobj(source, target)
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


_KEY = re.compile(r"[0-9a-f]{64}")


def _check_key(key: str) -> None:
    if not _KEY.fullmatch(key):
        raise BadSpec(f"--key: {key[:80]!r} is not an engine key (64 lowercase hex digits)")


def delete_entry(root: Path, key: str) -> bool:
    """Remove the cache entry ``<root>/<key>`` and nothing else; False if there is none.

    Refused (BadSpec): a key that is not 64 hex digits, an entry that is a symlink (even to a
    neighbour) or that resolves anywhere but directly under the root. The staging area, the
    locks and every other entry stay. The manifest goes first, so an entry half removed (the
    pod killed mid-way) is never taken for a whole one; the key's build lock is held, so a
    build of the same key waits and then builds it afresh."""
    _check_key(key)
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        raise BadSpec(f"--cache-root: {root} does not exist") from None
    entry = root / key
    if entry.is_symlink():
        raise BadSpec(f"the cache entry {entry} is a symlink; not deleting it")
    if not entry.exists():
        return False
    resolved = entry.resolve()
    if resolved.parent != real_root or not resolved.is_dir():
        raise BadSpec(f"the cache entry {entry} is not a directory directly under {root}; not deleting it")
    with build_lock(real_root / ".locks" / f"{key}.lock", poll=5.0):
        with contextlib.suppress(FileNotFoundError):
            (resolved / MANIFEST).unlink()
        shutil.rmtree(resolved)
    return True


def delete_s3_entry(client: Any, root: str, key: str) -> int:
    """Delete the objects under ``<prefix>/<key>/`` of ``s3://bucket/prefix`` (every page of
    the listing) and no other: a listed object whose key does not start with that prefix is
    refused. The number of objects deleted."""
    _check_key(key)
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not bucket or "/" in bucket:
        raise BadSpec(f"--cache-root: {root[:80]!r} names no bucket")
    entry = f"{prefix}/{key}/" if prefix else f"{key}/"
    deleted = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=entry):
        names = [str(obj.get("Key", "")) for obj in page.get("Contents") or []]
        outside = [name for name in names if not name.startswith(entry)]
        if outside:
            raise BadSpec(f"the listing of s3://{bucket}/{entry} returned {outside[0][:80]!r}, "
                          "outside the entry; not deleting it")
        if names:
            result = client.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": name} for name in names], "Quiet": True})
            errors = (result or {}).get("Errors") or []
            if errors:
                raise StepFailed("delete-entry", f"s3://{bucket}/{errors[0].get('Key', '')[:80]}: "
                                                 f"{errors[0].get('Message', 'not deleted')}")
            deleted += len(names)
    return deleted
