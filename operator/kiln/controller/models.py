"""Model config resolution for the operator: Kiln's catalog first, then the Hub.

For ``hf://`` sources not in the catalog, just ``config.json`` is fetched with
huggingface_hub and the service's token, and cached per (model, revision, token): a config
one tenant's token could read is not another's whose token cannot (a gated or private
model). Each fetch goes to a temporary directory removed after it, never to huggingface_hub's
shared disk cache, which it would answer a refused request from
(``huggingface_hub/file_download.py``: a 401 or 403 on the HEAD "switch[es] to
'local_files_only=True'") and which sits under the chart's read-only root. The file's size is
read from the HEAD, and the download pinned to the commit the HEAD named, so a file past
``MAX_CONFIG_BYTES`` is never downloaded. A failure is not an error: the plan says
``Fits=Unknown`` with the reason. A failure is remembered too, per (model, revision, token),
for ``FAILED_FETCH_SECONDS``: on a cluster that cannot reach the Hub each fetch takes
huggingface_hub's retries (tens of seconds) in a reconcile slot, and a service whose config
cannot be had would otherwise hold one at every reconcile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..api import LLMServiceSpec
from ..planner import ModelConfig, catalog_config, model_config

__all__ = ["ModelResolver", "MAX_CONFIG_BYTES", "MAX_CACHED_CONFIGS", "REASON_CHARS", "FAILED_FETCH_SECONDS"]

# A config.json is a few KiB (a multimodal one some tens); one past this is not read. The
# file is whatever the repository a tenant names holds.
MAX_CONFIG_BYTES = 1 * 2**20
# Configs kept, the least recently used dropped first: each (source, revision) a tenant names
# is an entry.
MAX_CACHED_CONFIGS = 256
# A reason (the Fits condition's message when the config cannot be had) at most.
REASON_CHARS = 300
# How long a failed fetch is remembered before the Hub is asked again.
FAILED_FETCH_SECONDS = 300.0


class ModelResolver:
    def __init__(self, allow_download: bool = True, clock: Callable[[], float] = time.monotonic,
                 endpoint: str | None = None) -> None:
        self._endpoint = endpoint  # None: huggingface_hub's (HF_ENDPOINT, or the Hub itself)
        # (source, revision, token digest) -> the config.json read with that token.
        self._cache: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        # (source, revision, token digest) -> (when it failed, the reason): bounded like the cache.
        self._failed: OrderedDict[tuple[str, str, str], tuple[float, str]] = OrderedDict()
        self._allow_download = allow_download
        self._clock = clock

    async def resolve(self, spec: LLMServiceSpec, token: str | None) -> tuple[ModelConfig | None, str]:
        """(config, reason); config is None when it cannot be had or sized."""
        attempt = (spec.model.source, spec.model.revision, hashlib.sha256((token or "").encode()).hexdigest()[:16])
        raw = self._cached(spec, attempt)
        if raw is None and spec.model.scheme == "hf" and self._allow_download \
                and catalog_config(spec.model.location) is None:
            failed = self._failed.get(attempt)
            if failed is not None and self._clock() - failed[0] < FAILED_FETCH_SECONDS:
                return None, failed[1]
            try:
                raw = await asyncio.to_thread(self._download, spec, token, attempt)
            except Exception as error:  # any Hub failure means "unknown", never a crash
                why = _reason(f"could not fetch config.json for {spec.model.source} (asked again after "
                              f"{FAILED_FETCH_SECONDS:g} s): {_hub_error(error, token)}")
                self._failed[attempt] = (self._clock(), why)
                self._failed.move_to_end(attempt)
                while len(self._failed) > MAX_CACHED_CONFIGS:
                    self._failed.popitem(last=False)
                return None, why
            self._failed.pop(attempt, None)
        try:
            config, why = model_config(spec.model.source, raw)
        except Exception as error:  # a config it cannot read: "unknown", never a crash
            return None, _reason(f"malformed config.json: {error}")
        return config, _reason(why)

    def known(self, spec: LLMServiceSpec) -> ModelConfig | None:
        """The config the catalog or an earlier :meth:`resolve` has for ``spec``'s model,
        without a download (None when neither has one, or it does not size). With any token:
        the autoscaler asks only for a service whose own resolve planned its engine."""
        try:
            return model_config(spec.model.source, self._cached(spec))[0]
        except Exception:
            return None

    def _cached(self, spec: LLMServiceSpec, key: tuple[str, str, str] | None = None) -> Any:
        """The config read with the token ``key`` names; with no key, read with any."""
        if key is None:
            key = next((k for k in reversed(self._cache) if k[:2] == (spec.model.source, spec.model.revision)),
                       None)
        if key in self._cache:
            self._cache.move_to_end(key)
        return self._cache.get(key)

    def _download(self, spec: LLMServiceSpec, token: str | None, key: tuple[str, str, str]) -> Any:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

        metadata = get_hf_file_metadata(hf_hub_url(spec.model.location, "config.json",
                                                   revision=spec.model.revision, endpoint=self._endpoint),
                                        token=token)
        if metadata.size is None or metadata.size > MAX_CONFIG_BYTES or not metadata.commit_hash:
            raise ValueError(f"it is larger than {MAX_CONFIG_BYTES} bytes" if metadata.size
                             else "the Hub gave no size or commit for it")
        with tempfile.TemporaryDirectory(prefix="kiln-config-") as scratch:
            path = hf_hub_download(spec.model.location, "config.json", revision=metadata.commit_hash,
                                   token=token, endpoint=self._endpoint, cache_dir=scratch)
            if os.path.getsize(path) > MAX_CONFIG_BYTES:
                raise ValueError(f"it is larger than {MAX_CONFIG_BYTES} bytes")
            with open(path, encoding="utf-8") as handle:
                raw = json.load(handle)
        self._cache[key] = raw
        while len(self._cache) > MAX_CACHED_CONFIGS:
            self._cache.popitem(last=False)
        return raw


def _hub_error(error: Exception, token: str | None) -> str:
    """What to do about a Hub refusal, naming the field; anything else as huggingface_hub says it."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, GatedRepoError):  # a subclass of RepositoryNotFoundError: first
        return ("the model is gated and the Hub refused the token in spec.model.credentials: request access "
                "on the model's page with that account" if token else
                "the model is gated: name a Secret whose HF_TOKEN has access in spec.model.credentials")
    if isinstance(error, RepositoryNotFoundError):
        return "no such model on the Hub (spec.model.source), or a private one " + (
            "the token in spec.model.credentials cannot see" if token else
            "that needs a token: name its Secret in spec.model.credentials")
    if isinstance(error, RevisionNotFoundError):
        return "no such branch, tag or commit (spec.model.revision)"
    return " ".join(str(error).split())


def _reason(text: str) -> str:
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."
