"""``GET /v1/models`` through a Gateway: every served model name the Gateway routes, in one list.

OpenAI's "list models" has no body, so the body-based router sets no model header and no
service's HTTPRoute matches it (render/gateway.py); each service can only list its own. The
list is the Gateway's, not any service's (kubernetes-sigs/gateway-api-inference-extension
#1414 asks the same of the Inference Extension, which has none; AIBrix's gateway serves one).
So, where the platform team names its Gateways (the chart's ``gateway.modelList``):

- the operator keeps one ConfigMap in its own namespace, a key per listed Gateway
  (``<namespace>_<name>.json``, ``_`` being in no namespace or name; ``kiln run
  --model-list-gateway``, the chart's list), holding the OpenAI list of the names it routes:
  the ``status.gatewayClaims`` with a ``routedSince`` of every service it watches
  (controller/claims.py), so a name waiting for its route or refused (``ModelNameInUse``) is
  not listed;
- ``kiln model-list`` serves ``GET /v1/models`` from that ConfigMap, mounted as files: the
  list of the Gateway the ``X-Kiln-Gateway`` header names, which each Gateway's HTTPRoute
  (the chart's) sets, overwriting what a client sent. It holds no ServiceAccount token and
  reads nothing but those files;
- an entry has the shape Triton's OpenAI frontend answers ``GET /v1/models/{name}`` with
  (triton-inference-server/server ``python/openai/openai_frontend/engine/triton_engine.py``,
  ``models``: ``id``, ``created``, ``object: "model"``, ``owned_by: "Triton Inference
  Server"``), ``created`` being when the service's route began to route the name.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kiln_runtime.safe_io import open_regular

from .api.llmservice import GATEWAY_REF_MAX, GATEWAY_REF_PATTERN
from .render.meta import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY

__all__ = ["MODEL_LIST_HEADER", "MAX_LISTED", "MAX_FILE_BYTES", "MAX_DATA_BYTES", "gateway_key", "gateway_lists",
           "list_document", "configmap", "model_list_app"]

# Set by each Gateway's HTTPRoute: a RequestHeaderModifier ``set`` "overwrites the request with
# the given header" (Gateway API apis/v1/httproute_types.go, HTTPHeaderFilter.Set), a client's too.
MODEL_LIST_HEADER = "X-Kiln-Gateway"
# Names listed per Gateway: a ConfigMap holds at most 1 MiB, and an entry is under 150 bytes.
MAX_LISTED = 2000
# The most the server reads of one file (a ConfigMap's whole size).
MAX_FILE_BYTES = 1 << 20
# What the operator writes into the ConfigMap at most, below its 1 MiB with room for metadata.
MAX_DATA_BYTES = 900 * 1024
OWNED_BY = "Triton Inference Server"

logger = logging.getLogger(__name__)


def gateway_key(gateway: str) -> str | None:
    """The ConfigMap key of a Gateway's list; None for what is not ``namespace/name``."""
    if len(gateway) > GATEWAY_REF_MAX or not re.fullmatch(GATEWAY_REF_PATTERN, gateway):
        return None
    namespace, name = gateway.split("/")
    return f"{namespace}_{name}.json"


def _epoch(stamp: str) -> int:
    """Seconds since the epoch of a status timestamp; 0 for one of the right shape that is no
    time (a month 13: the status is writable by whoever may write it)."""
    try:
        return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return 0


def gateway_lists(claims: Iterable[tuple[str, str, str | None]], gateways: Iterable[str],
                  limit: int = MAX_LISTED) -> dict[str, list[dict[str, Any]]]:
    """The list of each of ``gateways`` (the platform team's) from ``(gateway, model,
    routedSince)`` claims: the names routed (a ``routedSince``), once each, with the earliest,
    sorted; at most ``limit`` each. A claim on a Gateway not listed is left out: a tenant names
    any Gateway it likes in ``spec.gateway``."""
    listed = {gateway for gateway in gateways if gateway_key(gateway) is not None}
    since: dict[str, dict[str, str]] = {gateway: {} for gateway in listed}
    for gateway, model, routed_since in claims:
        if routed_since is None or gateway not in listed:
            continue
        names = since[gateway]
        names[model] = min(names.get(model, routed_since), routed_since)
    lists = {}
    for gateway, names in sorted(since.items()):
        if len(names) > limit:
            logger.warning("Gateway %s routes %d model names: listing the first %d", gateway, len(names), limit)
        lists[gateway] = [{"id": model, "object": "model", "created": _epoch(stamp), "owned_by": OWNED_BY}
                          for model, stamp in sorted(names.items())[:limit]]
    return lists


def list_document(entries: list[dict[str, Any]]) -> str:
    return json.dumps({"object": "list", "data": entries}, separators=(",", ":"), sort_keys=True)


def configmap(name: str, namespace: str, lists: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The ConfigMap of every Gateway's list, within :data:`MAX_DATA_BYTES`: past it, each list
    is cut to the same shorter length (a ConfigMap holds at most 1 MiB, and one the API server
    refuses would leave every list stale)."""
    keys = {gateway: key for gateway in lists if (key := gateway_key(gateway)) is not None}
    limit = max((len(entries) for entries in lists.values()), default=0)
    while True:
        data = {keys[gateway]: list_document(entries[:limit]) for gateway, entries in lists.items()
                if gateway in keys}
        if sum(len(key) + len(text) for key, text in data.items()) <= MAX_DATA_BYTES or limit == 0:
            break
        limit //= 2
        logger.warning("the model lists are over %d bytes: listing the first %d names of each", MAX_DATA_BYTES, limit)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {LABEL_NAME: "kiln", LABEL_COMPONENT: "model-list",
                                    LABEL_MANAGED_BY: MANAGED_BY}},
            "data": data}


def _read_list(directory: Path, gateway: str) -> bytes:
    """The list file of ``gateway`` under ``directory``, or an empty list: the key is made from a
    checked ``namespace/name``, never a path from the request, and the read is bounded."""
    empty = list_document([]).encode()
    key = gateway_key(gateway)
    if key is None:
        return empty
    try:  # a regular file only: a FIFO's read would block the server for ever
        with open_regular(directory / key) as file:
            body = file.read(MAX_FILE_BYTES + 1)
    except OSError:  # none for this Gateway (or not a regular file)
        return empty
    if len(body) > MAX_FILE_BYTES:
        logger.warning("%s is over %d bytes: answering an empty list", key, MAX_FILE_BYTES)
        return empty
    try:  # the operator writes it (list_document); anything else is not answered as a list
        document = json.loads(body)
        well_formed = isinstance(document, dict) and document.get("object") == "list" and \
            isinstance(document.get("data"), list) and \
            all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in document["data"])
    except (ValueError, RecursionError):
        well_formed = False
    if not well_formed:
        logger.warning("%s is not a model list: answering an empty list", key)
        return empty
    return body


def model_list_app(directory: Path) -> Any:
    """The aiohttp application of ``kiln model-list``: ``GET /v1/models`` (the list of the
    Gateway :data:`MODEL_LIST_HEADER` names; an empty list for none, or one with nothing
    routed) and ``GET /healthz``."""
    import aiohttp.web

    async def models(request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = _read_list(directory, request.headers.get(MODEL_LIST_HEADER, "")[:400])
        return aiohttp.web.Response(body=body, content_type="application/json")

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    app = aiohttp.web.Application(client_max_size=1024)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    return app
