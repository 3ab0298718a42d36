"""Model sources: hf://org/name, s3://bucket/prefix, or a mounted path (pvc:// in the spec).

``read_config`` fetches only ``config.json`` so a bad spec fails before the weights download;
``download`` fetches what a build needs (weights, config, tokenizer), with progress.

Object keys, Hub file names and mounted paths are chosen by whoever controls the bucket, the
repository or the volume: each is checked to land inside the model directory before anything is
written or read (``inside``), because the build runs with the source's credentials in its
environment and the engine cache mounted read-write.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BadSpec, StepFailed
from .safe_io import load_json, open_inside, read_inside

__all__ = ["read_config", "download", "fetch_calibration", "inside", "wanted", "mount_of", "ALLOW_PATTERNS",
           "SAFE_WEIGHTS_INDEX", "CALIBRATION_FORMATS", "MAX_CALIBRATION_BYTES", "MAX_CALIBRATION_FILES"]

# What a TensorRT-LLM build and the tokenizer need; never the duplicate .bin/.pth weights.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.py"]
# Of the .safetensors, only the weights transformers loads: model.safetensors, or the shards
# this index names (transformers' SAFE_WEIGHTS_NAME and SAFE_WEIGHTS_INDEX_NAME). A repository
# may hold the same weights again in another layout: Mistral-7B-v0.3 has a
# consolidated.safetensors beside its shards, which vLLM drops the same way
# (vllm-project/vllm vllm/model_executor/model_loader/weight_utils.py,
# filter_duplicate_safetensors_files). Downloaded too, it doubles the scratch the build Job's
# volume is sized for, and the kubelet evicts the build.
SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
MAX_INDEX_BYTES = 16 * 2**20  # a 405B model's index is about 100 KiB
# A model repository holds tens of files, a sharded 405B one a few hundred: a listing past this
# is not a model, and is not read to its end.
MAX_LISTED_OBJECTS = 100_000
# Of a Hub repository, the files a build downloads: snapshot_download matches every file against
# every allow pattern (huggingface_hub ``src/huggingface_hub/utils/_paths.py``,
# ``filter_repo_objects``), one pattern per file here, so its time grows with their square
# (10,000 about 12 s, 100,000 about 20 minutes).
MAX_HUB_FILES = 10_000


def _short(text: str, limit: int = 80) -> str:
    """A hostile name quoted in a message: one line, at most ``limit`` characters, keeping both
    ends (a path's start says where, its end says which file)."""
    quoted = repr(text)
    half = (limit - 3) // 2
    return quoted if len(quoted) <= limit else quoted[:half] + "..." + quoted[-half:]


def inside(root: Path, relative: str, what: str, field: str = "model.source") -> Path:
    """``root / relative``, or BadSpec when that would land outside ``root``.

    Refuses empty names, NUL bytes, absolute paths, ``..`` segments (also backslash-separated,
    as huggingface_hub does in ``_local_folder._validate_relative_filename``), and names that
    reach outside through a symlink already under ``root``.
    """
    # C0, DEL and C1 controls (NEL, the 8-bit CSI) and the Unicode line and paragraph
    # separators: the download log prints each name as it is.
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in relative.replace("\0", "")):
        raise BadSpec(f"{field}: {what} {_short(relative)} has a control character; refusing to use "
                      "it (rename it in the source)")
    parts = relative.replace("\\", "/").split("/")
    escapes = (not relative or "\0" in relative or PurePosixPath(relative).is_absolute()
               or ".." in parts)
    target = root / relative
    if not escapes:
        base = root.resolve()
        escapes = not target.resolve().is_relative_to(base)
    if escapes:
        place = "the model directory" if field == "model.source" else "the calibration set"
        raise BadSpec(f"{field}: {what} {_short(relative)} resolves outside {place}; refusing "
                      "to use it (remove or rename it in the source)")
    return target


