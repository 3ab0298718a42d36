"""Model config resolution for the operator: Kiln's catalog first, then the Hub.

For ``hf://`` sources not in the catalog, just ``config.json`` is fetched with
huggingface_hub and the service's token, and cached per (model, revision). A failure is not
an error: the plan says ``Fits=Unknown`` with the reason.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..api import LLMServiceSpec
from ..planner import ModelConfig, catalog_config, model_config

__all__ = ["ModelResolver"]


class ModelResolver:
    def __init__(self, allow_download: bool = True) -> None:
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._allow_download = allow_download

    async def resolve(self, spec: LLMServiceSpec, token: str | None) -> tuple[ModelConfig | None, str]:
        """(config, reason); config is None when it cannot be had or sized."""
        raw = self._cache.get((spec.model.source, spec.model.revision))
        if raw is None and spec.model.scheme == "hf" and self._allow_download \
                and catalog_config(spec.model.location) is None:
            try:
                raw = await asyncio.to_thread(self._download, spec, token)
            except Exception as error:  # any Hub failure means "unknown", never a crash
                return None, f"could not fetch config.json for {spec.model.source}: {error}"
        try:
            return model_config(spec.model.source, raw)
        except ValueError as error:
            return None, f"malformed config.json: {error}"

    def known(self, spec: LLMServiceSpec) -> ModelConfig | None:
        """The config the catalog or an earlier :meth:`resolve` has for ``spec``'s model,
        without a download (None when neither has one, or it does not size)."""
        try:
            return model_config(spec.model.source, self._cache.get((spec.model.source, spec.model.revision)))[0]
        except ValueError:
            return None

    def _download(self, spec: LLMServiceSpec, token: str | None) -> dict[str, Any]:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(spec.model.location, "config.json", revision=spec.model.revision,
                               token=token)
        with open(path, encoding="utf-8") as handle:
            raw: dict[str, Any] = json.load(handle)
        self._cache[(spec.model.source, spec.model.revision)] = raw
        return raw
