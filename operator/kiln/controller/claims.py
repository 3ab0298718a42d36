"""Who claims a served model name on a Gateway: the ``status.gatewayClaims`` of every
LLMService the operator watches, in a kopf index kept by the LLMService watch.

A Gateway sends a request to the HTTPRoute that matches it; on a tie across routes, to "the
oldest Route based on creation timestamp" (Gateway API ``apis/v1/httproute_types.go``,
``HTTPRouteRule``'s matching precedence). Two services serving one model name on one
Gateway would tie, and the older route would take the other's prompts: a tenant who attaches
first, or whose old service takes another's name, receives them. So one name on one Gateway
is one service's (llm-d's ModelService: the model name is "globally unique ... unless they
target different gateways"): the service whose route has routed it longest keeps it, and
decide stalls any other that asks for it (``ModelNameInUse``, decide/claim.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from ..api import API_VERSION, GROUP, VERSION
from ..api.llmservice import MAX_GATEWAY_CLAIMS, GatewayClaim
from .kube import KubeApi

__all__ = ["CLAIMS_INDEX", "register_claims", "gateway_claims", "claims_of"]

CLAIMS_INDEX = "kiln_cache_gateway_claims"  # cache.py hands every "kiln_cache_" index on


def _recorded(service: Mapping[str, Any]) -> list[GatewayClaim]:
    """The claims a service's status records (none that is not in the claim's shape)."""
    raw = (service.get("status") or {}).get("gatewayClaims")
    found = []
    for item in raw[:MAX_GATEWAY_CLAIMS] if isinstance(raw, list) else []:
        try:
            found.append(GatewayClaim.model_validate(item))
        except ValueError:
            continue
    return found


def claims_of(service: Mapping[str, Any]) -> list[tuple[tuple[str, str], tuple[str, str, str]]]:
    """((gateway, model), (routedSince, namespace, name)) of each name a service's status
    records its route routes."""
    meta = service.get("metadata") or {}
    return [((claim.gateway, claim.model), (claim.routed_since, str(meta.get("namespace")), str(meta.get("name"))))
            for claim in _recorded(service) if claim.routed_since is not None]


def register_claims(registry: kopf.OperatorRegistry, changed: Callable[[str], None],
                    listed: Callable[[str, frozenset[tuple[str, str, str | None]]], None] | None = None) -> None:
    """The index; and ``changed(uid)`` for every other service that claims a name whose claims
    of a service change (a route that routes it now, or no longer; the service deleted), so
    that its next resync tick reconciles it: one of two routes of a name gives way, and a
    service waiting for a name takes it. ``listed(uid, claims)``, if given, hears every
    service's claims as they change (controller/modellist.py)."""
    async def index(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return dict(claims_of(body))

    kopf.index(GROUP, VERSION, "llmservices", id=CLAIMS_INDEX, registry=registry)(index)
    recorded: dict[str, frozenset[tuple[str, str, str | None]]] = {}  # uid -> (gateway, model, routedSince)
    claimants: dict[tuple[str, str], set[str]] = {}  # (gateway, model) -> uids

    async def notice(event: kopf.RawEvent, **_: Any) -> None:
        service = event.get("object") or {}
        uid = str((service.get("metadata") or {}).get("uid") or "")
        if not uid:
            return
        now = frozenset() if event.get("type") == "DELETED" else frozenset(
            (claim.gateway, claim.model, claim.routed_since) for claim in _recorded(service))
        before = recorded.pop(uid, frozenset())
        if now:
            recorded[uid] = now
        if now == before:
            return
        if listed is not None:
            listed(uid, now)
        keys = {(gateway, model) for gateway, model, _ in before | now}
        for key in keys:
            others = claimants.setdefault(key, set())
            others.discard(uid)
            for other in others:
                changed(other)
            if any((gateway, model) == key for gateway, model, _ in now):
                others.add(uid)
            elif not others:
                del claimants[key]

    kopf.on.event(GROUP, VERSION, "llmservices", id="kiln_claims_changed", registry=registry)(notice)


async def gateway_claims(api: KubeApi, gateway: str, model: str, namespace: str,
                         name: str) -> tuple[tuple[str, str, str], ...]:
    """The other services' routed claims of ``model`` on ``gateway``, from the index the reconcile's
    ``api`` carries (controller/cache.py ``CachedKubeApi``), or else from a list of every
    LLMService (a caller outside the operator's handlers, with the rights to list them)."""
    claims = getattr(api, "claims", None)
    if claims is not None:
        found = list(claims.get((gateway, model), ()))
    else:
        found = [holder for service in await api.list(API_VERSION, "LLMService")
                 for key, holder in claims_of(service) if key == (gateway, model)]
    return tuple(sorted(holder for holder in found if holder[1:] != (namespace, name)))