def _hf_repo(source: str) -> str:
    """The Hub repository id of an ``hf://`` source, checked as huggingface_hub checks one
    (``validate_repo_id``: ``[org/]name``, no URL), before any request is made with it."""
    from huggingface_hub.utils import validate_repo_id

    repo = source.removeprefix("hf://").strip("/")
    try:
        validate_repo_id(repo)
    except ValueError as error:  # HFValidationError
        raise BadSpec(f"model.source: {_short(source)} is not hf://org/name "
                      f"({' '.join(str(error).split())[:120]})") from None
    return repo


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def read_config(source: str, revision: str) -> dict[str, Any]:
    """The model's config.json, or BadSpec naming what is wrong (missing token, no such repo)."""
    if source.startswith("/"):
        path = _mounted(source) / "config.json"
        if not os.path.lexists(path):
            raise BadSpec(f"model.source: no config.json in {source}")
        # Opened, then checked: a link may lead off the volume, or to a device that never ends.
        return _config(read_inside(path, mount_of(source), "model.source config.json", MAX_INDEX_BYTES), source)
    if source.startswith("s3://"):
        return _config(_s3_get(source, "config.json"), source)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo = _hf_repo(source)
    try:
        path = hf_hub_download(repo, "config.json", revision=revision, token=_token())
    except GatedRepoError:
        hint = ("the HF_TOKEN given has not been granted access" if _token() else
                "no HF_TOKEN: set spec.model.credentials.secretName to a Secret with key HF_TOKEN")
        raise BadSpec(f"model.source: {repo} is a gated model and {hint}") from None
    except RevisionNotFoundError:
        raise BadSpec(f"model.revision: {revision!r} does not exist in {repo}") from None
    except RepositoryNotFoundError:
        hint = "" if _token() else " (or it is private and no HF_TOKEN is set)"
        raise BadSpec(f"model.source: no Hugging Face model {repo}{hint}") from None
    except HfHubHTTPError as error:
        raise StepFailed("resolve", f"fetching {repo}/config.json: {error}") from None
    with open(path, "rb") as handle:
        data = handle.read(MAX_INDEX_BYTES + 1)
    if len(data) > MAX_INDEX_BYTES:
        raise BadSpec(f"model.source: {repo}/config.json is larger than {MAX_INDEX_BYTES} bytes")
    return _config(data, source)


def _config(data: bytes, source: str) -> dict[str, Any]:
    config = load_json(data, f"model.source: {_short(source)} config.json")
    if not isinstance(config, dict):
        raise BadSpec(f"model.source: {_short(source)} config.json is not a JSON object")
    return config


def mount_of(source: str) -> Path:
    """The volume a mounted source (``/<mount>/<path>``) lives on: what none of its files may
    leave."""
    return Path("/", source.split("/")[1])


def download(source: str, revision: str, out: Path) -> Path:
    """Fetch the model into ``out`` (or use a mounted path in place); return the model dir."""
    if source.startswith("/"):
        return _mounted(source, check_files=True)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        # The scratch may live on the shared cache volume: a link planted there would have the
        # download write into whatever it points to (another engine's entry).
        raise BadSpec(f"model.source: the model directory {_short(str(out))} is a link or a file, not a "
                      "directory of the build's own; refusing to write through it")
    out.mkdir(parents=True, exist_ok=True)
    if source.startswith("s3://"):
        _s3_sync(source, out)
        return out
    _hf_download(_hf_repo(source), revision, out)
    return out


def _mounted(source: str, check_files: bool = False, field: str = "model.source") -> Path:
    """A mounted model directory (``/<mount>/<path>``): the path, and with ``check_files`` every
    entry below it, must resolve inside the mount, so a symlink on the volume cannot hand the
    build another tenant's engine or a file of the build pod."""
    parts = source.split("/")  # "", mount, path...
    if len(parts) < 2 or not parts[1]:
        raise BadSpec(f"{field}: {_short(source)} names no mounted directory")
    mount = Path("/", parts[1])
    relative = "/".join(parts[2:]).strip("/")
    model_dir = inside(mount, relative, "the path", field) if relative else mount
    if check_files and model_dir.is_dir():
        for directory, names, files in os.walk(model_dir):
            for name in names + files:
                relative = os.path.relpath(os.path.join(directory, name), mount)
                inside(mount, relative, "the file", field)
    return model_dir


