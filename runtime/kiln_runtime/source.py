"""Model sources: hf://org/name, s3://bucket/prefix, or a mounted path (pvc:// in the spec).

``read_config`` fetches only ``config.json`` so a bad spec fails before the weights download;
``download`` fetches what a build needs (weights, config, tokenizer), with progress.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import BadSpec, StepFailed

__all__ = ["read_config", "download", "ALLOW_PATTERNS"]

# What a TensorRT-LLM build and the tokenizer need; never the duplicate .bin/.pth weights.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.tiktoken", "*.txt", "*.py"]


def _hf_repo(source: str) -> str:
    return source.removeprefix("hf://").strip("/")


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def read_config(source: str, revision: str) -> dict[str, Any]:
    """The model's config.json, or BadSpec naming what is wrong (missing token, no such repo)."""
    if source.startswith("/"):
        path = Path(source) / "config.json"
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except OSError:
            raise BadSpec(f"model.source: no config.json in {source}") from None
        except json.JSONDecodeError:
            raise BadSpec(f"model.source: {path} is not valid JSON") from None
    if source.startswith("s3://"):
        return json.loads(_s3_get(source, "config.json"))  # type: ignore[no-any-return]
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
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def download(source: str, revision: str, out: Path) -> Path:
    """Fetch the model into ``out`` (or use a mounted path in place); return the model dir."""
    if source.startswith("/"):
        return Path(source)
    out.mkdir(parents=True, exist_ok=True)
    if source.startswith("s3://"):
        _s3_sync(source, out)
        return out
    from huggingface_hub import snapshot_download

    snapshot_download(_hf_repo(source), revision=revision, token=_token(), local_dir=out,
                      allow_patterns=ALLOW_PATTERNS)
    return out


def _s3_client() -> Any:
    try:
        import boto3
    except ImportError:
        raise BadSpec("model.source: s3:// needs boto3 (pip install 'kiln-operator[s3]')") from None
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def _split_s3(source: str) -> tuple[str, str]:
    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


def _s3_get(source: str, name: str) -> bytes:
    bucket, prefix = _split_s3(source)
    try:
        body = _s3_client().get_object(Bucket=bucket, Key=f"{prefix}/{name}" if prefix else name)
    except Exception as error:  # botocore raises a family of ClientError subclasses
        raise BadSpec(f"model.source: cannot read s3://{bucket}/{prefix}/{name}: {error}") from None
    return body["Body"].read()  # type: ignore[no-any-return]


def _s3_sync(source: str, out: Path) -> None:
    bucket, prefix = _split_s3(source)
    client = _s3_client()
    objects = [o for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/" if prefix else "") for o in page.get("Contents", [])]
    total = sum(o["Size"] for o in objects) or 1
    done = 0
    for obj in objects:
        relative = obj["Key"][len(prefix):].lstrip("/")
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj["Key"], str(target))
        done += obj["Size"]
        print(f"  download {done / total:6.1%} {relative}", file=sys.stderr, flush=True)