def wanted(names: list[str], index: bytes | None) -> list[str]:
    """The files of ``names`` a build needs (``ALLOW_PATTERNS``), with only the weights
    transformers loads; ``index`` is the repository's model.safetensors.index.json, if it has
    one. BadSpec when the index is malformed or names a shard the source does not hold."""
    allowed = [name for name in names if any(fnmatch(name, pattern) for pattern in ALLOW_PATTERNS)]
    if index is not None:
        shards = _shards(index)
        missing = sorted(shards - set(names))
        if missing:
            raise BadSpec(f"model.source: {SAFE_WEIGHTS_INDEX} names {_short(missing[0])}, which the "
                          "source does not hold; upload every shard the index names")
    elif SAFE_WEIGHTS in names:
        shards = {SAFE_WEIGHTS}
    else:
        return allowed
    return [name for name in allowed if not name.endswith(".safetensors") or name in shards]


def _shards(index: bytes) -> set[str]:
    if len(index) > MAX_INDEX_BYTES:
        raise BadSpec(f"model.source: {SAFE_WEIGHTS_INDEX} is larger than {MAX_INDEX_BYTES} bytes")
    try:
        weight_map = json.loads(index).get("weight_map")
    except (ValueError, AttributeError, RecursionError):
        weight_map = None
    if not isinstance(weight_map, dict) or not weight_map \
            or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise BadSpec(f"model.source: {SAFE_WEIGHTS_INDEX} has no weight_map of tensor names to "
                      "shard files")
    return set(weight_map.values())


def _hub_listing(api: Any, repo: str, revision: str, limit: int = MAX_LISTED_OBJECTS) -> list[str]:
    """The file names of ``repo``, cut past ``limit`` entries as a bucket's listing is.
    ``HfApi.list_repo_files`` reads the whole paginated tree into a list before returning
    (huggingface/huggingface_hub ``src/huggingface_hub/hf_api.py``, ``list_repo_files``: the
    paths of the ``RepoFile`` entries of ``list_repo_tree(..., recursive=True)``), so the tree
    is read here, one entry at a time."""
    from huggingface_hub.hf_api import RepoFile

    names = []
    for listed, item in enumerate(api.list_repo_tree(repo, recursive=True, revision=revision), 1):
        if listed > limit:  # folders count too: a tree of folders alone must end as well
            raise BadSpec(f"model.source: hf://{_short(repo)} holds more than {limit} files and folders")
        if isinstance(item, RepoFile):
            names.append(item.path)
    return names


def _hf_download(repo: str, revision: str, out: Path) -> None:
    """snapshot_download, after checking every file name it would write. Recent huggingface_hub
    releases refuse such names themselves; the runtime image may carry an older one."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    names = _hub_listing(HfApi(token=_token()), repo, revision)
    index = None
    if SAFE_WEIGHTS_INDEX in names:
        inside(out, SAFE_WEIGHTS_INDEX, f"the Hugging Face file in {repo}")
        path = Path(hf_hub_download(repo, SAFE_WEIGHTS_INDEX, revision=revision, token=_token(), local_dir=out))
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise BadSpec(f"model.source: {SAFE_WEIGHTS_INDEX} is larger than {MAX_INDEX_BYTES} bytes")
        index = path.read_bytes()
    files = wanted(names, index)
    if len(files) > MAX_HUB_FILES:
        raise BadSpec(f"model.source: hf://{_short(repo)} has more than {MAX_HUB_FILES} files a build "
                      "would download; a model has a few hundred at most")
    # snapshot_download matches every file of the repository (not only those wanted) against
    # every pattern: 100,000 listed by 10,000 wanted is minutes of it.
    if len(files) * len(names) > MAX_HUB_FILES ** 2:
        raise BadSpec(f"model.source: hf://{_short(repo)} lists {len(names)} files, of which a build would "
                      f"download {len(files)}: too many to match one by one")
    for name in files:
        inside(out, name, f"the Hugging Face file in {repo}")
    try:
        snapshot_download(repo, revision=revision, token=_token(), local_dir=out,
                          allow_patterns=[glob.escape(name) for name in files])
    except ValueError as error:  # huggingface_hub's own file-name check
        raise BadSpec(f"model.source: {repo}: {str(error).splitlines()[0][:200]}") from None


def _s3_client(field: str = "model.source") -> Any:
    try:
        import boto3
    except ImportError:
        raise BadSpec(f"{field}: s3:// needs boto3 (pip install 'kiln-operator[s3]')") from None
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _split_s3(source: str) -> tuple[str, str]:
    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _s3_get(source: str, name: str, limit: int = MAX_INDEX_BYTES) -> bytes:
    """A small object (a config, an index), at most ``limit`` bytes read."""
    bucket, prefix = _split_s3(source)
    try:
        body = _s3_client().get_object(Bucket=bucket, Key=f"{prefix}/{name}" if prefix else name)
    except Exception as error:  # botocore raises a family of ClientError subclasses
        raise BadSpec(f"model.source: cannot read s3://{bucket}/{prefix}/{name}: {error}") from None
    data: bytes = body["Body"].read(limit + 1)
    if len(data) > limit:
        raise BadSpec(f"model.source: s3://{bucket}/{prefix}/{name} is larger than {limit} bytes")
    return data


def _listing(client: Any, source: str, field: str, limit: int = MAX_LISTED_OBJECTS) -> list[dict[str, Any]]:
    """The objects under ``source``'s prefix, each checked to be under it: a listing is the
    store's word, not a fact. Past ``limit`` objects it is not read further."""
    bucket, prefix = _split_s3(source)
    start = f"{prefix}/" if prefix else ""
    objects: list[dict[str, Any]] = []
    for pages, page in enumerate(client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start), 1):
        objects += page.get("Contents", [])
        # Pages hold up to 1,000 objects each; a store may send empty ones for ever.
        if len(objects) > limit or pages > limit // 100 + 10:
            raise BadSpec(f"{field}: {_short(source)} holds more than {limit} objects")
    for obj in objects:
        if not str(obj["Key"]).startswith(start):
            raise BadSpec(f"{field}: the listing of {_short(source)} names {_short(str(obj['Key']))}, "
                          "outside it")
    return objects


def _s3_sync(source: str, out: Path) -> None:
    bucket, prefix = _split_s3(source)
    client = _s3_client()
    objects = _listing(client, source, "model.source")
    # Check every key before the first download: a build that fails half-way must not have
    # written anything outside ``out`` either.
    keys = {}
    for obj in objects:
        relative = obj["Key"][len(prefix):].lstrip("/")
        if not relative or relative.endswith("/"):
            continue  # a "folder" placeholder some S3 consoles create; nothing to write
        inside(out, relative, f"the S3 object key in s3://{bucket}")
        keys[relative] = obj
    index = _s3_get(source, SAFE_WEIGHTS_INDEX) if SAFE_WEIGHTS_INDEX in keys else None
    targets = [(keys[relative], relative, out / relative) for relative in wanted(list(keys), index)]
    total = sum(int(obj.get("Size") or 0) for obj, _, _ in targets) or 1
    done = 0
    for obj, relative, target in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a key and a "folder" of the same name (a.json, a.json/b.json)
            raise BadSpec(f"model.source: the S3 object key {_short(relative)} cannot be a file beside the "
                          f"others ({error.strerror}); rename it in the bucket") from None
        client.download_file(bucket, obj["Key"], str(target))
        done += int(obj.get("Size") or 0)
        print(f"  download {done / total:6.1%} {relative}", file=sys.stderr, flush=True)


# What datasets.load_dataset reads from a directory without a loading script (its packaged
# builders, by extension: datasets/packaged_modules/__init__.py, _EXTENSION_TO_MODULE), of
# which Kiln takes the plain-text formats whose rows name their columns, and .txt, whose builder
# names its one column "text" (not .parquet, whose pages are compressed: a bound on the set's
# bytes would not bound what datasets unpacks). quantize.py reads a directory's train split and
# its "text" column (get_calib_dataloader in tensorrt_llm/quantization/quantize_by_modelopt.py).
# Kiln copies the files flat as train-00000<ext>, ...: a name with a split keyword
# ("test.jsonl") would put a file in another split (datasets/data_files.py,
# KEYWORDS_IN_FILENAME_BASE_PATTERNS), and "train-" puts every file in the train split.
CALIBRATION_FORMATS = (".jsonl", ".json", ".csv", ".txt")
# 512 rows is what quantize.py reads: a set of more than this is a mistake, not a larger sample.
MAX_CALIBRATION_BYTES = 256 * 2**20
MAX_CALIBRATION_FILES = 10_000
# datasets opens a file through fsspec with compression inferred from its first bytes as well as
# its name: a compressed file would unpack past any bound on what was copied. gzip, bzip2, xz,
# zstd, lz4, zip, 7z.
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18",
               b"PK\x03\x04", b"7z\xbc\xaf\x27\x1c")
_FIELD = "model.calibration.source"
_CHUNK = 2**20


def fetch_calibration(source: str, out: Path) -> Path:
    """Copy the calibration set (``s3://bucket/prefix`` or a mounted directory) into ``out``,
    a directory of Kiln's own, so quantize.py reads exactly what was checked: the data files
    (other files, a README.md or dotfiles, are left), of one format, every one read from inside
    the source, none compressed, at most :data:`MAX_CALIBRATION_BYTES` in all as copied (not as
    listed), with a ``text`` column where the format names columns. BadSpec names what is
    wrong, and then ``out`` is removed."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        budget = [MAX_CALIBRATION_BYTES]
        if source.startswith("s3://"):
            _calibration_from_s3(source, out, budget)
        else:
            _calibration_from_claim(source, out, budget)
        _check_text_column(out)
    except BadSpec:
        shutil.rmtree(out, ignore_errors=True)
        raise
    except (OSError, RecursionError, ValueError) as error:  # a tree or a row past any sense
        shutil.rmtree(out, ignore_errors=True)
        raise BadSpec(f"{_FIELD}: {_short(source)} cannot be read as a calibration set: "
                      f"{_short(type(error).__name__ + ': ' + str(error), 160)}") from None
    copied = sorted(out.iterdir())
    print(f"  calibration set: {len(copied)} files, "
          f"{sum(p.stat().st_size for p in copied) / 2**20:.1f} MiB", file=sys.stderr, flush=True)
    return out


def _calibration_from_s3(source: str, out: Path, budget: list[int]) -> None:
    bucket, prefix = _split_s3(source)
    client = _s3_client(_FIELD)
    start = f"{prefix}/" if prefix else ""
    try:
        listed = [(str(o["Key"]), int(o["Size"])) for o in _listing(client, source, _FIELD, MAX_CALIBRATION_FILES)]
    except BadSpec:
        raise
    except Exception as error:  # botocore's ClientError family
        raise BadSpec(f"{_FIELD}: cannot list {_short(source)}: {_short(str(error), 200)}") from None
    if len(listed) > MAX_CALIBRATION_FILES:
        raise BadSpec(f"{_FIELD}: {_short(source)} holds more than {MAX_CALIBRATION_FILES} objects")
    chosen = _calibration_files([(key[len(start):], size) for key, size in listed], source, out)
    for relative, name in chosen:
        try:
            body = client.get_object(Bucket=bucket, Key=start + relative)["Body"]
        except Exception as error:  # botocore's ClientError family
            raise BadSpec(f"{_FIELD}: cannot read {_short(relative)}: {_short(str(error), 200)}") from None
        _copy_bounded(body.read, out / name, relative, source, budget)


def _calibration_from_claim(source: str, out: Path, budget: list[int]) -> None:
    root = _mounted(source, field=_FIELD)
    if not root.is_dir():
        raise BadSpec(f"{_FIELD}: {_short(source)} is not a directory on the claim")
    found: list[tuple[str, int]] = []
    for directory, names, files in os.walk(root):  # links to directories are not followed
        names[:] = [n for n in names if not n.startswith(".")]
        for name in files:
            found.append((os.path.relpath(os.path.join(directory, name), root), 0))
            if len(found) > MAX_CALIBRATION_FILES:
                raise BadSpec(f"{_FIELD}: {_short(source)} holds more than {MAX_CALIBRATION_FILES} files")
    base = root.resolve()
    for relative, name in _calibration_files(found, source, out):
        # The file as opened, not as named: whatever a link on the claim points to by now, what
        # is read is checked (its path through /proc/self/fd) and is a regular file.
        try:
            handle = open_inside(root / relative, base, _FIELD)
        except BadSpec:
            raise BadSpec(f"{_FIELD}: the file {_short(relative)} is not a file inside the "
                          "calibration set; refusing to use it (remove or rename it in the source)") from None
        with handle:
            _copy_bounded(handle.read, out / name, relative, source, budget)


def _copy_bounded(read: Any, target: Path, relative: str, source: str, budget: list[int]) -> None:
    """Copy from ``read`` into ``target``, refusing a compressed file and anything past what is
    left of the set's bytes (``budget``, a one-item list)."""
    with target.open("wb") as handle:
        first = True
        while True:
            chunk = read(min(_CHUNK, budget[0] + 1))
            if not chunk:
                return
            if first and chunk.startswith(_COMPRESSED):
                raise BadSpec(f"{_FIELD}: {_short(relative)} is compressed; a calibration set is "
                              f"plain {', '.join(CALIBRATION_FORMATS)} files")
            first = False
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise BadSpec(f"{_FIELD}: {_short(source)} holds more than the "
                              f"{MAX_CALIBRATION_BYTES // 2**20} MiB a calibration set may be "
                              "(quantize.py reads 512 rows)")
            handle.write(chunk)


def _calibration_files(found: list[tuple[str, int]], source: str,
                       out: Path) -> list[tuple[str, str]]:
    """The data files of ``found`` (name relative to the source, listed size), each with the
    name it gets in ``out``; checked whole before the first byte is copied."""
    files = []
    for relative, size in found:
        if not relative or relative.endswith("/"):
            continue  # an S3 console's folder placeholder
        inside(out, relative, "the file", _FIELD)
        if not any(part.startswith(".") for part in relative.split("/")):  # .gitattributes, .cache/
            files.append((relative, size))
    data = [(relative, size) for relative, size in files
            if PurePosixPath(relative).suffix.lower() in CALIBRATION_FORMATS]
    formats = sorted({PurePosixPath(relative).suffix.lower() for relative, _ in data})
    if not data:
        held = sorted({PurePosixPath(r).suffix.lower() or "no extension" for r, _ in files})
        listed = ", ".join(h if re.fullmatch(r"\.?[A-Za-z0-9 ]{1,16}", h) else _short(h, 20)
                           for h in held[:5]) or "nothing"
        raise BadSpec(f"{_FIELD}: {_short(source)} holds no {', '.join(CALIBRATION_FORMATS)} "
                      f"file; it holds {listed}")
    if len(formats) > 1:
        raise BadSpec(f"{_FIELD}: {_short(source)} mixes {' and '.join(formats)} files; "
                      "datasets.load_dataset reads one format per directory")
    if sum(size for _, size in data) > MAX_CALIBRATION_BYTES:  # as listed; the copy counts again
        raise BadSpec(f"{_FIELD}: {_short(source)} holds more than the "
                      f"{MAX_CALIBRATION_BYTES // 2**20} MiB a calibration set may be "
                      "(quantize.py reads 512 rows)")
    data.sort()
    return [(relative, f"train-{index:05d}{formats[0]}") for index, (relative, _) in enumerate(data)]


def _check_text_column(out: Path) -> None:
    """The first row of the first .jsonl, .json or .csv file names a ``text`` column; .txt has
    one by construction."""
    first = min(out.iterdir())
    suffix = first.suffix
    with first.open(encoding="utf-8", errors="replace") as handle:
        head = handle.read(MAX_INDEX_BYTES + 1)
    whole = len(head) <= MAX_INDEX_BYTES
    row: Any = None
    try:
        if suffix == ".csv":
            row = dict.fromkeys(next(csv.reader(io.StringIO(head.split("\n", 1)[0])), []), "")
        elif suffix == ".json" and head.lstrip().startswith("["):
            if not whole:
                return  # one large JSON array: read by datasets alone
            rows = json.loads(head)
            row = rows[0] if isinstance(rows, list) and rows else None
        elif suffix in (".jsonl", ".json"):  # datasets reads a .json file of lines as .jsonl
            row = json.loads(head.split("\n", 1)[0] or "null")
        else:
            return
    except (ValueError, RecursionError, csv.Error):
        row = None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise BadSpec(f"{_FIELD}: the first row of its first {suffix} file has no \"text\" "
                      "column of strings; quantize.py calibrates on a directory's \"text\" column")
